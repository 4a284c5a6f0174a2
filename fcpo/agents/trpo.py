"""TRPO baseline: the FCPO agent without the constraint (Schulman et al. 2015)."""
from __future__ import annotations

from dataclasses import dataclass

from fcpo.agents.base import param, register_agent
from fcpo.agents.cpo import FCPOAgent, FCPOConfig
from fcpo.envs.contract import EnvSpec


@dataclass
class TRPOConfig(FCPOConfig):
    """FCPO's hyper-parameters with ``constrained=False`` (α' is only reported)."""

    constrained: bool = param(False, "must stay False: TRPO ignores the constraint (use --agent fcpo)")


class TRPOAgent(FCPOAgent):
    name = "trpo"


@register_agent("trpo", TRPOConfig, description="TRPO: the same actor-critic without the fairness constraint")
def make_trpo(config: TRPOConfig, env: EnvSpec, device, seed: int) -> TRPOAgent:
    if config.constrained:
        raise ValueError("the trpo agent is unconstrained; use --agent fcpo for the constrained update")
    return TRPOAgent(config, env, device, seed)
