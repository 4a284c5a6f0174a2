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
from fcpo.data import list_datasets, parse_columns
from fcpo.data.cache import cached_split
from fcpo.data.sources import is_file_source, load_dataset, source_fingerprint
from fcpo.data.split import SPLITS, EpisodeSplit


@dataclass(frozen=True)
class EnvDataKey:
    """The arguments that define the data an env replays."""

    dataset: str = "ml-1m"
    data_dir: str | None = None
    split: str = "fcpo"
    n_initial: int = 5
    threshold: float | None = None  # None: the data's own (1.0 for implicit logs, else 4.0)
    train_ratio: float = 0.8
    embedding_dim: int = 32
    embedding_method: str = "auto"  # "auto": BPR, or PureSVD above 2 M train positives (fcpo.data.embeddings)
    embedding_seed: int = 0
    columns: str | None = None  # column mapping of a table file (canonical text of fcpo.data.parse_columns)


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
    if not is_file_source(key.dataset) and key.dataset not in list_datasets():
        raise ValueError(f"unknown dataset {key.dataset!r}; choose one of {', '.join(list_datasets())} "
                         f"or give the path of a .csv/.tsv/.parquet/.inter/.yaml file")
    if key.columns is not None:
        parse_columns(key.columns, flag="--columns")
    from fcpo.data.embeddings import AUTO, METHODS

    if key.embedding_method not in METHODS + (AUTO,):
        raise ValueError(f"unknown embedding_method {key.embedding_method!r}; choose one of "
                         f"{', '.join(METHODS + (AUTO,))}")
    if key.split not in SPLITS:
        raise ValueError(f"unknown split {key.split!r}; choose one of {', '.join(SPLITS)}")
    if not 0.0 < key.train_ratio < 1.0:
        raise ValueError(f"train_ratio must lie strictly between 0 and 1, got {key.train_ratio!r}")
    if key.n_initial < 1:
        raise ValueError(f"n_initial (history window) must be >= 1, got {key.n_initial!r}")


def build_env_data(key: EnvDataKey, progress: bool = False) -> EnvData:
    """Load, split and embed without memoisation."""
    from fcpo.data.embeddings import MFConfig, load_embeddings, resolve_method

    validate_key(key)
    data = load_dataset(key.dataset, key.data_dir, columns=key.columns)
    split = cached_split(data, key.split, n_initial=key.n_initial, threshold=key.threshold,
                         train_ratio=key.train_ratio)
    method = resolve_method(key.embedding_method, int(split.train_ratings.nnz))
    emb = load_embeddings(data, split, MFConfig(dim=key.embedding_dim, method=method, seed=key.embedding_seed),
                          progress=progress)
    return EnvData(key=key, data=data, split=split, item_embeddings=np.ascontiguousarray(emb.item, np.float32),
                   user_embeddings=np.ascontiguousarray(emb.user, np.float32), train_counts=split.train_item_counts())


def get_env_data(key: EnvDataKey, progress: bool = False) -> EnvData:
    """Memoised :func:`build_env_data` (thread-safe)."""
    # a table file is keyed by its content too, so an edited file is never served stale
    memo = (key, source_fingerprint(key.dataset, key.data_dir, key.columns)) if is_file_source(key.dataset) else key
    with _LOCK:
        if memo not in _CACHE:
            _CACHE[memo] = build_env_data(key, progress=progress)
        return _CACHE[memo]
