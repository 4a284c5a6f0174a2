"""Preference data for alignment: next-item samples, candidate lists and negatives (seeded, vectorised).

A sample is (history window, positive item) taken from an :class:`~fcpo.data.EpisodeSplit`:

* ``mode="train"``: every train target of every kept user; its history is the ``history_len``
  positives just before it (the user's ``train_initial`` followed by earlier train targets);
* ``mode="test"``: the test targets, with ``split.test_initial`` as the history.

S-DPO data (Chen et al., NeurIPS 2024): each sample gets a candidate list of ``n_candidates``
items -- ``n_candidates - 1`` distinct items drawn uniformly from those the user never rated,
plus the positive at a random position -- and M negatives drawn from the list without
replacement.  SPRec (Gao et al., WWW 2025) replaces those negatives by the previous model's own
predictions (see :mod:`fcpo.alignment.sprec`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fcpo.data.split import EpisodeSplit, Ragged

__all__ = ["PreferenceData", "next_item_samples", "seen_items", "candidate_lists", "sample_negatives",
           "with_candidates"]


@dataclass(frozen=True)
class PreferenceData:
    """N samples: history [N, L] item ids (oldest first), user [N] dense user ids, row [N] split rows,
    positive [N]; optional candidates [N, C] (the positive among them) and negatives [N, M]."""

    history: np.ndarray
    user: np.ndarray
    row: np.ndarray
    positive: np.ndarray
    candidates: np.ndarray | None = None
    negatives: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.positive)
        if self.history.ndim != 2 or len(self.history) != n or len(self.user) != n or len(self.row) != n:
            raise ValueError(f"PreferenceData: history {self.history.shape}, user {self.user.shape}, row "
                             f"{self.row.shape} must all have the {n} rows of positive")
        if self.candidates is not None:
            if self.candidates.ndim != 2 or len(self.candidates) != n:
                raise ValueError(f"PreferenceData: candidates must be [N={n}, C], got {self.candidates.shape}")
            if n and not np.all((self.candidates == self.positive[:, None]).any(axis=1)):
                raise ValueError("PreferenceData: every candidate list must contain its positive")
        if self.negatives is not None:
            if self.negatives.ndim != 2 or len(self.negatives) != n:
                raise ValueError(f"PreferenceData: negatives must be [N={n}, M], got {self.negatives.shape}")
            if n and np.any(self.negatives == self.positive[:, None]):
                raise ValueError("PreferenceData: a negative equals its sample's positive")

    def __len__(self) -> int:
        return len(self.positive)

    def subset(self, idx) -> "PreferenceData":
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return PreferenceData(self.history[idx], self.user[idx], self.row[idx], self.positive[idx],
                              pick(self.candidates), pick(self.negatives))

    def with_negatives(self, negatives: np.ndarray) -> "PreferenceData":
        return replace(self, negatives=np.asarray(negatives, dtype=np.int64))

    def preferred_and_rejected(self) -> np.ndarray:
        """[N, 1 + M] items: the positive, then the negatives."""
        if self.negatives is None:
            raise ValueError("PreferenceData has no negatives: build them with sample_negatives() or self-play")
        return np.concatenate([self.positive[:, None], self.negatives], axis=1)


def next_item_samples(split: EpisodeSplit, mode: str = "train", history_len: int | None = None,
                      per_user: str = "all", rows: np.ndarray | None = None) -> PreferenceData:
    """Next-item samples of ``split`` (see the module docstring).

    ``history_len`` (default ``split.n_initial``, at most that) is the window length;
    ``per_user``: ``"all"`` targets, ``"first"`` or ``"last"`` target of each user;
    ``rows``: restrict to these split rows (users), e.g. a subset for a language model.
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if per_user not in ("all", "first", "last"):
        raise ValueError(f"per_user must be 'all', 'first' or 'last', got {per_user!r}")
    n_init = split.n_initial
    L = n_init if history_len is None else int(history_len)
    if not 1 <= L <= n_init:
        raise ValueError(f"history_len must lie in 1..n_initial={n_init}, got {history_len!r}")
    targets = split.targets(mode)
    initial = split.initial(mode)
    row_of = targets.row_ids()
    pos_in_row = np.arange(len(targets.values)) - targets.indptr[row_of]
    keep = np.ones(len(targets.values), dtype=bool)
    if per_user == "first":
        keep &= pos_in_row == 0
    elif per_user == "last":
        keep &= pos_in_row == targets.lengths[row_of] - 1
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= targets.n_rows):
            raise ValueError(f"rows must index the split's {targets.n_rows} users")
        in_rows = np.zeros(targets.n_rows, dtype=bool)
        in_rows[rows] = True
        keep &= in_rows[row_of]
    flat = np.flatnonzero(keep)
    r, j = row_of[flat], pos_in_row[flat]
    if mode == "test":
        history = initial[r, n_init - L:]
    else:
        # per-user sequence = initial ++ train targets; the sample's target sits at index n_init + j
        lengths = targets.lengths + n_init
        seq_ptr = np.r_[0, np.cumsum(lengths)]
        seq = np.empty(seq_ptr[-1], dtype=np.int64)
        init_pos = seq_ptr[:-1, None] + np.arange(n_init)
        seq[init_pos.ravel()] = initial.ravel()
        tgt_pos = seq_ptr[row_of] + n_init + pos_in_row
        seq[tgt_pos] = targets.values
        start = seq_ptr[r] + n_init + j - L
        history = seq[start[:, None] + np.arange(L)]
    return PreferenceData(history=np.ascontiguousarray(history, dtype=np.int64),
                          user=split.user_ids[r].astype(np.int64), row=r.astype(np.int64),
                          positive=targets.values[flat].astype(np.int64))


def seen_items(split: EpisodeSplit) -> Ragged:
    """Items each kept user rated in the train or the test period (never drawn as a random negative)."""
    rows = (split.train_ratings + split.test_ratings)[split.user_ids].tocsr()
    rows.sort_indices()
    return Ragged(rows.indptr.astype(np.int64), rows.indices.astype(np.int64))


def candidate_lists(positive: np.ndarray, rows: np.ndarray, seen: Ragged, n_items: int, n_candidates: int = 20,
                    seed: int | np.random.Generator = 0, chunk: int | None = None) -> np.ndarray:
    """[N, n_candidates] lists: ``n_candidates - 1`` distinct random items the user (``seen`` row ``rows[i]``)
    never rated, and ``positive[i]``, in random order.  Uniform without replacement, via the
    smallest of i.i.d. uniform keys per item (vectorised in chunks of rows)."""
    positive = np.asarray(positive, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2 (the positive and at least one negative), got {n_candidates}")
    if len(rows) != len(positive):
        raise ValueError(f"rows ({len(rows)}) and positive ({len(positive)}) must have the same length")
    rng = np.random.default_rng(seed)
    n = len(positive)
    out = np.empty((n, n_candidates), dtype=np.int64)
    n_neg = n_candidates - 1
    chunk = chunk or max(1, (1 << 22) // max(n_items, 1))
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        keys = rng.random((e - s, n_items))
        keys[seen.to_mask(n_items, rows[s:e])] = 2.0
        keys[np.arange(e - s), positive[s:e]] = 2.0
        free = (keys < 2.0).sum(axis=1)
        if free.min() < n_neg:
            raise ValueError(f"a user has only {int(free.min())} unrated items, fewer than the {n_neg} negatives "
                             f"a list of {n_candidates} candidates needs; lower n_candidates")
        neg = np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]
        lists = np.concatenate([neg, positive[s:e, None]], axis=1)
        order = np.argsort(rng.random(lists.shape), axis=1)
        out[s:e] = np.take_along_axis(lists, order, axis=1)
    return out


def sample_negatives(candidates: np.ndarray, positive: np.ndarray, m: int,
                     seed: int | np.random.Generator = 0) -> np.ndarray:
    """[N, m] negatives drawn without replacement from each candidate list, never the positive."""
    candidates = np.asarray(candidates, dtype=np.int64)
    positive = np.asarray(positive, dtype=np.int64)
    if not 1 <= m <= candidates.shape[1] - 1:
        raise ValueError(f"m must lie in 1..{candidates.shape[1] - 1} (candidates minus the positive), got {m}")
    rng = np.random.default_rng(seed)
    keys = rng.random(candidates.shape)
    keys[candidates == positive[:, None]] = np.inf
    idx = np.argsort(keys, axis=1)[:, :m]
    return np.take_along_axis(candidates, idx, axis=1)


def with_candidates(data: PreferenceData, split: EpisodeSplit, n_candidates: int = 20, n_negatives: int | None = None,
                    seed: int = 0) -> PreferenceData:
    """``data`` with S-DPO candidate lists (and, if ``n_negatives``, that many negatives drawn from them).

    The lists use ``seed``; the negatives ``seed + 1``, so the lists do not change with M.
    """
    cands = candidate_lists(data.positive, data.row, seen_items(split), split.n_items, n_candidates, seed)
    out = replace(data, candidates=cands)
    if n_negatives:
        out = out.with_negatives(sample_negatives(cands, data.positive, n_negatives, seed + 1))
    return out
