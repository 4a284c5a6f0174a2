"""The MovieLens user simulator: its user model (:mod:`.user_model`) and its batched core (:mod:`.core`)."""
from fcpo.envs.sim.core import SimCore
from fcpo.envs.sim.user_model import SIM_PRESETS, SimData, SimParams, build_sim_data, calibrate_line, get_sim_data

__all__ = ["SimCore", "SIM_PRESETS", "SimData", "SimParams", "build_sim_data", "calibrate_line", "get_sim_data"]
