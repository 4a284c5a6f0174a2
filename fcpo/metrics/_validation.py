"""Input checks and small shared helpers for :mod:`fcpo.metrics` (private).

Every public metric funnels its inputs through these functions so that a bad
input fails early with a message that says what was wrong and how to fix it.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Tuple, Union

import numpy as np

Reduce = Literal["mean", "none"]
Relevance = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]

EMPTY = -1  # id of an empty slot in a recommendation / history matrix


def check_reduce(reduce: str) -> None:
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}.")


def check_n_items(n_items, name: str = "n_items", minimum: int = 1) -> int:
    if isinstance(n_items, (bool, np.bool_)) or not isinstance(n_items, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n_items).__name__}.")
    if n_items < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n_items}.")
    return int(n_items)


def as_id_matrix(
    arr,
    name: str = "recommended",
    k: Optional[int] = None,
    n_items: Optional[int] = None,
) -> np.ndarray:
    """Validate an (n_users, K) integer id matrix; -1 marks an empty slot.

    ``k`` keeps the first ``k`` columns (all of them when ``k`` exceeds the width).
    """
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_users, K) of item ids, got shape {a.shape}. "
            "Use recommended[:, None] for one item per user."
        )
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer item ids (-1 = empty slot), got dtype {a.dtype}.")
    a = a.astype(np.int64, copy=False)
    if k is not None:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int or None, got {k!r}.")
        a = a[:, : int(k)]
    if a.size:
        lo = a.min()
        if lo < EMPTY:
            raise ValueError(f"{name} holds id {lo}; ids must be >= 0, or -1 for an empty slot.")
        if n_items is not None:
            hi = a.max()
            if hi >= n_items:
                raise ValueError(f"{name} holds item id {hi} but n_items={n_items}; ids must be < n_items.")
    return a


def resolve_k(rec: np.ndarray, k: Optional[int]) -> int:
    """The nominal cutoff: ``k`` if given, else the width of the list."""
    return int(rec.shape[1]) if k is None else int(k)


def as_ragged(indptr, items, name: str = "relevant") -> Tuple[np.ndarray, np.ndarray]:
    """Validate a CSR-style ragged pair: user u owns items[indptr[u]:indptr[u+1]]."""
    indptr = np.asarray(indptr)
    items = np.asarray(items)
    if indptr.ndim != 1 or indptr.size < 1:
        raise ValueError(f"{name}: indptr must be a 1-D array of length n_users + 1.")
    if items.ndim != 1:
        raise ValueError(f"{name}: items must be a 1-D array.")
    if indptr.size and not np.issubdtype(indptr.dtype, np.integer):
        raise TypeError(f"{name}: indptr must be integer, got {indptr.dtype}.")
    if items.size and not np.issubdtype(items.dtype, np.integer):
        raise TypeError(f"{name}: items must be integer item ids, got {items.dtype}.")
    indptr = indptr.astype(np.int64, copy=False)
    items = items.astype(np.int64, copy=False)
    if indptr[0] != 0 or indptr[-1] != items.size or np.any(np.diff(indptr) < 0):
        raise ValueError(
            f"{name}: indptr must start at 0, be non-decreasing and end at len(items)={items.size} "
            f"(got indptr[0]={indptr[0]}, indptr[-1]={indptr[-1]})."
        )
    if items.size and items.min() < 0:
        raise ValueError(f"{name}: items must be >= 0 (no -1 padding inside a ragged pair).")
    return indptr, items


def ragged_rows(indptr: np.ndarray) -> np.ndarray:
    """Row index of every element of a ragged pair."""
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def first_occurrence(rec: np.ndarray) -> np.ndarray:
    """Boolean mask, True at the first slot of each distinct non-empty id of each row."""
    if rec.size == 0:
        return np.zeros(rec.shape, dtype=bool)
    order = np.argsort(rec, axis=1, kind="stable")
    s = np.take_along_axis(rec, order, axis=1)
    dup_sorted = np.zeros(s.shape, dtype=bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return ~dup & (rec != EMPTY)


def hits_and_counts(rec: np.ndarray, relevant: Relevance) -> Tuple[np.ndarray, np.ndarray]:
    """(hit mask (n_users, K), number of relevant items per user).

    A slot is a hit when its item is relevant and it is the item's first slot
    in that user's list, so a duplicated relevant item is counted once.
    """
    n_users = rec.shape[0]
    if isinstance(relevant, tuple):
        if len(relevant) != 2:
            raise ValueError("relevant as a tuple must be the ragged pair (indptr, items).")
        indptr, items = as_ragged(*relevant)
        if indptr.size - 1 != n_users:
            raise ValueError(
                f"relevant has {indptr.size - 1} users but recommended has {n_users} rows; "
                "both must describe the same users in the same order."
            )
        rows = ragged_rows(indptr)
        width = int(max(items.max(initial=-1), rec.max(initial=-1)) + 1)
        codes = rows * width + items
        uniq = np.unique(codes)
        if uniq.size != codes.size:
            raise ValueError("relevant: a user lists the same item twice; relevant items must be unique per user.")
        rec_codes = np.arange(n_users, dtype=np.int64)[:, None] * width + rec
        hit = np.isin(rec_codes, uniq) & (rec != EMPTY)
        n_rel = np.diff(indptr)
    else:
        rel = np.asarray(relevant)
        if rel.ndim != 2 or rel.dtype != np.bool_:
            raise TypeError(
                "relevant must be a boolean matrix (n_users, n_items) or a ragged pair (indptr, items); "
                f"got an array of dtype {rel.dtype} and shape {rel.shape}. "
                "Build one with fcpo.metrics.relevance_matrix(indptr, items, n_items)."
            )
        if rel.shape[0] != n_users:
            raise ValueError(
                f"relevant has {rel.shape[0]} rows but recommended has {n_users}; "
                "both must describe the same users in the same order."
            )
        if rec.size and rec.max() >= rel.shape[1]:
            raise ValueError(
                f"recommended holds item id {rec.max()} but relevant has only {rel.shape[1]} item columns."
            )
        safe = np.where(rec == EMPTY, 0, rec)
        hit = rel[np.arange(n_users)[:, None], safe] & (rec != EMPTY)
        n_rel = rel.sum(axis=1)
    hit &= first_occurrence(rec)
    return hit, n_rel.astype(np.int64)


def reduce_per_user(values: np.ndarray, reduce: str):
    """'none' -> the float array (nan = skipped user); 'mean' -> mean over non-nan users.

    The mean over zero users is nan (no warning).
    """
    check_reduce(reduce)
    values = np.asarray(values, dtype=np.float64)
    if reduce == "none":
        return values
    keep = ~np.isnan(values)
    if not keep.any():
        return math.nan
    return float(values[keep].mean())


def as_bool_vector(arr, n: Optional[int], name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D boolean array over the item catalogue, got shape {a.shape}.")
    if a.dtype != np.bool_:
        if np.issubdtype(a.dtype, np.integer) and a.size and np.all((a == 0) | (a == 1)):
            a = a.astype(bool)
        elif a.size == 0:
            a = a.astype(bool)
        else:
            raise TypeError(f"{name} must be boolean (True = member), got dtype {a.dtype}.")
    if n is not None and a.size != n:
        raise ValueError(f"{name} has length {a.size}, expected {n}.")
    return a


def check_strings(seq: Sequence, name: str) -> list:
    out = list(seq)
    for s in out:
        if not isinstance(s, str):
            raise TypeError(f"{name} must hold str, found {type(s).__name__}.")
    return out
