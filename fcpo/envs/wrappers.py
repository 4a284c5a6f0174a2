"""Adapters for safe-RL libraries that expect the cost in the step tuple."""
from __future__ import annotations

import gymnasium as gym


class SafetyStepWrapper(gym.Wrapper):
    """``step`` returns ``(obs, reward, cost, terminated, truncated, info)``, the 6-tuple of
    Safety-Gymnasium / OmniSafe; the cost is the named cost ``cost_name`` (default: the sum
    of ``info["costs"]``, which for this env is ``info["cost"]``)."""

    def __init__(self, env: gym.Env, cost_name: str | None = None):
        super().__init__(env)
        self.cost_name = cost_name

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.cost_name is None:
            cost = float(info["cost"])
        else:
            costs = info.get("costs", {})
            if self.cost_name not in costs:
                raise KeyError(f"cost {self.cost_name!r} not in info['costs'] (has {sorted(costs)})")
            cost = float(costs[self.cost_name])
        return obs, reward, cost, terminated, truncated, info
