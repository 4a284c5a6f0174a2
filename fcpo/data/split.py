"""Per-user temporal splits of a :class:`RatingsData` into RL episodes.

``fcpo_split`` follows the FCPO protocol (Ge et al., WSDM 2021, §5.1): per user,
order by time; the first ``n_initial`` positives are the initial training state,
the remaining positives are split ``train_ratio : 1 - train_ratio`` in time order
into train and test targets, and the test initial state is the last
``n_initial`` train positives.  ``leave_one_out_split`` keeps the last positive
as the single test target.  Everything is vectorised over all ratings.

``threshold=None`` uses the data set's own positive threshold
(``RatingsData.positive_threshold``: 1.0 for implicit logs) or 4.0.  The
train/test rating matrices never add up repeated (user, item) interactions:
each pair holds the rating of its latest interaction in the period (ties: the
later row).  :func:`split_dataset` dispatches by protocol name and refuses a
split that keeps no user, saying why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fcpo.data.dataset import RatingsData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ragged:
    """Rows of variable length: row ``r`` is ``values[indptr[r]:indptr[r + 1]]``."""

    indptr: np.ndarray  # int64 [n_rows + 1]
    values: np.ndarray  # int64

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        return self.values[self.indptr[r]:self.indptr[r + 1]]

    def row_ids(self) -> np.ndarray:
        """The row index of every value."""
        return np.repeat(np.arange(self.n_rows), self.lengths)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lengths, values)`` of ``rows`` in CSR layout: the rows' values concatenated in order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return lengths, self.values[np.repeat(starts, lengths) + offsets]

    def to_mask(self, n_cols: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Boolean matrix [len(rows), n_cols] with True at each row's values."""
        if rows is None:
            mask = np.zeros((self.n_rows, n_cols), dtype=bool)
            mask[self.row_ids(), self.values] = True
            return mask
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        out_rows = np.repeat(np.arange(len(rows)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        mask = np.zeros((len(rows), n_cols), dtype=bool)
        mask[out_rows, self.values[np.repeat(starts, lengths) + offsets]] = True
        return mask


@dataclass(frozen=True)
class EpisodeSplit:
    """Initial states and held-out positives for every kept user.

    Index ``r`` runs over kept users; ``user_ids[r]`` is the dense user id.
    ``train_mask`` marks, per rating of the source data, the interactions that
    belong to the training period (used for popularity counts and embeddings).
    """

    protocol: str
    n_users: int  # users in the source data (embedding rows)
    n_items: int
    n_initial: int
    threshold: float
    user_ids: np.ndarray
    train_initial: np.ndarray  # int64 [U, n_initial]
    train_targets: Ragged
    test_initial: np.ndarray  # int64 [U, n_initial]
    test_targets: Ragged
    train_mask: np.ndarray  # bool [n_ratings]
    train_ratings: sp.csr_matrix  # [n_users, n_items] ratings of the train period (0 = unrated)
    test_ratings: sp.csr_matrix  # [n_users, n_items] ratings of the test period
    dropped_users: int

    @property
    def n_episode_users(self) -> int:
        return len(self.user_ids)

    def initial(self, mode: str) -> np.ndarray:
        return self.train_initial if mode == "train" else self.test_initial

    def targets(self, mode: str) -> Ragged:
        return self.train_targets if mode == "train" else self.test_targets

    def ratings(self, mode: str) -> sp.csr_matrix:
        return self.train_ratings if mode == "train" else self.test_ratings

    def train_item_counts(self) -> np.ndarray:
        """Interactions per item in the training period (popularity for the item groups)."""
        return np.asarray((self.train_ratings != 0).sum(axis=0)).ravel().astype(np.int64)

    def train_items(self) -> Ragged:
        """Items each kept user interacted with in the training period (excluded when ranking for test)."""
        rows = self.train_ratings[self.user_ids]
        return Ragged(rows.indptr.astype(np.int64), rows.indices.astype(np.int64))


DEFAULT_THRESHOLD = 4.0


def resolve_threshold(data: RatingsData, threshold: float | None) -> float:
    """``threshold`` if given, else the data set's own (implicit logs: 1.0), else 4.0."""
    if threshold is None:
        threshold = data.positive_threshold if data.positive_threshold is not None else DEFAULT_THRESHOLD
    if data.implicit and threshold > 1.0:
        raise ValueError(f"{data.name} ({data.source or 'no source'}) is implicit feedback: every interaction has "
                         f"rating 1.0, so threshold {threshold} would leave no positives; use threshold <= 1 "
                         "(or leave it unset)")
    return float(threshold)


def _order(data: RatingsData) -> np.ndarray:
    # stable: by user, then timestamp, then raw item id (dense ids follow the sorted raw ids)
    tie = data.item_raw_ids[data.items] if data.item_raw_ids.dtype.kind in "iuf" else data.items
    return np.lexsort((tie, data.timestamps, data.users))


def latest_rating_matrix(data: RatingsData, mask: np.ndarray) -> sp.csr_matrix:
    """[n_users, n_items] CSR of the selected ratings; a repeated (user, item) keeps its LATEST rating.

    Latest = largest timestamp, ties broken by the later row.  Never sums
    (a plain ``csr_matrix((data, (rows, cols)))`` would add repeats up).
    """
    rows = np.flatnonzero(mask)
    pair = data.users[rows] * np.int64(data.n_items) + data.items[rows]  # < 2**63 for any realistic size
    order = np.lexsort((rows, data.timestamps[rows], pair))  # by pair, then time, then row: the last of a run wins
    pair = pair[order]
    last = np.r_[pair[1:] != pair[:-1], True] if len(pair) else np.zeros(0, bool)
    sel = rows[order][last]
    return sp.csr_matrix((data.ratings[sel], (data.users[sel], data.items[sel])), shape=(data.n_users, data.n_items))


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index of each run of equal sorted keys and the rank of each element in its run."""
    n = len(keys)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if n else np.zeros(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return starts, np.arange(n) - run_start


def _validate(data: RatingsData, n_initial: int, threshold: float, train_ratio: float) -> None:
    if not isinstance(n_initial, (int, np.integer)) or n_initial < 1:
        raise ValueError(f"n_initial must be a positive integer, got {n_initial!r}")
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must lie strictly between 0 and 1, got {train_ratio!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")


def _build(data, protocol, n_initial, threshold, pos_rank, pos_count, order, is_pos, n_test_of_user) -> EpisodeSplit:
    """Assemble the split from the per-rating positive rank and per-user test-target counts."""
    users_sorted = data.users[order]
    items_sorted = data.items[order]
    n_train_targets = pos_count - n_initial - n_test_of_user
    keep_user = (n_train_targets >= 1) & (n_test_of_user >= 1)
    kept = np.flatnonzero(keep_user)
    dropped = int(np.count_nonzero(pos_count > 0) - len(kept)) + int(np.count_nonzero(pos_count == 0))
    u_of = users_sorted
    rank = pos_rank  # rank among the user's positives, -1 for non-positives
    first_test_rank = n_initial + n_train_targets  # per user
    is_kept = keep_user[u_of]
    part_init = is_pos & is_kept & (rank < n_initial)
    part_train = is_pos & is_kept & (rank >= n_initial) & (rank < first_test_rank[u_of])
    part_test = is_pos & is_kept & (rank >= first_test_rank[u_of])
    # the test initial state: the last n_initial train positives
    part_test_init = is_pos & is_kept & (rank >= first_test_rank[u_of] - n_initial) & (rank < first_test_rank[u_of])
    # training period = every rating sorted before the user's first test positive (dropped users: all)
    position = np.arange(len(order))
    first_test_pos = np.full(data.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first_test_pos, u_of[part_test], position[part_test])
    in_train_sorted = position < first_test_pos[u_of]
    train_mask = np.zeros(data.n_ratings, dtype=bool)
    train_mask[order] = in_train_sorted
    row_of_user = np.full(data.n_users, -1, dtype=np.int64)
    row_of_user[kept] = np.arange(len(kept))

    def ragged(part):
        rows = row_of_user[u_of[part]]
        counts = np.bincount(rows, minlength=len(kept))
        return Ragged(np.r_[0, np.cumsum(counts)].astype(np.int64), items_sorted[part].astype(np.int64))

    def dense(part):
        return items_sorted[part].reshape(len(kept), n_initial).astype(np.int64)

    def rating_matrix(mask):
        return latest_rating_matrix(data, mask)

    log.info("%s split of %s: kept %d users, dropped %d with too few positives (rating >= %s)",
             protocol, data.name, len(kept), dropped, threshold)
    return EpisodeSplit(
        protocol=protocol, n_users=data.n_users, n_items=data.n_items, n_initial=n_initial, threshold=threshold,
        user_ids=kept.astype(np.int64), train_initial=dense(part_init), train_targets=ragged(part_train),
        test_initial=dense(part_test_init), test_targets=ragged(part_test), train_mask=train_mask,
        train_ratings=rating_matrix(train_mask), test_ratings=rating_matrix(~train_mask), dropped_users=dropped,
    )


def _positive_ranks(data: RatingsData, threshold: float):
    order = _order(data)
    users_sorted = data.users[order]
    is_pos = data.ratings[order] >= threshold
    pos_count = np.bincount(users_sorted[is_pos], minlength=data.n_users)
    cum = np.cumsum(is_pos)
    starts, _ = _segments(users_sorted)
    before = np.repeat(np.r_[0, cum][starts], np.diff(np.r_[starts, len(order)]))
    pos_rank = np.where(is_pos, cum - before - 1, -1)
    return order, is_pos, pos_rank, pos_count


def fcpo_split(data: RatingsData, n_initial: int = 5, threshold: float | None = None,
               train_ratio: float = 0.8) -> EpisodeSplit:
    """The FCPO protocol split (positives = rating >= ``threshold``; 0 counts every rating).

    A user needs ``n_initial`` + at least one train and one test target; the
    number of test targets is ``round((1 - train_ratio) * m)`` of the ``m``
    positives after the initial state, at least 1 and at most ``m - 1``.
    """
    threshold = resolve_threshold(data, threshold)
    _validate(data, n_initial, threshold, train_ratio)
    order, is_pos, pos_rank, pos_count = _positive_ranks(data, threshold)
    m = np.maximum(pos_count - n_initial, 0)
    n_test = np.clip(np.rint((1.0 - train_ratio) * m).astype(np.int64), 1, np.maximum(m - 1, 1))
    n_test = np.where(m >= 2, n_test, 0)
    return _build(data, "fcpo", n_initial, threshold, pos_rank, pos_count, order, is_pos, n_test)


def leave_one_out_split(data: RatingsData, n_initial: int = 5, threshold: float | None = None) -> EpisodeSplit:
    """Temporal leave-one-out: each user's last positive is the only test target."""
    threshold = resolve_threshold(data, threshold)
    _validate(data, n_initial, threshold, 0.5)
    order, is_pos, pos_rank, pos_count = _positive_ranks(data, threshold)
    n_test = np.where(pos_count - n_initial >= 2, 1, 0)
    return _build(data, "leave-one-out", n_initial, threshold, pos_rank, pos_count, order, is_pos, n_test)


SPLITS = {"fcpo": fcpo_split, "leave-one-out": leave_one_out_split}


def split_dataset(data: RatingsData, protocol: str = "fcpo", n_initial: int = 5, threshold: float | None = None,
                  train_ratio: float = 0.8) -> EpisodeSplit:
    """``SPLITS[protocol]`` that refuses to return a split without users, naming the data and the numbers."""
    if protocol not in SPLITS:
        raise ValueError(f"unknown split {protocol!r}; choose one of {', '.join(SPLITS)}")
    if protocol == "fcpo":
        split = fcpo_split(data, n_initial=n_initial, threshold=threshold, train_ratio=train_ratio)
    else:
        split = SPLITS[protocol](data, n_initial=n_initial, threshold=threshold)
    if split.n_episode_users == 0:
        t = split.threshold
        positives = np.bincount(data.users[data.ratings >= t], minlength=data.n_users)
        raise ValueError(
            f"{data.name} ({data.source or 'no source'}): no user has enough positives for the {protocol} split "
            f"(a user needs n_initial={n_initial} + 2 interactions with rating >= {t}; the most any user has is "
            f"{int(positives.max()) if len(positives) else 0}, over {data.n_users} users and {data.n_ratings} "
            "interactions). Lower n_initial or the threshold, or use a larger log.")
    return split
