"""Adapters for safe-RL libraries that expect the cost in the step tuple."""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class SafetyStepWrapper(gym.Wrapper):
    """``step`` returns ``(obs, reward, cost, terminated, truncated, info)``, the 6-tuple of
    Safety-Gymnasium / OmniSafe.  The cost (np.float64) is ``info["cost"]`` by default, or the named
    cost ``info["costs"][cost_name]`` when ``cost_name`` is given (KeyError naming the known costs
    if it is missing); ``info`` is passed through unchanged."""

    def __init__(self, env: gym.Env, cost_name: str | None = None):
        super().__init__(env)
        self.cost_name = cost_name

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.cost_name is None:
            cost = np.float64(info["cost"])
        else:
            costs = info.get("costs", {})
            if self.cost_name not in costs:
                raise KeyError(f"cost {self.cost_name!r} not in info['costs'] (has {sorted(costs)})")
            cost = np.float64(costs[self.cost_name])
        return obs, reward, cost, terminated, truncated, info
