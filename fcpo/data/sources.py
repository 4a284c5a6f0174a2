"""Where a data set comes from, in this order:

1. an explicit ``data_dir`` argument (or ``--data-dir``);
2. ``$FCPO_DATA_DIR/<name>/``;
3. the cache ``~/.cache/fcpo/<name>/`` (``$FCPO_CACHE_DIR`` overrides the root);
4. a download of the official GroupLens zip (checksum-verified, atomic).

``synthetic`` is generated into the cache instead of downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

from fcpo.data.dataset import RatingsData
from fcpo.data.movielens import read_ml100k, read_ml1m
from fcpo.data.synthetic import SyntheticConfig, write_synthetic

DATASETS = ("ml-1m", "ml-100k", "synthetic")
_MARKER = {"ml-1m": "ratings.dat", "ml-100k": "u.data", "synthetic": "ratings.dat"}


def cache_root() -> Path:
    return Path(os.environ.get("FCPO_CACHE_DIR", Path.home() / ".cache" / "fcpo"))


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _has_files(folder: Path, name: str) -> bool:
    marker = _MARKER[name]
    return (folder / marker).is_file() or (folder / (marker + ".gz")).is_file()


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                     synthetic: SyntheticConfig | None = None) -> Path:
    """Return the folder holding ``name``'s files, downloading or generating it if needed."""
    _check_name(name)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        # accept both the data set folder itself and a parent holding <name>/
        for candidate in (folder, folder / name):
            if _has_files(candidate, name):
                return candidate
        raise FileNotFoundError(
            f"--data-dir {folder}: no {_MARKER[name]}(.gz) for {name} there or in {folder / name}")
    env = os.environ.get("FCPO_DATA_DIR")
    if env and _has_files(Path(env) / name, name):
        return Path(env) / name
    if name == "synthetic":
        config = synthetic or SyntheticConfig()
        folder = cache_root() / f"synthetic-{config.digest()}"
        if not _has_files(folder, name):
            write_synthetic(folder, config)
        return folder
    folder = cache_root() / name
    if _has_files(folder, name):
        return folder
    if not download:
        raise FileNotFoundError(_missing_message(name, env))
    from fcpo.data.download import download_dataset

    try:
        return download_dataset(name, cache_root())
    except OSError as exc:
        raise FileNotFoundError(_missing_message(name, env) + f"\n(the download failed: {exc})") from exc


def _missing_message(name: str, env: str | None) -> str:
    return (
        f"MovieLens data set {name!r} not found. Provide it in one of three ways:\n"
        f"  1. pass data_dir=... / --data-dir DIR pointing at the folder with the {name} files;\n"
        f"  2. set FCPO_DATA_DIR to a folder containing {name}/ (now: {env or 'unset'});\n"
        f"  3. allow the download of the official GroupLens zip into {cache_root() / name} (needs network).\n"
        "The MovieLens licence allows research use only and forbids redistribution: fcpo never ships the data."
    )


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                 synthetic: SyntheticConfig | None = None) -> RatingsData:
    """Load ``ml-1m``, ``ml-100k`` or ``synthetic`` into :class:`RatingsData`."""
    folder = resolve_data_dir(name, data_dir, download, synthetic)
    if name == "ml-100k":
        return read_ml100k(folder, name=name)
    return read_ml1m(folder, name=name)
