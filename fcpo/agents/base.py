"""What every trainable agent offers, and the registry ``fcpo-train --agent NAME`` reads.

An agent module registers ``(config dataclass, factory)`` under a name with
:func:`register_agent`.  The factory is called as
``factory(config, env_config, device, seed)`` where ``env_config`` is a
:class:`fcpo.envs.FairEnvConfig` (train mode) and returns an :class:`Agent`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from fcpo.policies.base import Policy


@runtime_checkable
class Agent(Protocol):
    """A trainable recommender.

    ``train_iteration(iteration)`` runs one iteration (rollouts + update) and
    returns scalar metrics for logging (e.g. ``reward``, ``cost``, ``cost_limit``,
    ``kl``); ``policy`` is the :class:`Policy` the evaluator uses;
    ``state_dict``/``load_state_dict`` hold everything needed to resume
    (networks, optimisers, RNG states, Lagrange multipliers).
    """

    config: Any
    policy: Policy

    def train_iteration(self, iteration: int) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class AgentSpec:
    name: str
    config_cls: type
    factory: Callable[..., Agent]
    description: str = ""


AGENTS: dict[str, AgentSpec] = {}


def register_agent(name: str, config_cls: type, factory: Callable[..., Agent], description: str = "") -> None:
    AGENTS[name] = AgentSpec(name, config_cls, factory, description)


def load_agent_modules() -> None:
    """Import every agent module so it registers itself (optional ones are skipped when missing)."""
    import importlib

    for module in ("fcpo.agents.cpo", "fcpo.agents.trpo", "fcpo.agents.ppo_lagrangian", "fcpo.agents.rankers",
                   "fcpo.agents.wolpertinger", "fcpo.agents.tpgr", "fcpo.agents.ialp"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def make_agent(name: str, config, env_config, device: torch.device | str = "cpu", seed: int = 0) -> Agent:
    load_agent_modules()
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(sorted(AGENTS))}")
    return AGENTS[name].factory(config, env_config, torch.device(device), seed)
