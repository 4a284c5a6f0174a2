"""Lagrange multipliers for cost constraints J_C(pi) <= d, shared by the Lagrangian agents.

Projected dual ascent on  max_pi min_{lambda >= 0}  J_R(pi) - lambda^T (J_C(pi) - d):

    lambda <- max(0, lambda + lr * (J_C - d))          (one step per training iteration)

and the policy optimises the penalised reward r - lambda^T c.  Several constraints are a
vector of limits; a scalar limit gives one multiplier.  ``max_value`` optionally caps
lambda (a common stabiliser; None = no cap).
"""
from __future__ import annotations

from typing import Sequence

import torch


class LagrangeMultiplier:
    """lambda >= 0 for m constraints; all tensors live on ``device``."""

    def __init__(self, limit: float | Sequence[float] | torch.Tensor, lr: float = 0.05,
                 init: float | Sequence[float] = 0.0, max_value: float | None = None, device="cpu"):
        self.limit = torch.atleast_1d(torch.as_tensor(limit, dtype=torch.float64, device=device)).clone()
        if self.limit.dim() != 1:
            raise ValueError(f"limit must be a scalar or a vector, got shape {tuple(self.limit.shape)}")
        if lr < 0:
            raise ValueError(f"lambda learning rate must be >= 0, got {lr}")
        value = torch.as_tensor(init, dtype=torch.float64, device=device).expand_as(self.limit).clone()
        if bool((value < 0).any()):
            raise ValueError(f"initial lambda must be >= 0, got {init}")
        self.lr = float(lr)
        self.max_value = max_value
        self.value = value

    @property
    def n_constraints(self) -> int:
        return int(self.limit.numel())

    def _as_costs(self, cost) -> torch.Tensor:
        c = torch.atleast_1d(torch.as_tensor(cost, dtype=torch.float64, device=self.value.device))
        if c.shape != self.limit.shape:
            raise ValueError(f"expected {self.n_constraints} constraint value(s), got shape {tuple(c.shape)}")
        return c

    def update(self, cost) -> torch.Tensor:
        """One projected ascent step from the measured J_C (scalar or [m]); returns the new lambda."""
        step = self.value + self.lr * (self._as_costs(cost) - self.limit)
        self.value = step.clamp(min=0.0) if self.max_value is None else step.clamp(0.0, self.max_value)
        return self.value.clone()

    def penalty(self, costs: torch.Tensor) -> torch.Tensor:
        """lambda^T c for costs [..., m] (or [...] when m = 1), in the dtype of ``costs``."""
        mu = self.value.to(device=costs.device, dtype=costs.dtype if costs.is_floating_point() else torch.float32)
        if self.n_constraints == 1 and (costs.dim() == 0 or costs.shape[-1] != 1):
            return costs * mu[0]
        return (costs * mu).sum(-1)

    def penalised(self, reward: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
        """r - lambda^T c."""
        return reward - self.penalty(costs)

    def item(self) -> float:
        """lambda as a float (single constraint) -- for logging."""
        if self.n_constraints != 1:
            raise ValueError("item() needs a single constraint; use .value")
        return float(self.value[0])

    def state_dict(self) -> dict:
        return {"value": self.value.clone(), "limit": self.limit.clone(), "lr": self.lr, "max_value": self.max_value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"].to(self.value.device, torch.float64).clone()
        self.limit = state["limit"].to(self.limit.device, torch.float64).clone()
        self.lr, self.max_value = float(state["lr"]), state["max_value"]
