"""Keyword arguments shared by the single and the vector MovieLens fairness envs."""
from __future__ import annotations

from dataclasses import dataclass, fields

from fcpo.data.groups import make_grouping
from fcpo.envs.env_data import EnvData, EnvDataKey, get_env_data


@dataclass(frozen=True)
class FairEnvConfig:
    """Options of ``fcpo/MovieLensFair-v0`` (defaults: the FCPO paper, K = 5, T = 10)."""

    dataset: str = "ml-1m"
    data_dir: str | None = None
    slate_size: int = 5
    horizon: int = 10
    mode: str = "train"
    reward: str = "hit"
    popular_ratio: float = 0.2
    grouping: str = "static"
    regroup_every: int = 1
    rating_alpha: float = 0.1
    position_discount: bool = False
    split: str = "fcpo"
    n_initial: int = 5
    threshold: float = 4.0
    train_ratio: float = 0.8
    embedding_dim: int = 32
    embedding_method: str = "bpr"
    embedding_seed: int = 0

    @classmethod
    def from_kwargs(cls, **kwargs) -> "FairEnvConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown MovieLensFair option(s) {unknown}; valid: {sorted(names)}")
        if kwargs.get("data_dir") is not None:
            kwargs["data_dir"] = str(kwargs["data_dir"])
        return cls(**kwargs)

    def data_key(self) -> EnvDataKey:
        return EnvDataKey(self.dataset, self.data_dir, self.split, self.n_initial, self.threshold, self.train_ratio,
                          self.embedding_dim, self.embedding_method, self.embedding_seed)

    def load(self) -> EnvData:
        return get_env_data(self.data_key())

    def make_grouping(self, env_data: EnvData):
        return make_grouping(self.grouping, env_data.train_counts, self.popular_ratio, self.regroup_every)
