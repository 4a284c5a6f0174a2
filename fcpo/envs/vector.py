"""Old import path of the native batched replay env: see :mod:`fcpo.envs.movielens_fair` and
:mod:`fcpo.envs.shells`."""
from fcpo.envs.movielens_fair import MovieLensFairVectorEnv
from fcpo.envs.shells import VectorSlateEnv, batch_layout

__all__ = ["MovieLensFairVectorEnv", "VectorSlateEnv", "batch_layout"]
