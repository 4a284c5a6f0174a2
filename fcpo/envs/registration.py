"""Registration of the ``fcpo/...`` environment ids (Gymnasium 1.x has no plugin entry points)."""
from __future__ import annotations

import gymnasium as gym

ENV_IDS = ("fcpo/MovieLensFair-v0", "fcpo/MovieLensSim-v0")


def register_envs() -> None:
    """Register every fcpo environment id once; safe to call repeatedly."""
    if "fcpo/MovieLensFair-v0" not in gym.registry:
        gym.register(
            id="fcpo/MovieLensFair-v0",
            entry_point="fcpo.envs.movielens_fair:MovieLensFairEnv",
            vector_entry_point="fcpo.envs.movielens_fair:MovieLensFairVectorEnv",
        )
    if "fcpo/MovieLensSim-v0" not in gym.registry:
        gym.register(
            id="fcpo/MovieLensSim-v0",
            entry_point="fcpo.envs.simulator:MovieLensSimEnv",
            vector_entry_point="fcpo.envs.simulator:MovieLensSimVectorEnv",
        )
