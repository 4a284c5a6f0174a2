"""Gymnasium environments: ``fcpo/MovieLensFair-v0`` (single + native vector env) and wrappers."""
from fcpo.envs.config import FairEnvConfig
from fcpo.envs.contract import DEFAULT_ENV_ID, EnvSpec, SlateVectorEnv
from fcpo.envs.env_data import EnvData, EnvDataKey, get_env_data
from fcpo.envs.movielens_fair import MovieLensFairEnv
from fcpo.envs.registration import ENV_IDS, register_envs
from fcpo.envs.vector import MovieLensFairVectorEnv
from fcpo.envs.wrappers import SafetyStepWrapper

__all__ = ["EnvSpec", "SlateVectorEnv", "DEFAULT_ENV_ID", "FairEnvConfig", "EnvData", "EnvDataKey", "get_env_data", "MovieLensFairEnv", "ENV_IDS", "register_envs",
           "MovieLensFairVectorEnv", "SafetyStepWrapper"]
