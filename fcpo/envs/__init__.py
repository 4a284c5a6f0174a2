"""Gymnasium environments ``fcpo/MovieLensFair-v0`` (replay) and ``fcpo/MovieLensSim-v0`` (simulator).

Layout, bottom to top: :mod:`.env_data` (data, split, embeddings) -> :mod:`.base` (the shared core,
``COST_NAME``, slate checks) -> the cores :mod:`.replay` and :mod:`.sim` (user model, core) ->
:mod:`.config` (options) -> :mod:`.shells` (one single env, one batched env) -> the envs
:mod:`.movielens_fair` and :mod:`.simulator` -> :mod:`.registration`.  :mod:`.contract` states what
agents may rely on.
"""
from fcpo.envs.base import COST_NAME, SlateCore, validate_slates
from fcpo.envs.config import FairEnvConfig, SimEnvConfig, SlateDataConfig
from fcpo.envs.contract import DEFAULT_ENV_ID, EnvSpec, SlateVectorEnv
from fcpo.envs.env_data import EnvData, EnvDataKey, get_env_data
from fcpo.envs.movielens_fair import MovieLensFairEnv, MovieLensFairVectorEnv
from fcpo.envs.registration import ENV_IDS, register_envs
from fcpo.envs.replay import SlateReplayCore
from fcpo.envs.shells import SlateEnv, VectorSlateEnv
from fcpo.envs.simulator import MovieLensSimEnv, MovieLensSimVectorEnv
from fcpo.envs.wrappers import SafetyStepWrapper

__all__ = ["EnvSpec", "SlateVectorEnv", "DEFAULT_ENV_ID", "COST_NAME", "SlateCore", "SlateReplayCore",
           "validate_slates", "SlateDataConfig", "FairEnvConfig", "SimEnvConfig", "EnvData", "EnvDataKey",
           "get_env_data", "SlateEnv", "VectorSlateEnv", "MovieLensFairEnv", "MovieLensFairVectorEnv",
           "MovieLensSimEnv", "MovieLensSimVectorEnv", "ENV_IDS", "register_envs", "SafetyStepWrapper"]
