"""Item- and genre-level bias of recommendations: DivRatio, ORRatio, MGU@K, DGU@K.

Source for all four: Gao et al., "SPRec: Self-Play to Debias LLM-based
Recommendation" (WWW 2025) and its evaluation script; MGU/DGU come from
Jiang et al., "Item-side Fairness of Large Language Model-based
Recommendation System" (IFairLRS, WWW 2024).

How SPRec computes them (and what we do by default):

* DivRatio@K = (# distinct items over all users' top-K lists) /
  (# recommendations). SPRec's denominator is n_users * K; we count filled
  (non -1) slots, the same number when no slot is empty.
* ORRatio@K = (slots filled by the 3 most recommended items) / (# recommendations).
* MGU@K / DGU@K are computed at the **population** level: the genre
  distribution of the pooled histories of all evaluated users, gh, against
  the genre distribution of the pooled top-K recommendations, gp. Each
  occurrence of an item adds its genre mass (history duplicates count
  again); items without a genre add nothing. With d_g = gp_g - gh_g:
  MGU = mean_g |d_g| and DGU = max_g d_g - min_g d_g (SPRec takes max - min of
  the *signed* differences; ``differences="absolute"`` gives
  max_g |d_g| - min_g |d_g| instead). Both: **lower is better** (0 = the
  recommendations reproduce the history's genre mix).
* Genre mass per item: ``genre_weighting="split"`` gives each of an item's
  n genres 1/n (SPRec's evaluation script); ``"multi_hot"`` gives each genre
  1 (IFairLRS counts a multi-genre item once per genre). The mass is
  normalised to a distribution over genres in both cases.
* ``level="user"`` computes gh and gp per user instead, returning per-user
  values (nan for a user whose history or list has no genre mass; the mean
  skips them). This is not SPRec's number; it is provided for analysis.

History input: an int matrix (n_users, L) padded with -1, or a ragged pair
``(indptr, items)`` in CSR layout.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np
import scipy.sparse as sp

from fcpo.metrics._validation import (
    EMPTY,
    Reduce,
    as_id_matrix,
    as_ragged,
    check_reduce,
    ragged_rows,
    reduce_per_user,
)

GenreWeighting = Literal["split", "multi_hot"]
Level = Literal["population", "user"]

__all__ = ["div_ratio", "or_ratio", "genre_distribution", "mgu_at_k", "dgu_at_k"]


def div_ratio(recommended, k: Optional[int] = None) -> float:
    """DivRatio@K = distinct recommended items / number of recommendations; higher is better.

    Example: lists [[1, 1], [2, 3], [4, -1]] hold 5 recommendations of 4
    distinct items, DivRatio = 0.8. Empty slots (-1) are not recommendations;
    no recommendation at all gives nan. Source: SPRec (Gao et al., WWW 2025).
    """
    rec = as_id_matrix(recommended, k=k)
    flat = rec[rec != EMPTY]
    if flat.size == 0:
        return math.nan
    return float(np.unique(flat).size / flat.size)


def or_ratio(recommended, k: Optional[int] = None, *, top: int = 3) -> float:
    """ORRatio@K = share of all recommendations taken by the ``top`` (3) most recommended items; lower is better.

    Ties between items do not matter (only the top counts are summed). Fewer
    than ``top`` distinct items gives 1. No recommendation gives nan.
    Source: SPRec (Gao et al., WWW 2025), over-recommendation ratio.
    """
    if isinstance(top, (bool, np.bool_)) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}.")
    rec = as_id_matrix(recommended, k=k)
    flat = rec[rec != EMPTY]
    if flat.size == 0:
        return math.nan
    counts = np.bincount(flat)
    counts = counts[counts > 0]
    if counts.size > top:
        counts = np.partition(counts, counts.size - top)[-top:]
    return float(counts.sum() / flat.size)


def _genre_weights(item_genres, weighting: str) -> np.ndarray:
    g = np.asarray(item_genres)
    if g.ndim != 2:
        raise ValueError(f"item_genres must be a 2-D array (n_items, n_genres), got shape {g.shape}.")
    if g.dtype != np.bool_:
        if g.size and not np.all((g == 0) | (g == 1)):
            raise ValueError("item_genres must be a 0/1 (or boolean) multi-hot matrix (n_items, n_genres).")
    w = g.astype(np.float64)
    if weighting == "split":
        n = w.sum(axis=1, keepdims=True)
        w = np.divide(w, n, out=np.zeros_like(w), where=n > 0)
    elif weighting != "multi_hot":
        raise ValueError(f"genre_weighting must be 'split' or 'multi_hot', got {weighting!r}.")
    return w


def _genre_mass(items, w: np.ndarray, name: str) -> np.ndarray:
    """Per-user genre mass (n_users, n_genres) of an id matrix or a ragged pair.

    Built as (user x item count matrix, sparse) @ (item x genre weights), so
    long histories cost memory proportional to their length only.
    """
    n_items = w.shape[0]
    if isinstance(items, tuple):
        if len(items) != 2:
            raise ValueError(f"{name} as a tuple must be the ragged pair (indptr, items).")
        indptr, flat = as_ragged(*items, name=name)
        if flat.size and flat.max() >= n_items:
            raise ValueError(f"{name} holds item id {flat.max()} but item_genres has {n_items} rows.")
        rows = ragged_rows(indptr)
        n_users = indptr.size - 1
    else:
        mat = as_id_matrix(items, name=name, n_items=n_items)
        rows, cols = np.nonzero(mat != EMPTY)
        flat = mat[rows, cols]
        n_users = mat.shape[0]
    counts = sp.csr_matrix(
        (np.ones(flat.size, dtype=np.float64), (rows, flat)), shape=(n_users, n_items)
    )  # duplicates are summed
    return np.asarray(counts @ w)


def _normalise(mass: np.ndarray) -> np.ndarray:
    tot = mass.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot > 0, mass / np.where(tot > 0, tot, 1.0), np.nan)


def genre_distribution(
    items,
    item_genres,
    *,
    genre_weighting: GenreWeighting = "split",
    level: Level = "population",
) -> np.ndarray:
    """Genre distribution of a set of lists (recommendations or histories).

    ``items``: int matrix (n_users, L) with -1 padding, or ragged ``(indptr, items)``.
    ``level="population"`` pools all users, returning shape (n_genres,);
    ``level="user"`` returns (n_users, n_genres). A distribution with no genre
    mass at all is all-nan.
    """
    w = _genre_weights(item_genres, genre_weighting)
    mass = _genre_mass(items, w, "items")
    if level == "population":
        return _normalise(mass.sum(axis=0))
    if level == "user":
        return _normalise(mass)
    raise ValueError(f"level must be 'population' or 'user', got {level!r}.")


def _differences(recommended, history, item_genres, k, genre_weighting, level):
    if level not in ("population", "user"):
        raise ValueError(f"level must be 'population' or 'user', got {level!r}.")
    w = _genre_weights(item_genres, genre_weighting)
    if w.shape[1] == 0:
        raise ValueError("item_genres has no genre column.")
    rec = as_id_matrix(recommended, k=k, n_items=w.shape[0])
    m_rec = _genre_mass(rec, w, "recommended")
    m_hist = _genre_mass(history, w, "history")
    if level == "population":
        return _normalise(m_rec.sum(axis=0)) - _normalise(m_hist.sum(axis=0))
    if m_rec.shape[0] != m_hist.shape[0]:
        raise ValueError(
            f"level='user' needs one history per recommendation list: got {m_hist.shape[0]} histories "
            f"and {m_rec.shape[0]} lists."
        )
    return _normalise(m_rec) - _normalise(m_hist)


def _finish(vals, level: str, reduce: str):
    check_reduce(reduce)
    if level == "population":
        return float(vals)
    return reduce_per_user(vals, reduce)


def mgu_at_k(
    recommended,
    history,
    item_genres,
    k: Optional[int] = None,
    *,
    genre_weighting: GenreWeighting = "split",
    level: Level = "population",
    reduce: Reduce = "mean",
):
    """MGU@K = mean over genres of |gp_g - gh_g|; **lower is better** (see the module docstring).

    ``recommended``: (n_users, K) ids; ``history``: the same users' histories
    (-1-padded matrix or ragged pair); ``item_genres``: 0/1 matrix
    (n_items, n_genres). Default = SPRec's population-level number with split
    genre mass; nan if either side has no genre mass. ``reduce`` applies only
    to ``level="user"``.
    """
    d = _differences(recommended, history, item_genres, k, genre_weighting, level)
    return _finish(np.abs(d).mean(axis=-1), level, reduce)


def dgu_at_k(
    recommended,
    history,
    item_genres,
    k: Optional[int] = None,
    *,
    genre_weighting: GenreWeighting = "split",
    level: Level = "population",
    differences: Literal["signed", "absolute"] = "signed",
    reduce: Reduce = "mean",
):
    """DGU@K = max_g d_g - min_g d_g with d = gp - gh; **lower is better** (see the module docstring).

    ``differences="signed"`` (default) follows SPRec's evaluation script;
    ``"absolute"`` uses |d_g| (max |d| - min |d|). Inputs as in :func:`mgu_at_k`.
    """
    if differences not in ("signed", "absolute"):
        raise ValueError(f"differences must be 'signed' or 'absolute', got {differences!r}.")
    d = _differences(recommended, history, item_genres, k, genre_weighting, level)
    if differences == "absolute":
        d = np.abs(d)
    return _finish(d.max(axis=-1) - d.min(axis=-1), level, reduce)
