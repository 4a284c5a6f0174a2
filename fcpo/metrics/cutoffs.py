"""Precision, recall, F1, NDCG and hit rate at many cut-offs in one pass.

A rollout of ``L`` steps with slates of ``K`` items is scored at every cut-off
``c_t = t * K`` (t = 1..L).  Calling :func:`~fcpo.metrics.precision_at_k` and
friends once per cut-off recomputes the hit mask (an argsort per row for the
first-occurrence rule) ``L`` times: O(L^2 K) per user.  Here the hit mask is
computed once on the full list and every metric is read off prefix sums over
positions, O(L K) per user:

* ``hits(c)    = sum_{r <= c} hit_r``  (first occurrences of relevant items);
* ``DCG(c)     = sum_{r <= c} hit_r / log2(r + 1)``;
* ``IDCG(c)    = sum_{r <= min(c, |R_u|)} 1 / log2(r + 1)``
  (Järvelin & Kekäläinen, TOIS 2002; RecBole ``NDCG``).

The values equal those of the per-cut-off functions in
:mod:`fcpo.metrics.accuracy` (same conventions: a duplicated relevant item
counts once, at its first slot; -1 slots are misses; precision divides by the
nominal cut-off; ``no_relevant`` and ``reduce`` as there) up to floating-point
summation order (below 1e-12).
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import numpy as np

from fcpo.metrics._validation import Reduce, Relevance, as_id_matrix, check_reduce, hits_and_counts

__all__ = ["ACCURACY_METRICS", "accuracy_at_cutoffs", "accuracy_by_cutoff"]

#: metric names in the order :func:`accuracy_by_cutoff` lists them per cut-off
ACCURACY_METRICS = ("precision", "recall", "f1", "ndcg", "hit_rate")


def _check_cutoffs(cutoffs) -> np.ndarray:
    c = np.asarray(cutoffs)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"cutoffs must be a non-empty 1-D sequence of positive ints, got shape {c.shape}.")
    if c.dtype == np.bool_ or not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"cutoffs must be integers, got dtype {c.dtype}.")
    if c.min() < 1:
        raise ValueError(f"cutoffs must be >= 1, got {int(c.min())}.")
    return c.astype(np.int64)


def _mean_over_users(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean over the kept users (columns) of a (n_cutoffs, n_users) array; nan when none is kept."""
    if not keep.any():
        return np.full(values.shape[0], np.nan)
    return values[:, keep].mean(axis=1)


def accuracy_at_cutoffs(
    recommended,
    relevant: Relevance,
    cutoffs: Sequence[int],
    *,
    reduce: Reduce = "mean",
    no_relevant: Literal["skip", "zero"] = "skip",
    f1_average: Literal["user", "global"] = "user",
) -> dict[str, np.ndarray]:
    """All accuracy metrics of :mod:`fcpo.metrics.accuracy` at each cut-off, from one hit mask.

    Parameters
    ----------
    recommended:
        Int array (n_users, W) of item ids in rank order, -1 = empty slot.
    relevant:
        Boolean matrix (n_users, n_items) or ragged pair ``(indptr, items)``.
    cutoffs:
        Positive ints (any order, repeats allowed); a cut-off beyond ``W``
        counts the missing slots as misses, as ``precision_at_k(..., k)`` does.
    reduce, no_relevant:
        As in :func:`~fcpo.metrics.precision_at_k`.
    f1_average:
        ``"user"`` (mean of per-user F1) or ``"global"`` (F1 of the mean
        precision and recall; ``reduce="mean"`` only), as ``f1_at_k(average=...)``.

    Returns
    -------
    ``{"precision", "recall", "f1", "ndcg", "hit_rate"} -> array``: shape
    ``(n_cutoffs,)`` for ``reduce="mean"``, ``(n_cutoffs, n_users)`` for
    ``reduce="none"`` (nan for skipped users).  Entry ``i`` equals e.g.
    ``precision_at_k(recommended, relevant, cutoffs[i], reduce=..., no_relevant=...)``.
    """
    check_reduce(reduce)
    if no_relevant not in ("skip", "zero"):
        raise ValueError(f"no_relevant must be 'skip' or 'zero', got {no_relevant!r}.")
    if f1_average not in ("user", "global"):
        raise ValueError(f"f1_average must be 'user' or 'global', got {f1_average!r}.")
    if f1_average == "global" and reduce != "mean":
        raise ValueError("f1_average='global' is one number per cut-off over users; use reduce='mean'.")
    cut = _check_cutoffs(cutoffs)
    rec = as_id_matrix(recommended)
    hit, n_rel = hits_and_counts(rec, relevant)  # first-occurrence hits over the whole list
    n_users, width = rec.shape
    pos = np.minimum(cut, width)  # number of list columns inside each cut-off

    hitf = hit.astype(np.float64)
    cum_hits = np.zeros((n_users, width + 1), dtype=np.int64)
    np.cumsum(hit, axis=1, out=cum_hits[:, 1:])
    disc = 1.0 / np.log2(np.arange(2, max(width, int(cut.max())) + 2, dtype=np.float64))
    cum_dcg = np.zeros((n_users, width + 1))
    np.cumsum(hitf * disc[:width], axis=1, out=cum_dcg[:, 1:])
    cum_disc = np.concatenate(([0.0], np.cumsum(disc)))

    n_hit = cum_hits[:, pos].T  # (n_cutoffs, n_users)
    kk = cut[:, None]
    precision = n_hit / kk
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = n_hit / n_rel[None, :]
        r_safe = np.where(n_rel > 0, n_hit / np.maximum(n_rel, 1), 0.0)
        f1 = np.where(precision + r_safe > 0,
                      2 * precision * r_safe / np.where(precision + r_safe > 0, precision + r_safe, 1.0), 0.0)
        ndcg = cum_dcg[:, pos].T / cum_disc[np.minimum(n_rel[None, :], kk)]
    hit_rate = (n_hit > 0).astype(np.float64)

    empty = n_rel == 0
    fill = np.nan if no_relevant == "skip" else 0.0
    per_user = {"precision": precision, "recall": recall, "f1": f1, "ndcg": ndcg, "hit_rate": hit_rate}
    for v in per_user.values():
        v[:, empty] = fill
    if reduce == "none":
        return per_user
    keep = ~empty if no_relevant == "skip" else np.ones(n_users, dtype=bool)
    out = {name: _mean_over_users(v, keep) for name, v in per_user.items()}
    if f1_average == "global":
        # F1 of the means (f1_at_k(average="global")): precision already holds ``fill`` for empty users
        pm, rm = _mean_over_users(precision, keep), _mean_over_users(np.where(empty[None, :], fill, r_safe), keep)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["f1"] = np.where(pm + rm == 0, 0.0, 2 * pm * rm / np.where(pm + rm == 0, 1.0, pm + rm))
    return out


def accuracy_by_cutoff(
    recommended,
    relevant: Relevance,
    k: int,
    steps: Optional[int] = None,
    *,
    no_relevant: Literal["skip", "zero"] = "skip",
) -> dict[str, float]:
    """``{"precision@c": mean, "recall@c": ..., "f1@c", "ndcg@c", "hit_rate@c"}`` for ``c = t * k``, t = 1..steps.

    The rollout report of :mod:`fcpo.evaluate`: one float per metric and
    cut-off (mean over users, per-user F1), keys ordered by cut-off then
    metric.  ``steps`` defaults to ``W // k`` for a list of width ``W``.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}.")
    width = np.shape(recommended)[1] if np.ndim(recommended) == 2 else 0
    if steps is None:
        steps = width // int(k)
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int (the list has width {width}, k={k}), got {steps!r}.")
    cut = np.arange(1, int(steps) + 1, dtype=np.int64) * int(k)
    vals = accuracy_at_cutoffs(recommended, relevant, cut, no_relevant=no_relevant)
    out: dict[str, float] = {}
    for i, c in enumerate(cut.tolist()):
        for name in ACCURACY_METRICS:
            out[f"{name}@{c}"] = float(vals[name][i])
    return out
