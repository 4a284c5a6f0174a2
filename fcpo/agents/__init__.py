"""Trainable recommenders: FCPO, TRPO, PPO-Lagrangian, Wolpertinger, TPGR and iALP.

``make_agent(name, config, env: EnvSpec, device, seed)`` builds one; :data:`AGENTS` lists them
(the registry loads every module of this package by itself, see :mod:`fcpo.agents.base`).
"""
from fcpo.agents.base import (AGENTS, Agent, AgentConfig, AgentSpec, check_alpha_prime, config_fields, get_agent_spec,
                              make_agent, param, register_agent)

__all__ = ["AGENTS", "Agent", "AgentConfig", "AgentSpec", "check_alpha_prime", "config_fields", "get_agent_spec",
           "make_agent", "param", "register_agent"]
