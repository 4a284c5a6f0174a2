"""TRPO baseline: the FCPO agent without the constraint (Schulman et al. 2015)."""
from __future__ import annotations

from dataclasses import dataclass

from fcpo.agents.base import register_agent
from fcpo.agents.cpo import FCPOAgent, FCPOConfig


@dataclass
class TRPOConfig(FCPOConfig):
    """FCPO's hyper-parameters with ``constrained=False`` (α' is only reported)."""

    constrained: bool = False


class TRPOAgent(FCPOAgent):
    name = "trpo"


def make_trpo(config: TRPOConfig, env_config, device, seed: int) -> TRPOAgent:
    if config.constrained:
        raise ValueError("the trpo agent is unconstrained; use --agent fcpo for the constrained update")
    return TRPOAgent(config, env_config, device, seed)


register_agent("trpo", TRPOConfig, make_trpo, "TRPO: the same actor-critic without the fairness constraint")
