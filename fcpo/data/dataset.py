"""The one in-memory form of a ratings data set that every part of fcpo reads."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RatingsData:
    """Interactions with dense 0-based ids.

    Arrays ``users``, ``items``, ``ratings`` and ``timestamps`` are parallel (one
    entry per interaction, in file order).  ``user_raw_ids[u]`` / ``item_raw_ids[i]``
    map dense ids back to the ids in the source files: int64 when every source id
    is an integer, else strings (numpy unicode); either way sorted, so dense id
    order is raw id order.

    ``implicit`` marks a log without ratings: every interaction is a positive
    with rating 1.0, and ``positive_threshold`` (1.0 then) is the threshold the
    splits use when none is given.  ``source`` names the file(s) it was read from.
    """

    name: str
    users: np.ndarray  # int64, dense user id per rating
    items: np.ndarray  # int64, dense item id per rating
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64, unix seconds
    user_raw_ids: np.ndarray  # int64 or str [n_users], sorted
    item_raw_ids: np.ndarray  # int64 or str [n_items], sorted
    item_titles: np.ndarray  # object (str) [n_items]
    item_genres: np.ndarray  # bool [n_items, n_genres], multi-label
    genre_names: tuple[str, ...]
    user_attributes: pd.DataFrame = field(repr=False)  # indexed by dense user id
    source: str = ""  # file(s) or generator it came from, for messages
    implicit: bool = False  # True: no ratings in the source, every interaction is a positive (rating 1.0)
    positive_threshold: float | None = None  # the data set's own positive threshold (None: the caller's default)

    def __post_init__(self) -> None:
        n = len(self.users)
        for attr in ("items", "ratings", "timestamps"):
            if len(getattr(self, attr)) != n:
                raise ValueError(f"RatingsData({self.name}): '{attr}' has {len(getattr(self, attr))} entries, users has {n}")
        if self.item_genres.shape != (self.n_items, len(self.genre_names)):
            raise ValueError(
                f"RatingsData({self.name}): item_genres shape {self.item_genres.shape} != ({self.n_items}, {len(self.genre_names)})"
            )

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)

    @property
    def n_ratings(self) -> int:
        return len(self.users)

    def summary(self) -> dict:
        """Counts in the form of the FCPO paper's data table."""
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "ratings": self.n_ratings,
            "ratings_per_user": self.n_ratings / max(self.n_users, 1),
            "ratings_per_item": self.n_ratings / max(self.n_items, 1),
            "density_percent": 100.0 * self.n_ratings / max(self.n_users * self.n_items, 1),
        }


def densify(raw: np.ndarray, universe: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids (integers or strings) to dense 0-based ids; returns (dense ids, sorted raw ids).

    Hash-based (:func:`pandas.factorize`) and then ranked, so it is O(n) in the
    number of interactions plus a sort of the distinct ids.  With ``universe``
    every raw id must belong to it.
    """
    raw = np.asarray(raw)
    if universe is not None:
        keys = np.unique(np.asarray(universe))
        dense = np.searchsorted(keys, raw)
        clipped = np.minimum(dense, max(len(keys) - 1, 0))
        if len(keys) == 0 or np.any(keys[clipped] != raw):
            missing = np.setdiff1d(raw, keys)[:5]
            raise ValueError(f"ids {missing.tolist()} are not in the item/user table")
        return dense.astype(np.int64), _raw_array(keys)
    codes, uniques = pd.factorize(raw, sort=False)
    uniques = _raw_array(np.asarray(uniques))
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order]


def _raw_array(keys: np.ndarray) -> np.ndarray:
    """int64 for integer ids, numpy unicode for anything else."""
    if keys.dtype.kind in "iu":
        return keys.astype(np.int64)
    return keys.astype(str)
