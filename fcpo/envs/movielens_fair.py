"""``fcpo/MovieLensFair-v0``: one MovieLens user per episode, replaying held-out positives.

Observation: a flat float32 ``Box`` of size N*d + d + 1 laid out as
``[e(h_1) .. e(h_N) | e(user) | t / T]`` where h_1..h_N is the FIFO window of the
user's last N positives (oldest first), e(.) the MF embeddings (trained on the
train split only) and t the step.  Action: ``MultiDiscrete([n_items] * K)``.
Reward and cost: see :mod:`fcpo.envs.core`.  The cost is ``info["cost"]`` (a
Python float) and ``info["costs"]`` a dict of named costs.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from fcpo.envs.config import FairEnvConfig
from fcpo.envs.core import SlateReplayCore

COST_NAME = "popular_exposure"


class MovieLensFairEnv(gym.Env):
    """Single-user fairness-constrained recommendation env (Ge et al., WSDM 2021)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.config = FairEnvConfig.from_kwargs(**kwargs)
        self.render_mode = render_mode
        self.env_data = self.config.load()
        self.grouping = self.config.make_grouping(self.env_data)
        c = self.config
        self.core = SlateReplayCore(self.env_data, 1, c.slate_size, c.horizon, c.mode, c.reward, self.grouping,
                                    c.rating_alpha, c.position_discount)
        self.observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(c.slate_size, self.env_data.n_items, dtype=np.int64))
        self._zero = np.zeros(1, dtype=np.int64)
        self._last_slate: np.ndarray | None = None
        self._last_hits: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        """Users with an episode in this mode (index them with ``reset(options={"user": r})``)."""
        return self.core.n_users

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "user" in options:
            row = int(options["user"])
        else:
            row = int(self.np_random.integers(self.core.n_users))
        self.core.reset_envs(self._zero, np.array([row]))
        self._last_slate = self._last_hits = None
        return self.core.observe(self._zero)[0], self._info()

    def step(self, action):
        slates = self.core.validate_slates(action, 0)
        reward, cost, hits, terminated, truncated, slot_rewards = self.core.step(self._zero, slates)
        self._last_slate, self._last_hits = slates[0], hits[0]
        info = self._info()
        info.update(cost=float(cost[0]), costs={COST_NAME: float(cost[0])}, hits=hits[0].copy(),
                    slot_rewards=slot_rewards[0])
        return self.core.observe(self._zero)[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def action_masks(self) -> np.ndarray:
        """Bool [n_items]: True for items not yet recommended (or in the initial history) this episode."""
        return self.core.action_masks(self._zero)[0]

    def _info(self) -> dict:
        core = self.core
        history = core.history[0].copy()
        return {
            "user": int(core.split.user_ids[core.rows[0]]),
            "user_row": int(core.rows[0]),
            "history": history,
            "history_raw_ids": self.env_data.data.item_raw_ids[history],
            "remaining_positives": int(core.n_remaining[0]),
            "group_sizes": self.grouping.sizes(),
            "action_mask": self.action_masks(),
        }

    def render(self):
        if self.render_mode != "ansi":
            return None
        titles = self.env_data.data.item_titles
        lines = [f"user {int(self.core.split.user_ids[self.core.rows[0]])} · step {int(self.core.t[0])}/{self.core.horizon}"
                 f" · {int(self.core.n_remaining[0])} held-out positives left"]
        if self._last_slate is None:
            lines.append("history: " + "; ".join(titles[self.core.history[0]]))
        else:
            for pos, (item, hit) in enumerate(zip(self._last_slate, self._last_hits), start=1):
                marks = ("[HIT] " if hit else "") + ("[G0] " if self.grouping.is_popular[item] else "")
                lines.append(f"{pos:2d}. {marks}{titles[item]}")
        return "\n".join(lines) + "\n"
