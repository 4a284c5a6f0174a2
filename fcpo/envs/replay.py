"""The replay core of ``fcpo/MovieLensFair-v0``: rewards from a user's held-out ratings.

Subclass of :class:`fcpo.envs.base.SlateCore` (history window, shown items,
observation and cost are there); this module defines only the outcome model
(Ge et al., WSDM 2021, §3-4):

* reward ``hit`` (eq. 5): the number of slate items that are still-unconsumed
  held-out positives; each pays once and then enters the history window;
  optional position discount 1 / log2(position + 2);
* reward ``rating`` (TPGR, Chen et al. 2019): the item's rating in the period
  mapped to [-1, 1] by (r - 3) / 2, unrated = 0, plus
  ``rating_alpha`` * (consecutive positives - consecutive negatives);
* terminated when no held-out positive is left.
"""
from __future__ import annotations

import numpy as np

from fcpo.envs.base import MODES, SlateCore, validate_slates  # noqa: F401  (MODES, validate_slates: re-exported)
from fcpo.envs.bits import PackedBoolMatrix
from fcpo.envs.env_data import EnvData

REWARDS = ("hit", "rating")


class SlateReplayCore(SlateCore):
    """Vectorised replay of ``num_envs`` user episodes."""

    def __init__(self, env_data: EnvData, num_envs: int, slate_size: int, horizon: int, mode: str, reward: str,
                 grouping, rating_alpha: float = 0.1, position_discount: bool = False,
                 time_limit: int | None = None):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        super().__init__(env_data, num_envs, slate_size, horizon, mode, grouping, time_limit)
        self.reward_kind = reward
        self.rating_alpha = float(rating_alpha)
        self.discount = (1.0 / np.log2(np.arange(self.k) + 2.0)) if position_discount else np.ones(self.k)
        self._targets = self.split.targets(mode)
        self._ratings = self.split.ratings(mode)
        e = self.num_envs
        self.remaining = PackedBoolMatrix(e, self.n_items)  # held-out positives not yet hit (bit-packed)
        self.n_remaining = np.zeros(e, dtype=np.int64)
        self.streak = np.zeros((e, 2), dtype=np.int64)  # consecutive positives, negatives
        self.rating_rows = np.zeros((e, self.n_items), dtype=np.float32) if reward == "rating" else None

    def _reset_extra(self, idx, user_rows) -> None:
        self.remaining.clear_rows(idx)
        lengths, items = self._targets.take(user_rows)
        self.remaining.set_ragged(idx, lengths, items)
        self.n_remaining[idx] = lengths
        self.streak[idx] = 0
        if self.rating_rows is not None:
            self.rating_rows[idx] = self._ratings[self.split.user_ids[user_rows]].toarray().astype(np.float32)  # half stars (ML-10M+) kept

    def _outcome(self, idx, slates, fresh, rngs):
        hits = self.remaining.get(idx[:, None], slates) & fresh
        if self.reward_kind == "hit":
            slot_rewards = hits * self.discount
        else:
            slot_rewards = self._rating_reward(idx, slates, fresh)
        hit_rows, hit_cols = np.nonzero(hits)
        self.remaining.set(idx[hit_rows], slates[hit_rows, hit_cols], False)
        self.n_remaining[idx] -= hits.sum(axis=1)
        return slot_rewards, hits, self.n_remaining[idx] == 0, {}

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

    def _state_info_extra(self, idx) -> dict:
        return {"remaining_positives": self.n_remaining.copy() if idx is None else self.n_remaining[idx]}

    def status_text(self, i: int) -> str:
        return f"{int(self.n_remaining[i])} held-out positives left"
