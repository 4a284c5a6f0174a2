"""Keyword options of the fcpo envs: the shared data/layout fields once, then each env's own.

``SlateDataConfig`` holds what every slate env reads (data set, split, embeddings, K, T, mode,
the G0/G1 grouping); :class:`FairEnvConfig` adds the replay rewards, :class:`SimEnvConfig` the
simulator's preset and knobs.  ``from_kwargs`` rejects an unknown option with Python's own wording
(``got an unexpected keyword argument 'NAME'``) so that wrappers which probe optional arguments
(TorchRL drops ``frameskip`` on that message) keep working; every numeric option must be finite.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from fcpo.data.groups import make_grouping
from fcpo.envs.base import MODES, check_positive_int
from fcpo.envs.env_data import EnvData, EnvDataKey, get_env_data
from fcpo.envs.replay import REWARDS, SlateReplayCore
from fcpo.envs.sim.core import SimCore
from fcpo.envs.sim.user_model import PARAM_NAMES, SIM_PRESETS, SimData, SimParams, get_sim_data


def _check_number(name: str, value, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"option {name} must be a number, got {value!r}")
    if not np.isfinite(float(value)):
        raise ValueError(f"option {name} must be finite, got {value!r}")
    if integer and not isinstance(value, (int, np.integer)):
        raise ValueError(f"option {name} must be an integer, got {value!r}")


@dataclass(frozen=True)
class SlateDataConfig:
    """The data and layout options every fcpo slate env shares (defaults: the FCPO paper, K = 5, T = 10)."""

    dataset: str = "ml-1m"
    data_dir: str | None = None
    slate_size: int = 5
    horizon: int = 10
    mode: str = "train"
    popular_ratio: float = 0.2
    grouping: str = "static"
    regroup_every: int = 1
    split: str = "fcpo"
    n_initial: int = 5
    threshold: float | None = None
    train_ratio: float = 0.8
    embedding_dim: int = 32
    embedding_method: str = "auto"
    embedding_seed: int = 0
    columns: str | None = None
    action_mask_in_info: bool = True  # False: no dense info["action_mask"] (item_mask() still works)

    #: what the error messages call this env
    env_name = "MovieLensEnv"
    _INT_FIELDS = ("slate_size", "horizon", "regroup_every", "n_initial", "embedding_dim", "embedding_seed")
    _FLOAT_FIELDS = ("popular_ratio", "threshold", "train_ratio")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in self._INT_FIELDS:
            _check_number(name, getattr(self, name), integer=True)
        for name in self._FLOAT_FIELDS:
            if getattr(self, name) is not None or name != "threshold":
                _check_number(name, getattr(self, name))
        if self.columns is not None:  # canonical text: hashable, and the same mapping gives the same key
            from fcpo.data import parse_columns

            object.__setattr__(self, "columns", parse_columns(self.columns, flag="columns").to_text())
        for name in ("slate_size", "horizon", "regroup_every"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.action_mask_in_info, (bool, np.bool_)):
            raise ValueError(f"option action_mask_in_info must be True or False, got {self.action_mask_in_info!r}")

    @classmethod
    def from_kwargs(cls, **kwargs):
        """The config from an env's keyword arguments; an unknown one raises TypeError in Python's wording."""
        names = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in names:
                raise TypeError(f"{cls.env_name}() got an unexpected keyword argument {key!r}; "
                                f"valid options: {', '.join(sorted(names))}")
        if kwargs.get("data_dir") is not None:
            kwargs["data_dir"] = str(kwargs["data_dir"])
        return cls(**kwargs)

    def data_key(self) -> EnvDataKey:
        return EnvDataKey(self.dataset, self.data_dir, self.split, self.n_initial, self.threshold, self.train_ratio,
                          self.embedding_dim, self.embedding_method, self.embedding_seed, self.columns)

    def make_grouping(self, env_data: EnvData):
        return make_grouping(self.grouping, env_data.train_counts, self.popular_ratio, self.regroup_every)


@dataclass(frozen=True)
class FairEnvConfig(SlateDataConfig):
    """Options of ``fcpo/MovieLensFair-v0``: the shared data options plus the replay reward."""

    reward: str = "hit"
    rating_alpha: float = 0.1
    position_discount: bool = False

    env_name = "MovieLensFairEnv"
    _FLOAT_FIELDS = SlateDataConfig._FLOAT_FIELDS + ("rating_alpha",)

    def __post_init__(self):
        super().__post_init__()
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if not isinstance(self.position_discount, (bool, np.bool_)):
            raise ValueError(f"position_discount must be True or False, got {self.position_discount!r}")

    def load(self) -> EnvData:
        return get_env_data(self.data_key())

    def make_core(self, num_envs: int, time_limit: int | None = None) -> SlateReplayCore:
        """Load the data (memoised) and build the replay core for ``num_envs`` episodes."""
        env_data = self.load()
        return SlateReplayCore(env_data, num_envs, self.slate_size, self.horizon, self.mode, self.reward,
                               self.make_grouping(env_data), self.rating_alpha, self.position_discount, time_limit)


@dataclass(frozen=True)
class SimEnvConfig(SlateDataConfig):
    """Options of ``fcpo/MovieLensSim-v0``: the shared data options plus a preset
    (``noisy`` | ``impatient`` | ``popular``) whose :class:`SimParams` fields can be overridden one by one."""

    preset: str = "noisy"
    sim_dim: int = 16  # PMF factors of the user model
    sim_seed: int = 0  # PMF training seed
    # overrides of the preset (None = the preset's value)
    click_temperature: float | None = None
    rating_center: float | None = None
    popularity_sensitivity: float | None = None
    patience: int | None = None
    drift_rate: float | None = None
    drift_noise: float | None = None

    env_name = "MovieLensSimEnv"
    _INT_FIELDS = SlateDataConfig._INT_FIELDS + ("sim_dim", "sim_seed")

    def __post_init__(self):
        if self.preset not in SIM_PRESETS:
            raise ValueError(f"unknown simulator preset {self.preset!r}; choose one of {', '.join(SIM_PRESETS)}")
        super().__post_init__()
        check_positive_int("sim_dim", self.sim_dim)
        self.params()  # validates the overrides

    @classmethod
    def from_fair(cls, fair_config, preset: str = "noisy", **overrides) -> "SimEnvConfig":
        """The simulator over the same data as a :class:`FairEnvConfig` (its reward options are replay-only
        and dropped)."""
        names = {f.name for f in fields(cls)}
        base = {k: v for k, v in asdict(fair_config).items() if k in names}
        return cls.from_kwargs(**{**base, "preset": preset, **overrides})

    def params(self) -> SimParams:
        over = {n: getattr(self, n) for n in PARAM_NAMES if getattr(self, n) is not None}
        return replace(SIM_PRESETS[self.preset], **over)

    def load(self) -> SimData:
        return get_sim_data(self.data_key(), self.sim_dim, self.sim_seed)

    def make_core(self, num_envs: int, time_limit: int | None = None, click_model=None) -> SimCore:
        """Load the user model (memoised) and build the simulator core for ``num_envs`` sessions."""
        sim = self.load()
        return SimCore(sim, num_envs, self.slate_size, self.horizon, self.mode, self.make_grouping(sim.env),
                       self.params(), click_model, time_limit)
