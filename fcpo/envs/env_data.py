"""Everything an environment reads, built once per configuration and shared by every copy.

Loading, splitting and embedding a data set takes seconds; ``SyncVectorEnv``
and agents create many env copies, so :func:`get_env_data` memoises on the
data-defining arguments only (never on mutable per-env state).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from fcpo.data.dataset import RatingsData
from fcpo.data.sources import DATASETS, load_dataset
from fcpo.data.split import SPLITS, EpisodeSplit


@dataclass(frozen=True)
class EnvDataKey:
    """The arguments that define the data an env replays."""

    dataset: str = "ml-1m"
    data_dir: str | None = None
    split: str = "fcpo"
    n_initial: int = 5
    threshold: float = 4.0
    train_ratio: float = 0.8
    embedding_dim: int = 32
    embedding_method: str = "bpr"
    embedding_seed: int = 0


@dataclass(frozen=True)
class EnvData:
    """Ratings, the episode split, item/user embeddings and training-period item counts."""

    key: EnvDataKey
    data: RatingsData
    split: EpisodeSplit
    item_embeddings: np.ndarray  # float32 [n_items, d]
    user_embeddings: np.ndarray  # float32 [n_users, d]
    train_counts: np.ndarray  # int64 [n_items]

    @property
    def n_items(self) -> int:
        return self.data.n_items

    @property
    def dim(self) -> int:
        return self.item_embeddings.shape[1]


_CACHE: dict[EnvDataKey, EnvData] = {}
_LOCK = threading.Lock()


def validate_key(key: EnvDataKey) -> None:
    if key.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {key.dataset!r}; choose one of {', '.join(DATASETS)}")
    if key.split not in SPLITS:
        raise ValueError(f"unknown split {key.split!r}; choose one of {', '.join(SPLITS)}")
    if not 0.0 < key.train_ratio < 1.0:
        raise ValueError(f"train_ratio must lie strictly between 0 and 1, got {key.train_ratio!r}")
    if key.n_initial < 1:
        raise ValueError(f"n_initial (history window) must be >= 1, got {key.n_initial!r}")


def build_env_data(key: EnvDataKey, progress: bool = False) -> EnvData:
    """Load, split and embed without memoisation."""
    from fcpo.data.embeddings import MFConfig, load_embeddings

    validate_key(key)
    data = load_dataset(key.dataset, key.data_dir)
    if key.split == "fcpo":
        split = SPLITS[key.split](data, n_initial=key.n_initial, threshold=key.threshold, train_ratio=key.train_ratio)
    else:
        split = SPLITS[key.split](data, n_initial=key.n_initial, threshold=key.threshold)
    if split.n_episode_users == 0:
        raise ValueError(f"{key.dataset}: no user has enough positives (rating >= {key.threshold}) for the split")
    emb = load_embeddings(data, split, MFConfig(dim=key.embedding_dim, method=key.embedding_method,
                                                seed=key.embedding_seed), progress=progress)
    return EnvData(key=key, data=data, split=split, item_embeddings=np.ascontiguousarray(emb.item, np.float32),
                   user_embeddings=np.ascontiguousarray(emb.user, np.float32), train_counts=split.train_item_counts())


def get_env_data(key: EnvDataKey, progress: bool = False) -> EnvData:
    """Memoised :func:`build_env_data` (thread-safe)."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build_env_data(key, progress=progress)
        return _CACHE[key]
