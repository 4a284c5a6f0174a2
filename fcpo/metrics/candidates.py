"""HR@1 and ValidRatio for policies that pick one item from a candidate list.

Protocol of S-DPO (Chen et al., "On Softmax Direct Preference Optimization for
Recommendation", NeurIPS 2024; ``evaluate_batch.py`` of its code): each test
sample has a candidate list (e.g. 20 titles) and one target.

* Text policies: the generated text is **valid** when exactly one candidate
  title occurs in it as a substring (case-sensitive; candidates are counted
  as listed, so a title that occurs twice in the list, or a title contained in
  another matched title, makes the answer invalid). It is a **hit** when it is
  valid and the target title occurs in it. Both rates divide by the number of
  samples, invalid ones included.
* Id policies (a candidate index or an item id per sample): the prediction is
  valid when it is one of the sample's candidates (-1 = no answer, invalid);
  HR@1 = share of samples whose prediction equals the target (and is valid
  when ``candidates`` is given).

All four rates are **higher is better**, in [0, 1]. The text functions loop
over samples in Python (string search has no vectorised form); they are not
on a training hot path.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fcpo.metrics._validation import EMPTY, Reduce, check_reduce, check_strings, reduce_per_user

__all__ = ["text_choice", "valid_ratio_text", "hr_at_1_text", "valid_ratio", "hr_at_1"]


def _check_text_inputs(texts, candidate_titles):
    texts = check_strings(texts, "texts")
    cands = [check_strings(c, "candidate_titles[i]") for c in candidate_titles]
    if len(cands) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(cands)} candidate lists; pass one list per text.")
    return texts, cands


def _match_counts(texts, cands) -> np.ndarray:
    return np.array([sum(1 for c in cs if c in t) for t, cs in zip(texts, cands)], dtype=np.int64)


def text_choice(texts: Sequence[str], candidate_titles: Sequence[Sequence[str]]) -> np.ndarray:
    """Index into each candidate list of the one title found in the text, or -1 if not exactly one.

    Follows S-DPO's validity rule (see the module docstring).
    """
    texts, cands = _check_text_inputs(texts, candidate_titles)
    out = np.full(len(texts), EMPTY, dtype=np.int64)
    for i, (t, cs) in enumerate(zip(texts, cands)):
        found = [j for j, c in enumerate(cs) if c in t]
        if len(found) == 1:
            out[i] = found[0]
    return out


def valid_ratio_text(
    texts: Sequence[str], candidate_titles: Sequence[Sequence[str]], *, reduce: Reduce = "mean"
):
    """ValidRatio of text outputs: share with exactly one candidate title in them (S-DPO); higher is better."""
    check_reduce(reduce)
    texts, cands = _check_text_inputs(texts, candidate_titles)
    valid = (_match_counts(texts, cands) == 1).astype(np.float64)
    return reduce_per_user(valid, reduce)


def hr_at_1_text(
    texts: Sequence[str],
    candidate_titles: Sequence[Sequence[str]],
    targets: Sequence[str],
    *,
    reduce: Reduce = "mean",
):
    """HR@1 of text outputs: valid and the target title occurs in the text (S-DPO); higher is better.

    The denominator is all samples (invalid outputs count as misses).
    """
    check_reduce(reduce)
    texts, cands = _check_text_inputs(texts, candidate_titles)
    targets = check_strings(targets, "targets")
    if len(targets) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(targets)} targets.")
    valid = _match_counts(texts, cands) == 1
    hit = np.array([tg in t for tg, t in zip(targets, texts)], dtype=bool) & valid
    return reduce_per_user(hit.astype(np.float64), reduce)


def _as_pred(predicted, name: str) -> np.ndarray:
    p = np.asarray(predicted)
    if p.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one id per sample, -1 = no answer), got shape {p.shape}.")
    if p.size and not np.issubdtype(p.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {p.dtype}.")
    p = p.astype(np.int64, copy=False)
    if p.size and p.min() < EMPTY:
        raise ValueError(f"{name} holds {p.min()}; ids must be >= 0, or -1 for no answer.")
    return p


def _valid_ids(pred: np.ndarray, candidates) -> np.ndarray:
    c = np.asarray(candidates)
    if c.ndim != 2 or c.shape[0] != pred.size:
        raise ValueError(
            f"candidates must be a 2-D array (n_samples={pred.size}, n_candidates), got shape {c.shape}."
        )
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"candidates must hold integer ids, got dtype {c.dtype}.")
    return (pred != EMPTY) & np.any(c == pred[:, None], axis=1)


def valid_ratio(predicted, candidates, *, reduce: Reduce = "mean"):
    """ValidRatio of id predictions: share of samples whose prediction is one of their candidates; higher is better.

    ``predicted``: (n_samples,) item ids, -1 = no answer; ``candidates``:
    (n_samples, n_candidates) item ids.
    """
    check_reduce(reduce)
    pred = _as_pred(predicted, "predicted")
    return reduce_per_user(_valid_ids(pred, candidates).astype(np.float64), reduce)


def hr_at_1(predicted, targets, candidates=None, *, reduce: Reduce = "mean"):
    """HR@1 of id predictions: share of samples with prediction == target; higher is better.

    With ``candidates`` given, a prediction outside the sample's candidate
    list counts as a miss (S-DPO scores only valid answers). -1 (no answer)
    is always a miss. The denominator is all samples.
    """
    check_reduce(reduce)
    pred = _as_pred(predicted, "predicted")
    tgt = _as_pred(targets, "targets")
    if tgt.size != pred.size:
        raise ValueError(f"got {pred.size} predictions but {tgt.size} targets.")
    hit = (pred == tgt) & (pred != EMPTY)
    if candidates is not None:
        hit &= _valid_ids(pred, candidates)
    return reduce_per_user(hit.astype(np.float64), reduce)
