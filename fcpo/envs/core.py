"""Old import path of the replay core: see :mod:`fcpo.envs.replay` and :mod:`fcpo.envs.base`."""
from fcpo.envs.base import COST_NAME, MODES, SlateCore, validate_slates
from fcpo.envs.replay import REWARDS, SlateReplayCore

__all__ = ["COST_NAME", "MODES", "REWARDS", "SlateCore", "SlateReplayCore", "validate_slates"]
