"""Top-K accuracy metrics: precision, recall, F1, NDCG, hit rate, MRR.

All are **higher is better**, take values in [0, 1], and follow the package
conventions (see :mod:`fcpo.metrics`):

* ``recommended``: int array (n_users, K) of item ids in rank order, -1 = empty
  slot; ``k`` keeps the first ``k`` columns (``None``: all of them).
* ``relevant``: boolean matrix (n_users, n_items) or ragged pair
  ``(indptr, items)``; the relevant set of a user is fixed for the call
  (pass the pre-rollout test positives: the set never shrinks as items are hit).
* A relevant item recommended twice counts as one hit (first slot).
* Users with no relevant item: ``no_relevant="skip"`` (default) returns nan
  for them under ``reduce="none"`` and leaves them out of the mean;
  ``no_relevant="zero"`` scores them 0 and keeps them in the mean.
* When ``k`` is larger than the list (or slots are empty) the missing slots
  count as misses: precision divides by ``k``, NDCG's ideal list has
  ``min(k, |R_u|)`` hits.

Definitions follow RecBole's ``recbole.evaluator.metrics`` (Zhao et al.,
"RecBole", CIKM 2021) and, for NDCG, Järvelin & Kekäläinen, "Cumulated
gain-based evaluation of IR techniques", TOIS 2002.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np

from fcpo.metrics._validation import (
    Reduce,
    Relevance,
    as_id_matrix,
    as_ragged,
    check_n_items,
    check_reduce,
    hits_and_counts,
    ragged_rows,
    reduce_per_user,
    resolve_k,
)

NoRelevant = Literal["skip", "zero"]

__all__ = [
    "relevance_matrix",
    "precision_at_k",
    "recall_at_k",
    "f1_at_k",
    "ndcg_at_k",
    "hit_rate_at_k",
    "mrr",
]


def relevance_matrix(indptr, items, n_items: int) -> np.ndarray:
    """Boolean relevance matrix (n_users, n_items) from a ragged ``(indptr, items)`` pair.

    User ``u``'s relevant items are ``items[indptr[u]:indptr[u + 1]]``
    (the CSR layout of ``scipy.sparse``); ``len(indptr) = n_users + 1``.
    Duplicate items of a user are allowed here and collapse to one ``True``.
    """
    n_items = check_n_items(n_items)
    indptr, items = as_ragged(indptr, items)
    if items.size and items.max() >= n_items:
        raise ValueError(f"items holds id {items.max()} but n_items={n_items}.")
    out = np.zeros((indptr.size - 1, n_items), dtype=bool)
    out[ragged_rows(indptr), items] = True
    return out


def _check_no_relevant(no_relevant: str) -> None:
    if no_relevant not in ("skip", "zero"):
        raise ValueError(f"no_relevant must be 'skip' or 'zero', got {no_relevant!r}.")


def _finish(values: np.ndarray, n_rel: np.ndarray, no_relevant: str, reduce: str):
    _check_no_relevant(no_relevant)
    check_reduce(reduce)
    values = values.astype(np.float64, copy=True)
    empty = n_rel == 0
    values[empty] = np.nan if no_relevant == "skip" else 0.0
    return reduce_per_user(values, reduce)


def _prepare(recommended, relevant, k):
    rec = as_id_matrix(recommended, k=k)
    hit, n_rel = hits_and_counts(rec, relevant)
    return rec, hit, n_rel, resolve_k(rec, k)


def precision_at_k(
    recommended,
    relevant: Relevance,
    k: Optional[int] = None,
    *,
    reduce: Reduce = "mean",
    no_relevant: NoRelevant = "skip",
):
    """Precision@K = |top-K ∩ R_u| / K per user; higher is better.

    The denominator is the nominal ``k`` even when the list is shorter or has
    empty (-1) slots (RecBole's ``Precision``).
    """
    rec, hit, n_rel, kk = _prepare(recommended, relevant, k)
    return _finish(hit.sum(axis=1) / kk, n_rel, no_relevant, reduce)


def recall_at_k(
    recommended,
    relevant: Relevance,
    k: Optional[int] = None,
    *,
    reduce: Reduce = "mean",
    no_relevant: NoRelevant = "skip",
):
    """Recall@K = |top-K ∩ R_u| / |R_u| per user; higher is better.

    ``|R_u|`` is the number of relevant items passed in, fixed for the call.
    The FCPO authors' code removed hit items from the test set during the
    rollout, shrinking the denominator and inflating recall about 2x; pass the
    pre-rollout test positives here to get the standard (RecBole ``Recall``)
    value.
    """
    rec, hit, n_rel, kk = _prepare(recommended, relevant, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = hit.sum(axis=1) / n_rel
    return _finish(vals, n_rel, no_relevant, reduce)


def f1_at_k(
    recommended,
    relevant: Relevance,
    k: Optional[int] = None,
    *,
    average: Literal["user", "global"] = "user",
    reduce: Reduce = "mean",
    no_relevant: NoRelevant = "skip",
):
    """F1@K; higher is better.

    ``average="user"`` (default): F1_u = 2 P_u R_u / (P_u + R_u) per user
    (0 when P_u + R_u = 0), then the mean over users -- the per-user mean of F1.
    ``average="global"``: F1 of the means, 2 P̄ R̄ / (P̄ + R̄), with P̄ and R̄ the
    means of :func:`precision_at_k` and :func:`recall_at_k` over the same users;
    only ``reduce="mean"`` is accepted for it. The two differ in general; the
    harmonic mean is concave, so the per-user mean is never larger than the F1
    of the means. Do not compare numbers computed with different choices.
    """
    if average not in ("user", "global"):
        raise ValueError(f"average must be 'user' or 'global', got {average!r}.")
    check_reduce(reduce)
    _check_no_relevant(no_relevant)
    rec, hit, n_rel, kk = _prepare(recommended, relevant, k)
    n_hit = hit.sum(axis=1)
    p = n_hit / kk
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(n_rel > 0, n_hit / np.maximum(n_rel, 1), 0.0)
    if average == "user":
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
        return _finish(f1, n_rel, no_relevant, reduce)
    if reduce != "mean":
        raise ValueError("f1_at_k(average='global') is one number over users; use reduce='mean'.")
    pm = _finish(p, n_rel, no_relevant, "mean")
    rm = _finish(r, n_rel, no_relevant, "mean")
    if math.isnan(pm) or math.isnan(rm):
        return math.nan
    return 0.0 if pm + rm == 0 else float(2 * pm * rm / (pm + rm))


def ndcg_at_k(
    recommended,
    relevant: Relevance,
    k: Optional[int] = None,
    *,
    reduce: Reduce = "mean",
    no_relevant: NoRelevant = "skip",
):
    """NDCG@K with binary gains; higher is better.

    DCG_u = sum_{r=1..K} hit_r / log2(r + 1);
    IDCG_u = sum_{r=1..min(K, |R_u|)} 1 / log2(r + 1); NDCG_u = DCG_u / IDCG_u.
    ``K`` is the nominal ``k`` (RecBole's ``NDCG``).
    """
    rec, hit, n_rel, kk = _prepare(recommended, relevant, k)
    width = rec.shape[1]
    disc = 1.0 / np.log2(np.arange(2, max(width, kk) + 2, dtype=np.float64))
    dcg = hit.astype(np.float64) @ disc[:width]
    cum = np.concatenate(([0.0], np.cumsum(disc)))
    idcg = cum[np.minimum(n_rel, kk)]
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = dcg / idcg
    return _finish(vals, n_rel, no_relevant, reduce)


def hit_rate_at_k(
    recommended,
    relevant: Relevance,
    k: Optional[int] = None,
    *,
    reduce: Reduce = "mean",
    no_relevant: NoRelevant = "skip",
):
    """HR@K = 1 if any of the top-K items is relevant, else 0, per user; higher is better (RecBole ``Hit``)."""
    rec, hit, n_rel, kk = _prepare(recommended, relevant, k)
    return _finish(hit.any(axis=1).astype(np.float64), n_rel, no_relevant, reduce)


def mrr(
    recommended,
    relevant: Relevance,
    k: Optional[int] = None,
    *,
    reduce: Reduce = "mean",
    no_relevant: NoRelevant = "skip",
):
    """MRR(@K) = 1 / rank of the first relevant item in the top-K (0 if none), per user; higher is better.

    Ranks start at 1 (RecBole ``MRR``). ``k=None`` uses the whole list.
    """
    rec, hit, n_rel, kk = _prepare(recommended, relevant, k)
    any_hit = hit.any(axis=1)
    first = np.argmax(hit, axis=1)
    vals = np.where(any_hit, 1.0 / (first + 1.0), 0.0)
    return _finish(vals, n_rel, no_relevant, reduce)
