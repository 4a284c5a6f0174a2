"""The simulator core of ``fcpo/MovieLensSim-v0``: stochastic clicks, leaving and drift.

Subclass of :class:`fcpo.envs.base.SlateCore` (history window of *clicked* items, shown items,
observation and cost are there); this module defines only the outcome model (our design, see
:mod:`fcpo.envs.simulator`):

* P(click | u, i) = sigmoid((r_t(u, i) - rating_center) / click_temperature
  + popularity_sensitivity * z_pop(i)); shown or repeated items are never clicked;
* leaving: slots are read in order, each unclicked item adds one to a counter of consecutive
  misses, a click resets it; at ``patience`` the user leaves (terminated) and later slots are unseen;
* drift: p_{t+1} = p_t + drift_rate * s_p * mean(q_clicked) / s_q + drift_noise * s_p / sqrt(d) * eps
  and r_t(u, i) = R(u, i) + b * (p_t - p_0) . q_i.

Randomness: the clicks (K uniforms) and then the drift noise (d normals) of slot j are drawn from
``rngs[j]``, so a batch of sub-envs with their own generators draws what the single envs would.
"""
from __future__ import annotations

import numpy as np

from fcpo.envs.base import SlateCore
from fcpo.envs.sim.user_model import SimData, SimParams


class SimCore(SlateCore):
    """Vectorised simulation of ``num_envs`` user sessions.

    ``click_model(obs [n, obs_dim], history [n, N], slates [n, K]) -> logits [n, K]`` replaces the
    calibrated-rating click logits when given (the iALP agents use this to roll out in a *learned*
    reward model); the popularity term, leaving and drift still follow ``params``.
    """

    draws_per_step = True
    hit_label = "CLICK"

    def __init__(self, sim: SimData, num_envs: int, slate_size: int, horizon: int, mode: str, grouping,
                 params: SimParams, click_model=None, time_limit: int | None = None):
        super().__init__(sim.env, num_envs, slate_size, horizon, mode, grouping, time_limit)
        if click_model is not None and not callable(click_model):
            raise TypeError(f"click_model must be callable (obs, history, slates) -> logits, got {click_model!r}")
        self.sim, self.params, self.click_model = sim, params, click_model
        self.p_scale = float(np.linalg.norm(sim.user_factors, axis=1).mean()) or 1.0
        self.q_scale = float(np.linalg.norm(sim.item_factors, axis=1).mean()) or 1.0
        e, d = self.num_envs, sim.user_factors.shape[1]
        self.base = np.zeros((e, self.n_items), dtype=np.float32) if click_model is None else None
        self.p0 = np.zeros((e, d), dtype=np.float64)
        self.p = np.zeros((e, d), dtype=np.float64)
        self.misses = np.zeros(e, dtype=np.int64)  # consecutive unclicked items

    def _reset_extra(self, idx, user_rows) -> None:
        users = self.split.user_ids[user_rows]
        if self.base is not None:
            self.base[idx] = self.sim.completed_ratings(users)
        self.p0[idx] = self.sim.user_factors[users]
        self.p[idx] = self.p0[idx]
        self.misses[idx] = 0

    def click_probabilities(self, idx: np.ndarray, slates: np.ndarray, fresh: np.ndarray | None = None) -> np.ndarray:
        """P(click) [n, K] of each slate item before the leave rule (0 for repeats and earlier items)."""
        idx = np.asarray(idx, dtype=np.int64)
        prm = self.params
        if self.click_model is None:
            q = self.sim.item_factors[slates]  # [n, K, d]
            drift = np.einsum("nd,nkd->nk", self.p[idx] - self.p0[idx], q)
            rating = self.base[idx[:, None], slates] + self.sim.calib_b * drift
            logits = (rating - prm.rating_center) / prm.click_temperature
        else:
            logits = np.asarray(self.click_model(self.observe(idx), self.history[idx], slates), dtype=np.float64)
        logits = logits + prm.popularity_sensitivity * self.sim.popularity_z[slates]
        fresh = self.fresh_mask(idx, slates) if fresh is None else fresh
        return np.where(fresh, 1.0 / (1.0 + np.exp(-logits)), 0.0)

    def _outcome(self, idx, slates, fresh, rngs):
        if rngs is None or len(rngs) != len(idx):
            raise ValueError("the simulator draws clicks: step(idx, slates, rngs) needs one generator per slot")
        prob = self.click_probabilities(idx, slates, fresh)
        uniforms = np.stack([g.random(self.k) for g in rngs]) if len(idx) else np.zeros((0, self.k))
        clicks = uniforms < prob
        left = np.zeros(len(idx), dtype=bool)
        if self.params.patience > 0:
            misses = self.misses[idx].copy()
            for j in range(self.k):  # K slate positions, vectorised over users: read in order, leave mid-slate
                clicks[:, j] &= ~left
                misses = np.where(clicks[:, j], 0, misses + 1)
                left |= misses >= self.params.patience
            self.misses[idx] = misses
        self._drift(idx, slates, clicks, rngs)
        return clicks.astype(np.float64), clicks, left, {"clicks": clicks.copy(), "left": left.copy()}

    def _drift(self, idx, slates, clicks, rngs) -> None:
        prm = self.params
        if prm.drift_rate == 0 and prm.drift_noise == 0:
            return
        d = self.p.shape[1]
        q = self.sim.item_factors[slates].astype(np.float64)  # [n, K, d]
        n_click = clicks.sum(axis=1, keepdims=True)
        mean_q = (q * clicks[:, :, None]).sum(axis=1) / np.maximum(n_click, 1)
        noise = (np.stack([g.standard_normal(d) for g in rngs]) if len(idx) else np.zeros((0, d))) \
            if prm.drift_noise > 0 else 0.0
        self.p[idx] += (prm.drift_rate * self.p_scale / self.q_scale) * mean_q \
            + prm.drift_noise * self.p_scale / np.sqrt(d) * noise

    def _state_info_extra(self, idx) -> dict:
        return {"misses": self.misses.copy() if idx is None else self.misses[idx]}

    def step_info_names(self) -> tuple[str, ...]:
        return ("clicks", "left")

    def status_text(self, i: int) -> str:
        return f"{int(self.misses[i])}/{self.params.patience} consecutive misses"
