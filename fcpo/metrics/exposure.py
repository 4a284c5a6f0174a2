"""Exposure fairness and popularity bias: Gini variants, popularity rate, coverage, tail share.

Exposure of an item = the number of recommendation slots it fills, summed
over users (a duplicate in one list counts twice; -1 empty slots count for
nothing). Catalogue-level metrics take ``n_items`` so that items never
recommended are included with exposure 0.

Rules shared by the Gini functions: the counts are sorted ascending,
x_(1) <= ... <= x_(n), over the **whole catalogue** (zero-exposure items
included); when no item has any exposure (sum x = 0) the Gini index is
**defined as 0** (perfect equality: everyone has the same, nothing), so
``gini_elliot_complement`` is then 1.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from fcpo.metrics._validation import (
    EMPTY,
    Reduce,
    as_bool_vector,
    as_id_matrix,
    check_n_items,
    reduce_per_user,
)

__all__ = [
    "exposure_counts",
    "gini_fcpo",
    "gini_recbole",
    "gini_elliot_complement",
    "lorenz_curve",
    "popularity_rate",
    "item_coverage",
    "tail_percentage",
]


def exposure_counts(recommended, n_items: int, k: Optional[int] = None) -> np.ndarray:
    """Exposure count of every item: ``np.bincount`` over the slots, ignoring -1.

    Returns an int64 array of length ``n_items`` (items never recommended get 0).
    ``recommended`` may be 1-D (a flat log of recommended ids) or
    (n_users, K); ``k`` truncates a 2-D matrix to its first ``k`` columns.
    """
    n_items = check_n_items(n_items)
    a = np.asarray(recommended)
    if a.ndim == 1:
        a = a[:, None]
    rec = as_id_matrix(a, k=k, n_items=n_items)
    flat = rec[rec != EMPTY]
    return np.bincount(flat, minlength=n_items).astype(np.int64)


def _as_counts(counts) -> np.ndarray:
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(
            f"counts must be a non-empty 1-D array over the whole item catalogue, got shape {x.shape}. "
            "Build it with exposure_counts(recommended, n_items)."
        )
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("counts must be finite and non-negative.")
    return x


def _gini_sorted_sum(x: np.ndarray) -> Tuple[float, float]:
    """(sum_i (2i - n - 1) x_(i), sum_i x_i) with i = 1..n over ascending x."""
    n = x.size
    s = np.sort(x)
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2 * i - n - 1, s)), float(s.sum())


def gini_fcpo(counts) -> float:
    """Gini index of item exposure as in FCPO; **lower is better** (0 = equal exposure).

    G = sum_{i=1..n} (2i - n - 1) x_(i) / (n sum_i x_i), x ascending over all n
    items of the catalogue (pass zeros for never-exposed items). This equals
    the mean-absolute-difference form of FCPO's Eq. (23),
    G = sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)), and lies in [0, 1 - 1/n].
    All-zero counts give G = 0 (documented rule).

    Source: Ge et al., "Towards Long-term Fairness in Recommendation",
    WSDM 2021, Eq. (23).
    """
    x = _as_counts(counts)
    num, tot = _gini_sorted_sum(x)
    if tot == 0:
        return 0.0
    return num / (x.size * tot)


def gini_recbole(recommended, n_items: int, k: Optional[int] = None) -> float:
    """RecBole's ``GiniIndex@K``; **lower is better**.

    Counts how often each item fills a slot of the top-``k`` lists, places the
    ``n_items - m`` never-recommended items at the bottom with count 0, and
    returns sum_i (2i - n - 1) c_(i) / (n * total) with total = number of
    filled slots. This is numerically :func:`gini_fcpo` of
    ``exposure_counts(recommended, n_items, k)``; it exists so that reports can
    name the convention they match. Note RecBole's ``data.num_items`` counts
    its padding id 0, so to reproduce a RecBole number pass RecBole's
    ``dataset.item_num`` as ``n_items``. No filled slot: 0 (RecBole divides by
    zero there).

    Source: RecBole ``recbole/evaluator/metrics.py``, ``GiniIndex.get_gini``
    (Zhao et al., CIKM 2021).
    """
    return gini_fcpo(exposure_counts(recommended, n_items, k))


def gini_elliot_complement(recommended, n_items: int, k: Optional[int] = None) -> float:
    """Elliot's ``Gini`` metric, i.e. 1 - Gini with an n - 1 normalisation; **higher is better**.

    Elliot returns 1 - sum_{j=1..n} (2j - n - 1) p(i_j) / (n - 1), with
    p(i) = slots filled by item i / total filled slots (top-``k`` per user),
    items ordered by increasing p and never-recommended items included with
    p = 0 (Elliot adds the offset ``num_items - n_recommended_items``).
    Since this is 1 - n/(n-1) * gini_fcpo, it lies in [0, 1], with 1 = equal
    exposure and 0 = one item takes every slot. No filled slot: 1 (Elliot's
    empty sum gives the same). Requires ``n_items >= 2``.

    Source: Elliot ``elliot/evaluation/metrics/diversity/gini_index/gini_index.py``
    (Anelli et al., "Elliot", SIGIR 2021).
    """
    n_items = check_n_items(n_items, minimum=2)
    x = exposure_counts(recommended, n_items, k).astype(np.float64)
    num, tot = _gini_sorted_sum(x)
    if tot == 0:
        return 1.0
    return 1.0 - num / (tot * (n_items - 1))


def lorenz_curve(counts) -> Tuple[np.ndarray, np.ndarray]:
    """Lorenz curve of exposure counts, for plots; returns ``(x, y)`` of length n + 1.

    x_i = i / n and y_i = (sum of the i smallest counts) / (sum of all counts),
    both starting at 0 and ending at 1. All-zero counts give the equality line
    y = x (consistent with Gini = 0). The area relation
    Gini = 1 - 2 * trapezoid(y, x) holds exactly for :func:`gini_fcpo`.
    """
    c = _as_counts(counts)
    n = c.size
    s = np.sort(c)
    x = np.arange(n + 1, dtype=np.float64) / n
    tot = s.sum()
    if tot == 0:
        return x, x.copy()
    y = np.concatenate(([0.0], np.cumsum(s) / tot))
    y[-1] = 1.0
    return x, y


def _share_of_slots(rec: np.ndarray, member: np.ndarray, reduce: str):
    filled = rec != EMPTY
    safe = np.where(filled, rec, 0)
    inside = member[safe] & filled
    n_filled = filled.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = np.where(n_filled > 0, inside.sum(axis=1) / np.maximum(n_filled, 1), np.nan)
    return reduce_per_user(vals, reduce)


def popularity_rate(recommended, is_popular, k: Optional[int] = None, *, reduce: Reduce = "mean"):
    """Share of recommended slots filled by popular (G0) items; **lower is fairer**.

    Per user: (# filled top-``k`` slots whose item is popular) / (# filled
    slots); ``reduce="mean"`` averages over users with at least one filled slot
    (users with none are nan under ``reduce="none"``). With equally long lists
    this is the pooled share of all slots. ``is_popular`` is a boolean array
    over the catalogue (FCPO: G0 = top 20 % of items by exposure in the data).

    Source: Ge et al., "Towards Long-term Fairness in Recommendation",
    WSDM 2021 (popularity rate).
    """
    pop = as_bool_vector(is_popular, None, "is_popular")
    rec = as_id_matrix(recommended, k=k, n_items=pop.size)
    return _share_of_slots(rec, pop, reduce)


def tail_percentage(
    recommended,
    is_popular=None,
    *,
    is_tail=None,
    k: Optional[int] = None,
    reduce: Reduce = "mean",
):
    """Share of recommended slots filled by long-tail items; **higher means less popularity bias**.

    Tail items are ``is_tail`` when given, otherwise ``~is_popular``. Per-user
    share of filled top-``k`` slots, averaged over users with a filled slot
    (RecBole's ``TailPercentage`` averages per-user shares the same way; its
    own tail set is the least-interacted ``tail_ratio`` of items, which you can
    pass as ``is_tail``).

    Source: RecBole ``TailPercentage`` (Zhao et al., CIKM 2021).
    """
    if (is_popular is None) == (is_tail is None):
        raise ValueError("Pass exactly one of is_popular (tail = not popular) or is_tail.")
    tail = ~as_bool_vector(is_popular, None, "is_popular") if is_tail is None else as_bool_vector(
        is_tail, None, "is_tail"
    )
    rec = as_id_matrix(recommended, k=k, n_items=tail.size)
    return _share_of_slots(rec, tail, reduce)


def item_coverage(recommended, n_items: int, k: Optional[int] = None) -> float:
    """Item coverage: distinct items in the top-``k`` lists of all users / ``n_items``; higher is better.

    Empty (-1) slots are ignored. Source: RecBole ``ItemCoverage`` (Zhao et
    al., CIKM 2021).
    """
    n_items = check_n_items(n_items)
    counts = exposure_counts(recommended, n_items, k)
    return float(np.count_nonzero(counts)) / n_items
