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
