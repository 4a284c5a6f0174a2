"""The batched state machine behind both the single env and the vector env.

One :class:`SlateReplayCore` holds ``num_envs`` user-episodes in numpy arrays
and advances any subset of them with one vectorised step (no Python loop over
users or items; the only loop is over the K slate positions for the streak
bonus of the ``rating`` reward).  Semantics (Ge et al., WSDM 2021, §3-4):

* state: the FIFO window of the user's last ``n_initial`` positives, the user
  embedding and the step fraction t / T;
* action: K item ids; an item repeated inside the slate, or recommended before
  in the episode (including the items of the initial history), pays nothing;
  ``action_masks()`` is True for items that can still pay;
* reward ``hit`` (eq. 5): the number of slate items that are still-unconsumed
  held-out positives; each pays once and then enters the history window;
  optional position discount 1 / log2(position + 2);
* reward ``rating`` (TPGR, Chen et al. 2019): the item's rating in the period
  mapped to [-1, 1] by (r - 3) / 2, unrated = 0, plus
  ``rating_alpha`` * (consecutive positives - consecutive negatives);
* cost (eq. 6): the number of slate slots holding a G0 (popular) item;
* terminated when no held-out positive is left; truncated at t = T.
"""
from __future__ import annotations

import numpy as np

from fcpo.data.groups import StaticGrouping
from fcpo.envs.env_data import EnvData

REWARDS = ("hit", "rating")
MODES = ("train", "test")


class SlateReplayCore:
    """Vectorised replay of ``num_envs`` user episodes."""

    def __init__(self, env_data: EnvData, num_envs: int, slate_size: int, horizon: int, mode: str, reward: str,
                 grouping: StaticGrouping, rating_alpha: float = 0.1, position_discount: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not isinstance(slate_size, (int, np.integer)) or slate_size < 1:
            raise ValueError(f"slate_size must be a positive integer, got {slate_size!r}")
        if slate_size > env_data.n_items:
            raise ValueError(f"slate_size K={slate_size} exceeds the number of items ({env_data.n_items}) of {env_data.key.dataset}")
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        self.data = env_data
        self.split = env_data.split
        self.num_envs, self.k, self.horizon = int(num_envs), int(slate_size), int(horizon)
        self.mode, self.reward_kind = mode, reward
        self.grouping = grouping
        self.rating_alpha = float(rating_alpha)
        self.discount = (1.0 / np.log2(np.arange(self.k) + 2.0)) if position_discount else np.ones(self.k)
        self.n_items = env_data.n_items
        self.n_hist = self.split.n_initial
        self.dim = env_data.dim
        self.obs_dim = self.n_hist * self.dim + self.dim + 1
        bound = float(np.ceil(max(np.abs(env_data.item_embeddings).max(), np.abs(env_data.user_embeddings).max(), 1.0)))
        self.obs_low = np.full(self.obs_dim, -bound, dtype=np.float32)
        self.obs_high = np.full(self.obs_dim, bound, dtype=np.float32)
        self.obs_low[-1], self.obs_high[-1] = 0.0, 1.0
        self._initial = self.split.initial(mode)
        self._targets = self.split.targets(mode)
        self._ratings = self.split.ratings(mode)
        e = self.num_envs
        self.rows = np.zeros(e, dtype=np.int64)
        self.t = np.zeros(e, dtype=np.int64)
        self.history = np.zeros((e, self.n_hist), dtype=np.int64)
        self.remaining = np.zeros((e, self.n_items), dtype=bool)
        self.shown = np.zeros((e, self.n_items), dtype=bool)
        self.n_remaining = np.zeros(e, dtype=np.int64)
        self.streak = np.zeros((e, 2), dtype=np.int64)  # consecutive positives, negatives
        self.rating_rows = np.zeros((e, self.n_items), dtype=np.int8) if reward == "rating" else None
        self._strict_lower = np.tri(self.k, k=-1, dtype=bool)

    @property
    def n_users(self) -> int:
        return self.split.n_episode_users

    def reset_envs(self, idx: np.ndarray, user_rows: np.ndarray) -> None:
        """Start new episodes in env slots ``idx`` for the kept users ``user_rows``."""
        idx = np.asarray(idx, dtype=np.int64)
        user_rows = np.asarray(user_rows, dtype=np.int64)
        if len(user_rows) and (user_rows.min() < 0 or user_rows.max() >= self.n_users):
            raise ValueError(f"user rows must lie in [0, {self.n_users}), got {user_rows.min()}..{user_rows.max()}")
        self.rows[idx] = user_rows
        self.t[idx] = 0
        self.history[idx] = self._initial[user_rows]
        self.remaining[idx] = self._targets.to_mask(self.n_items, user_rows)
        self.n_remaining[idx] = self._targets.lengths[user_rows]
        self.shown[idx] = False
        self.shown[idx[:, None], self.history[idx]] = True
        self.streak[idx] = 0
        if self.rating_rows is not None:
            dense = self._ratings[self.split.user_ids[user_rows]].toarray()
            self.rating_rows[idx] = dense.astype(np.int8)

    def observe(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Observation rows (float32): [history embeddings (N*d) | user embedding (d) | t / T]."""
        idx = np.arange(self.num_envs) if idx is None else np.asarray(idx, dtype=np.int64)
        obs = np.empty((len(idx), self.obs_dim), dtype=np.float32)
        nd = self.n_hist * self.dim
        obs[:, :nd] = self.data.item_embeddings[self.history[idx]].reshape(len(idx), nd)
        obs[:, nd:nd + self.dim] = self.data.user_embeddings[self.split.user_ids[self.rows[idx]]]
        obs[:, -1] = self.t[idx] / self.horizon
        return obs

    def step(self, idx: np.ndarray, slates: np.ndarray):
        """Advance env slots ``idx`` with ``slates`` [len(idx), K] (already validated); returns
        (reward, cost, hits, terminated, truncated, per-slot rewards [len(idx), K])."""
        idx = np.asarray(idx, dtype=np.int64)
        e = idx[:, None]
        dup = ((slates[:, :, None] == slates[:, None, :]) & self._strict_lower).any(axis=2)
        fresh = ~self.shown[e, slates] & ~dup
        hits = self.remaining[e, slates] & fresh
        if self.reward_kind == "hit":
            slot_rewards = hits * self.discount
        else:
            slot_rewards = self._rating_reward(idx, slates, fresh)
        cost = self.grouping.is_popular[slates].sum(axis=1).astype(np.float64)
        self.grouping.record(slates)
        self.shown[e, slates] = True
        hit_rows, hit_cols = np.nonzero(hits)
        self.remaining[idx[hit_rows], slates[hit_rows, hit_cols]] = False
        self.n_remaining[idx] -= hits.sum(axis=1)
        # FIFO window: append hits in slate order, keep the last n_hist valid entries
        merged = np.concatenate([self.history[idx], np.where(hits, slates, -1)], axis=1)
        order = np.argsort(merged >= 0, axis=1, kind="stable")[:, -self.n_hist:]
        self.history[idx] = np.take_along_axis(merged, order, axis=1)
        self.t[idx] += 1
        terminated = self.n_remaining[idx] == 0
        truncated = (self.t[idx] >= self.horizon) & ~terminated
        return slot_rewards.sum(axis=1).astype(np.float64), cost, hits, terminated, truncated, slot_rewards

    def _rating_reward(self, idx, slates, fresh):
        raw = self.rating_rows[idx[:, None], slates].astype(np.float64) * fresh
        mapped = np.where(raw > 0, (raw - 3.0) / 2.0, 0.0)
        reward = np.zeros((len(idx), self.k))
        streak = self.streak[idx]
        for j in range(self.k):  # K slate positions, vectorised over users
            pos, neg = mapped[:, j] > 0, mapped[:, j] < 0
            streak[:, 0] = np.where(pos, streak[:, 0] + 1, 0)
            streak[:, 1] = np.where(neg, streak[:, 1] + 1, 0)
            reward[:, j] = self.discount[j] * (mapped[:, j] + self.rating_alpha * (streak[:, 0] - streak[:, 1]))
        self.streak[idx] = streak
        return reward

    def action_masks(self, idx: np.ndarray | None = None) -> np.ndarray:
        """True for items not yet shown in the episode (the ones that can still pay)."""
        idx = np.arange(self.num_envs) if idx is None else idx
        return ~self.shown[idx]

    def validate_slates(self, action, n_rows: int) -> np.ndarray:
        return validate_slates(action, n_rows, self.k, self.n_items)


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
    return arr.astype(np.int64).reshape(-1, k)
