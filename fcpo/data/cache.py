"""On-disk cache of parsed data sets: ``cache_root()/processed/<key>.npz`` (no pickle).

The key is the SHA-256 of the reader's name and version, the SHA-256 of every
source file's bytes, and the load options (JSON), so an edited file or another
column mapping is a different entry.  The file is a plain ``.npz`` (numpy
arrays only, read with ``allow_pickle=False``): interaction arrays (int32 ids
when they fit), raw ids (int64 or unicode), titles, genres, user attributes
column by column, and a JSON header.

Concurrency: the first process to miss takes an exclusive ``fcntl.flock`` on
``<key>.lock``, parses, writes to a temp file and :func:`os.replace` s it into
place; processes that started at the same time wait on the lock and then read
the finished entry -- one winner, no double work, nothing half-written visible.
An unreadable entry is removed and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from fcpo.data.dataset import RatingsData
from fcpo.data.fileio import atomic_write, exclusive_lock, file_digest

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when a reader's output changes for the same files and options
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def processed_dir() -> Path:
    from fcpo.data.sources import cache_root

    return cache_root() / "processed"


def _digest(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = file_digest(path)
    return _DIGESTS[memo]


def ratings_cache_key(reader: str, files: Iterable[Path], options: dict) -> str:
    """Hash of (reader, version, file contents, options)."""
    h = hashlib.sha256(f"fcpo-processed-v{CACHE_VERSION}\n{reader}\n".encode())
    for path in files:
        h.update(f"{Path(path).name}:{_digest(Path(path))}\n".encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def _small_int(values: np.ndarray) -> np.ndarray:
    if len(values) and values.min() >= 0 and values.max() < 2 ** 31:
        return values.astype(np.int32)
    return values


def _text(values) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    return arr.astype(str) if len(arr) else np.zeros(0, dtype="U1")


def save_ratings(path: Path, data: RatingsData, key: str) -> None:
    attrs = data.user_attributes
    columns, arrays = [], {}
    for j, col in enumerate(attrs.columns):
        values = attrs[col].to_numpy()
        kind = values.dtype.kind
        if kind in "iufb":
            arrays[f"attr_{j}"] = values
        else:  # text or mixed: as strings, missing values as ""
            arrays[f"attr_{j}"] = _text(attrs[col].astype(object).where(attrs[col].notna(), ""))
        columns.append([str(col), kind])
    header = {"key": key, "name": data.name, "source": data.source, "implicit": bool(data.implicit),
              "positive_threshold": data.positive_threshold, "genre_names": list(data.genre_names),
              "attr_columns": columns}
    raw = {f: getattr(data, f) for f in ("user_raw_ids", "item_raw_ids")}

    def write(fh):
        np.savez(fh, header=np.array(json.dumps(header)), users=_small_int(data.users),
                 items=_small_int(data.items), ratings=data.ratings.astype(np.float32),
                 timestamps=data.timestamps.astype(np.int64),
                 user_raw_ids=raw["user_raw_ids"] if raw["user_raw_ids"].dtype.kind in "iu" else _text(raw["user_raw_ids"]),
                 item_raw_ids=raw["item_raw_ids"] if raw["item_raw_ids"].dtype.kind in "iu" else _text(raw["item_raw_ids"]),
                 item_titles=_text(data.item_titles), item_genres=data.item_genres, **arrays)
    atomic_write(path, write)


def load_ratings(path: Path, key: str) -> RatingsData:
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        if header["key"] != key:
            raise ValueError(f"key {header['key']!r} != {key!r}")
        attrs = pd.DataFrame({col: (z[f"attr_{j}"] if kind in "iufb" else z[f"attr_{j}"].astype(object))
                              for j, (col, kind) in enumerate(header["attr_columns"])})
        data = RatingsData(
            name=header["name"], users=z["users"].astype(np.int64), items=z["items"].astype(np.int64),
            ratings=z["ratings"], timestamps=z["timestamps"], user_raw_ids=z["user_raw_ids"],
            item_raw_ids=z["item_raw_ids"], item_titles=z["item_titles"].astype(object),
            item_genres=z["item_genres"], genre_names=tuple(header["genre_names"]), user_attributes=attrs,
            source=header["source"], implicit=header["implicit"], positive_threshold=header["positive_threshold"])
    if len(data.users) and (data.users.max() >= data.n_users or data.items.max() >= data.n_items):
        raise ValueError("dense ids out of range")
    return data


_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError)


def _try_load(path: Path, key: str) -> RatingsData | None:
    if not path.exists():
        return None
    try:
        return load_ratings(path, key)
    except _READ_ERRORS as exc:
        log.warning("processed cache %s is unreadable (%s); rebuilding it", path, exc)
        path.unlink(missing_ok=True)
        return None


def cached_ratings(key: str, build: Callable[[], RatingsData], folder: str | os.PathLike | None = None
                   ) -> RatingsData:
    """The entry ``key`` if cached, else ``build()`` -- run by exactly one of concurrent callers -- cached."""
    folder = Path(folder) if folder is not None else processed_dir()
    path = folder / f"{key}.npz"
    data = _try_load(path, key)
    if data is not None:
        return data
    with exclusive_lock(folder / f"{key}.lock"):
        data = _try_load(path, key)  # another process may have finished it while we waited
        if data is not None:
            return data
        data = build()
        save_ratings(path, data, key)
        log.info("cached %s as %s", data.name, path)
    return data


# ---------------------------------------------------------------- episode splits

def _split_arrays(split) -> dict[str, np.ndarray]:
    out = {"user_ids": split.user_ids, "train_initial": split.train_initial, "test_initial": split.test_initial,
           "train_targets_indptr": split.train_targets.indptr, "train_targets_values": split.train_targets.values,
           "test_targets_indptr": split.test_targets.indptr, "test_targets_values": split.test_targets.values,
           "train_mask": np.packbits(split.train_mask)}
    for part in ("train_ratings", "test_ratings"):
        m = getattr(split, part)
        out.update({f"{part}_data": m.data, f"{part}_indices": m.indices, f"{part}_indptr": m.indptr})
    return out


def save_split(path: Path, split, key: str, n_ratings: int) -> None:
    header = {"key": key, "protocol": split.protocol, "n_users": split.n_users, "n_items": split.n_items,
              "n_initial": split.n_initial, "threshold": split.threshold, "dropped_users": split.dropped_users,
              "n_ratings": n_ratings}
    atomic_write(path, lambda fh: np.savez(fh, header=np.array(json.dumps(header)), **_split_arrays(split)))


def load_split(path: Path, key: str):
    import scipy.sparse as sp

    from fcpo.data.split import EpisodeSplit, Ragged

    with np.load(path, allow_pickle=False) as z:
        h = json.loads(str(z["header"]))
        if h["key"] != key:
            raise ValueError(f"key {h['key']!r} != {key!r}")
        shape = (h["n_users"], h["n_items"])
        mats = {p: sp.csr_matrix((z[f"{p}_data"], z[f"{p}_indices"], z[f"{p}_indptr"]), shape=shape)
                for p in ("train_ratings", "test_ratings")}
        return EpisodeSplit(
            protocol=h["protocol"], n_users=h["n_users"], n_items=h["n_items"], n_initial=h["n_initial"],
            threshold=h["threshold"], user_ids=z["user_ids"], train_initial=z["train_initial"],
            train_targets=Ragged(z["train_targets_indptr"], z["train_targets_values"]),
            test_initial=z["test_initial"], test_targets=Ragged(z["test_targets_indptr"], z["test_targets_values"]),
            train_mask=np.unpackbits(z["train_mask"], count=h["n_ratings"]).astype(bool),
            train_ratings=mats["train_ratings"], test_ratings=mats["test_ratings"], dropped_users=h["dropped_users"])


def cached_split(data: RatingsData, protocol: str = "fcpo", n_initial: int = 5, threshold: float | None = None,
                 train_ratio: float = 0.8, folder: str | os.PathLike | None = None):
    """:func:`fcpo.data.split.split_dataset` through the cache, keyed by the data's content and the arguments.

    The key hashes the interaction arrays (:func:`fcpo.data.embeddings.data_digest`), so it is valid for
    data from any source; same locking and atomic write as :func:`cached_ratings`.
    """
    from fcpo.data.embeddings import data_digest
    from fcpo.data.split import resolve_threshold, split_dataset

    t = resolve_threshold(data, threshold)
    args = {"protocol": protocol, "n_initial": int(n_initial), "threshold": t,
            "train_ratio": float(train_ratio) if protocol == "fcpo" else None}
    key = hashlib.sha256(f"fcpo-split-v{CACHE_VERSION}\n{data_digest(data)}\n{json.dumps(args, sort_keys=True)}"
                         .encode()).hexdigest()[:32]
    folder = Path(folder) if folder is not None else processed_dir()
    path = folder / f"split-{key}.npz"

    def attempt():
        if not path.exists():
            return None
        try:
            split = load_split(path, key)
            if len(split.train_mask) != data.n_ratings:
                raise ValueError("split of other data")
            return split
        except _READ_ERRORS as exc:
            log.warning("split cache %s is unreadable (%s); rebuilding it", path, exc)
            path.unlink(missing_ok=True)
            return None

    split = attempt()
    if split is not None:
        return split
    with exclusive_lock(folder / f"split-{key}.lock"):
        split = attempt()
        if split is None:
            split = split_dataset(data, protocol, n_initial=n_initial, threshold=t, train_ratio=train_ratio)
            save_split(path, split, key, data.n_ratings)
    return split
