"""fcpo: constrained reinforcement learning for fair recommendation.

Importing the package registers the Gymnasium environment ids ``fcpo/...``.
"""
from fcpo._version import __version__

from fcpo.envs.registration import register_envs as _register_envs

_register_envs()

__all__ = ["__version__"]
