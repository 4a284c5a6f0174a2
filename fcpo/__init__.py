"""fcpo: constrained reinforcement learning for fair recommendation.

Importing the package registers the Gymnasium environment ids ``fcpo/...`` (string entry points:
nothing heavier than Gymnasium is imported until an env is made), so ``gymnasium.make("fcpo/...")``
works after ``import fcpo``.  :func:`load_run` (:mod:`fcpo.api`) reopens a trained run::

    import fcpo
    run = fcpo.load_run("runs/fcpo-ml-100k-a0.8-s0-20261203-101500")
    print(run.recommend(196, k=10))
"""
from fcpo._version import __version__

#: every fcpo env id -> (entry point, vector entry point), registered with Gymnasium at import
_ENV_ENTRY_POINTS = {
    "fcpo/MovieLensFair-v0": ("fcpo.envs.movielens_fair:MovieLensFairEnv",
                              "fcpo.envs.movielens_fair:MovieLensFairVectorEnv"),
    "fcpo/MovieLensSim-v0": ("fcpo.envs.simulator:MovieLensSimEnv", "fcpo.envs.simulator:MovieLensSimVectorEnv"),
}


def _register_envs() -> None:
    """Register every fcpo env id once (safe to call repeatedly); imports Gymnasium only."""
    import gymnasium as gym

    for env_id, (entry_point, vector_entry_point) in _ENV_ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)


_register_envs()

_API = ("load_run", "TrainedRun", "Recommendation", "Recommendations")


def __getattr__(name: str):
    """``fcpo.load_run`` and friends, imported on first use (they need torch)."""
    if name in _API:
        from fcpo import api

        return getattr(api, name)
    raise AttributeError(f"module 'fcpo' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
