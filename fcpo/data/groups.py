"""Item popularity groups: G0 = the most exposed ``popular_ratio`` of items, G1 = the rest.

Two groupings share one interface (``is_popular``, ``record``, ``sizes``):

* :class:`StaticGrouping` fixes G0 once from training-period interaction counts
  (what the FCPO authors' code does);
* :class:`DynamicGrouping` is the paper's long-term view (Ge et al. 2021, §3):
  popularity = training counts + the exposure the policy has given so far, and
  G0 is recomputed every ``regroup_every`` recorded steps, so items can enter or
  leave the popular group as the recommender shapes exposure.
"""
from __future__ import annotations

import numpy as np


def popular_mask(counts: np.ndarray, popular_ratio: float) -> np.ndarray:
    """Boolean mask of the top ``round(popular_ratio * n)`` items by count (ties: lower item id first)."""
    counts = np.asarray(counts)
    n = len(counts)
    n_pop = int(round(popular_ratio * n))
    order = np.lexsort((np.arange(n), -counts))
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_pop]] = True
    return mask


def _check_ratio(popular_ratio: float) -> None:
    if not 0.0 < popular_ratio < 1.0:
        raise ValueError(f"popular_ratio must lie strictly between 0 and 1, got {popular_ratio!r}")


class StaticGrouping:
    """G0 fixed from the training counts."""

    kind = "static"

    def __init__(self, train_counts: np.ndarray, popular_ratio: float = 0.2):
        _check_ratio(popular_ratio)
        self.popular_ratio = float(popular_ratio)
        self.train_counts = np.asarray(train_counts, dtype=np.int64)
        self.is_popular = popular_mask(self.train_counts, popular_ratio)
        self.regroups = 0

    def record(self, slates: np.ndarray) -> None:
        """Static groups ignore exposure."""

    def reset(self) -> None:
        """Nothing to forget."""

    def sizes(self) -> tuple[int, int]:
        n0 = int(self.is_popular.sum())
        return n0, len(self.is_popular) - n0


class DynamicGrouping(StaticGrouping):
    """G0 recomputed from training counts + exposure every ``regroup_every`` steps."""

    kind = "dynamic"

    def __init__(self, train_counts: np.ndarray, popular_ratio: float = 0.2, regroup_every: int = 1,
                 exposure_weight: float = 1.0):
        super().__init__(train_counts, popular_ratio)
        if int(regroup_every) < 1:
            raise ValueError(f"regroup_every must be >= 1, got {regroup_every!r}")
        self.regroup_every = int(regroup_every)
        self.exposure_weight = float(exposure_weight)
        self.reset()

    def reset(self) -> None:
        self.exposure = np.zeros_like(self.train_counts, dtype=np.float64)
        self.steps = 0
        self.regroups = 0
        self.is_popular = popular_mask(self.train_counts, self.popular_ratio)

    def popularity(self) -> np.ndarray:
        return self.train_counts + self.exposure_weight * self.exposure

    def record(self, slates: np.ndarray) -> None:
        """Add one step's exposures (any array of item ids; negative ids are ignored)."""
        ids = np.asarray(slates).ravel()
        ids = ids[ids >= 0]
        self.exposure += np.bincount(ids, minlength=len(self.exposure))
        self.steps += 1
        if self.steps % self.regroup_every == 0:
            self.is_popular = popular_mask(self.popularity(), self.popular_ratio)
            self.regroups += 1


def make_grouping(kind: str, train_counts: np.ndarray, popular_ratio: float = 0.2, regroup_every: int = 1):
    if kind == "static":
        return StaticGrouping(train_counts, popular_ratio)
    if kind == "dynamic":
        return DynamicGrouping(train_counts, popular_ratio, regroup_every)
    raise ValueError(f"grouping must be 'static' or 'dynamic', got {kind!r}")
