"""The bottom floor of every fcpo slate env: the shared batched core and the slate checks.

A *core* holds ``num_envs`` user episodes in numpy arrays and advances any subset
of them with one vectorised step (no Python loop over users or items).  What all
fcpo cores share lives here, written once (Ge et al., WSDM 2021, §3-4):

* state: the FIFO window of the user's last N positives (``history``), the user
  embedding and the step fraction t / T; the observation
  ``[e(h_1) .. e(h_N) | e(user) | t / T]`` and its bounds;
* the ``shown`` matrix (bit-packed, :class:`fcpo.envs.bits.PackedBoolMatrix`): items recommended
  earlier in the episode, or in the initial history, and items repeated inside one slate, never pay
  (:meth:`SlateCore.fresh_mask`); :meth:`SlateCore.item_mask` is its negation;
* cost (eq. 6): the number of slate slots holding a G0 (popular) item;
* truncation at t = T, or at ``time_limit`` when a shorter limit is set.

A subclass defines only its outcome model: :meth:`SlateCore._reset_extra` (its
per-episode state), :meth:`SlateCore._outcome` (what each slot earns, which
items enter the history, who terminates) and the extra info it reports.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple, Sequence

import numpy as np

from fcpo.envs.bits import PackedBoolMatrix
from fcpo.envs.env_data import EnvData

#: The name of the fairness cost in ``info["costs"]`` (and the only cost of the fcpo envs).
COST_NAME = "popular_exposure"
#: Which held-out period an episode replays: ``train`` (initial history and targets of the
#: training period) or ``test``.
MODES = ("train", "test")


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or ValueError naming ``name`` (bools are not integers here)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def validate_slates(action, n_rows: int, k: int, n_items: int) -> np.ndarray:
    """Turn an action into an int64 [max(n_rows, 1), K] array or raise ValueError saying what is wrong
    (``n_rows=0``: one slate of shape (K,), as the single env takes it)."""
    arr = np.asarray(action)
    expected = (k,) if n_rows == 0 else (n_rows, k)
    if arr.shape != expected:
        what = "action must have shape ({},) (K item ids)".format(k) if n_rows == 0 else \
            f"actions must have shape {expected} (num_envs x K item ids)"
        raise ValueError(f"{what}, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"action must hold integer item ids, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_items):
        bad = arr[(arr < 0) | (arr >= n_items)].ravel()[0]
        raise ValueError(f"item id {int(bad)} is out of range [0, {n_items})")
    return arr.astype(np.int64, copy=False).reshape(-1, k)


class StepOutcome(NamedTuple):
    """One batched step of a core, one row per stepped env slot."""

    reward: np.ndarray  # float64 [n]: the sum of slot_rewards
    cost: np.ndarray  # float64 [n]: G0 items in the slate (eq. 6)
    hits: np.ndarray  # bool [n, K]: slots whose item entered the history window
    slot_rewards: np.ndarray  # float64 [n, K]: what each slot earned
    terminated: np.ndarray  # bool [n]
    truncated: np.ndarray  # bool [n]
    extra: dict  # core-specific step info, batched (e.g. the simulator's clicks and leaves)


class SlateCore(ABC):
    """Vectorised state of ``num_envs`` slate-recommendation episodes; subclasses add the outcome model.

    ``draws_per_step``: whether :meth:`_outcome` draws random numbers (then :meth:`step` needs one
    generator per stepped slot, so that sub-env i of a batch draws exactly what a single env would).
    """

    draws_per_step = False
    #: how ``render`` marks a slot that entered the history
    hit_label = "HIT"

    def __init__(self, env_data: EnvData, num_envs: int, slate_size: int, horizon: int, mode: str, grouping,
                 time_limit: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.k = check_positive_int("slate_size", slate_size)
        self.horizon = check_positive_int("horizon", horizon)
        if self.k > env_data.n_items:
            raise ValueError(f"slate_size K={self.k} exceeds the number of items ({env_data.n_items}) "
                             f"of {env_data.key.dataset}")
        self.time_limit = self.horizon if time_limit is None else check_positive_int("max_episode_steps", time_limit)
        self.data, self.split = env_data, env_data.split
        self.num_envs, self.mode, self.grouping = check_positive_int("num_envs", num_envs), mode, grouping
        self.n_items, self.n_hist, self.dim = env_data.n_items, self.split.n_initial, env_data.dim
        self.obs_dim = self.n_hist * self.dim + self.dim + 1
        bound = float(np.ceil(max(np.abs(env_data.item_embeddings).max(), np.abs(env_data.user_embeddings).max(),
                                  1.0)))
        self.obs_low = np.full(self.obs_dim, -bound, dtype=np.float32)
        self.obs_high = np.full(self.obs_dim, bound, dtype=np.float32)
        self.obs_low[-1], self.obs_high[-1] = 0.0, 1.0
        self._initial = self.split.initial(mode)
        e = self.num_envs
        self.rows = np.zeros(e, dtype=np.int64)
        self.t = np.zeros(e, dtype=np.int64)
        self.history = np.zeros((e, self.n_hist), dtype=np.int64)
        self.shown = PackedBoolMatrix(e, self.n_items)  # 8 items per byte: 466 MB, not 3.7 GB, at ML-20M size
        self._obs = np.zeros((e, self.obs_dim), dtype=np.float32)
        self._obs[:, :] = self._embed(np.arange(e))
        self._strict_lower = np.tri(self.k, k=-1, dtype=bool)

    @property
    def n_users(self) -> int:
        """Users with an episode in this mode (the rows of the split)."""
        return self.split.n_episode_users

    # ------------------------------------------------------------------ episodes
    def reset_envs(self, idx: np.ndarray, user_rows: np.ndarray) -> None:
        """Start new episodes in env slots ``idx`` for the split's users ``user_rows``."""
        idx = np.asarray(idx, dtype=np.int64)
        user_rows = np.asarray(user_rows, dtype=np.int64)
        if len(user_rows) and (user_rows.min() < 0 or user_rows.max() >= self.n_users):
            raise ValueError(f"user rows must lie in [0, {self.n_users}), got {user_rows.min()}..{user_rows.max()}")
        self.rows[idx] = user_rows
        self.t[idx] = 0
        self.history[idx] = self._initial[user_rows]
        self.shown.clear_rows(idx)
        self.shown.set(idx[:, None], self.history[idx])
        self._obs[idx] = self._embed(idx)
        self._reset_extra(idx, user_rows)

    def observe(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Observation rows (float32): [history embeddings (N*d) | user embedding (d) | t / T].

        Kept up to date by :meth:`reset_envs` and :meth:`step` (only rows whose history changed are
        re-embedded), so reading it is one copy."""
        return self._obs.copy() if idx is None else self._obs[np.asarray(idx, dtype=np.int64)]

    def _embed(self, idx: np.ndarray) -> np.ndarray:
        obs = np.empty((len(idx), self.obs_dim), dtype=np.float32)
        nd = self.n_hist * self.dim
        obs[:, :nd] = self.data.item_embeddings[self.history[idx]].reshape(len(idx), nd)
        obs[:, nd:nd + self.dim] = self.data.user_embeddings[self.split.user_ids[self.rows[idx]]]
        obs[:, -1] = self.t[idx] / self.horizon
        return obs

    def item_mask(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Bool [n, n_items]: True for items not shown yet in the episode (the ones that can still pay)."""
        return ~self.shown.dense(idx)

    def fresh_mask(self, idx: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """Bool [n, K]: slots whose item was not shown before and does not repeat an earlier slot."""
        dup = ((slates[:, :, None] == slates[:, None, :]) & self._strict_lower).any(axis=2)
        return ~self.shown.get(idx[:, None], slates) & ~dup

    def validate_slates(self, action, n_rows: int) -> np.ndarray:
        return validate_slates(action, n_rows, self.k, self.n_items)

    def step(self, idx: np.ndarray, slates: np.ndarray, rngs: Sequence[np.random.Generator] | None = None
             ) -> StepOutcome:
        """Advance env slots ``idx`` with validated ``slates`` [len(idx), K]; ``rngs``: one generator per
        slot (only cores with ``draws_per_step`` use them)."""
        idx = np.asarray(idx, dtype=np.int64)
        e = idx[:, None]
        fresh = self.fresh_mask(idx, slates)
        slot_rewards, hits, terminated, extra = self._outcome(idx, slates, fresh, rngs)
        cost = self.grouping.is_popular[slates].sum(axis=1).astype(np.float64)
        self.grouping.record(slates)
        self.shown.set(e, slates)
        # FIFO window: append hits in slate order, keep the last n_hist valid entries (rows with a hit only)
        changed = np.flatnonzero(hits.any(axis=1))
        if len(changed):
            rows = idx[changed]
            merged = np.concatenate([self.history[rows], np.where(hits[changed], slates[changed], -1)], axis=1)
            order = np.argsort(merged >= 0, axis=1, kind="stable")[:, -self.n_hist:]
            self.history[rows] = np.take_along_axis(merged, order, axis=1)
            nd = self.n_hist * self.dim
            self._obs[rows, :nd] = self.data.item_embeddings[self.history[rows]].reshape(len(rows), nd)
        self.t[idx] += 1
        self._obs[idx, -1] = self.t[idx] / self.horizon
        t = self.t[idx]
        # as Gymnasium's TimeLimit: the step limit truncates even a terminal step; the horizon does not
        truncated = ((t >= self.horizon) & ~terminated) | (t >= self.time_limit) if self.time_limit < self.horizon \
            else (t >= self.horizon) & ~terminated
        return StepOutcome(slot_rewards.sum(axis=1).astype(np.float64), cost, hits, slot_rewards, terminated,
                           truncated, extra)

    # ------------------------------------------------------------------ info
    #: whether :meth:`state_info` carries the dense ``action_mask`` (env option ``action_mask_in_info``)
    action_mask_in_info: bool = True

    def state_info(self, idx: np.ndarray | None = None) -> dict:
        """Info keys present after both reset and step, batched over ``idx`` (default all slots)."""
        rows = self.rows if idx is None else self.rows[idx]
        history = self.history.copy() if idx is None else self.history[idx]
        sizes = np.asarray(self.grouping.sizes(), dtype=np.int64)
        info = {
            "user": self.split.user_ids[rows].astype(np.int64, copy=False),
            "user_row": rows.copy() if idx is None else rows,
            "history": history,
            "history_raw_ids": self.data.data.item_raw_ids[history],
            "group_sizes": np.broadcast_to(sizes, (len(rows), 2)).copy(),
        }
        if self.action_mask_in_info:  # dense [n, n_items]: 3.7 GB per step for all ML-20M users
            info["action_mask"] = self.item_mask(idx)
        info.update(self._state_info_extra(idx))
        return info

    # ------------------------------------------------------------------ the outcome model (subclasses)
    def _reset_extra(self, idx: np.ndarray, user_rows: np.ndarray) -> None:
        """Reset the subclass's per-episode state of slots ``idx``."""

    @abstractmethod
    def _outcome(self, idx, slates, fresh, rngs) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """(slot_rewards float64 [n, K], hits bool [n, K] (items entering the history), terminated bool [n],
        extra step info {name: batched array}); may update the subclass's state."""

    def _state_info_extra(self, idx: np.ndarray | None) -> dict:
        return {}

    def status_text(self, i: int) -> str:
        """One line on slot ``i``'s episode for ``render``."""
        return ""

    def step_info_names(self) -> tuple[str, ...]:
        """Names of the core-specific step info keys (the keys of ``StepOutcome.extra``)."""
        return ()
