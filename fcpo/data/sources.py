"""One entry point for every data set: :func:`load_dataset(name_or_path, data_dir, columns)`.

``name_or_path`` is either

* a registered name (:mod:`fcpo.data.registry`: ``ml-100k``, ``ml-1m``, ``ml-10m``,
  ``ml-20m``, ``ml-25m``, ``ml-32m``, ``synthetic``), found in this order:

  1. an explicit ``data_dir`` (the folder itself or a parent holding ``<name>/``);
  2. ``$FCPO_DATA_DIR/<name>/``;
  3. the cache ``~/.cache/fcpo/<name>/`` (``$FCPO_CACHE_DIR`` overrides the root);
  4. a download of the official archive (checksum-verified when pinned, atomic);
     ``synthetic`` is generated into the cache instead (once, under a lock);

* or a file: ``.csv`` / ``.tsv`` / ``.txt`` (``.gz`` allowed) / ``.parquet`` need
  ``columns`` (``"user=reviewerID,item=asin,rating=overall"`` or a dict);
  ``.inter`` is a RecBole atomic file (columns from its header); ``.yaml`` /
  ``.yml`` is a data card (:mod:`fcpo.data.card`).  A relative path is looked up
  relative to ``data_dir`` when given.

Every parsed data set is cached under ``cache_root()/processed/`` keyed by the
SHA-256 of its files and the options (:mod:`fcpo.data.cache`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from fcpo.data.dataset import RatingsData
from fcpo.data.registry import REGISTRY, get_entry, list_datasets
from fcpo.data.synthetic import SyntheticConfig, ensure_synthetic

log = logging.getLogger(__name__)

DATASETS = tuple(REGISTRY)  # registered names at import time; list_datasets() is always current
FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".inter", ".yaml", ".yml")


def cache_root() -> Path:
    return Path(os.environ.get("FCPO_CACHE_DIR", Path.home() / ".cache" / "fcpo"))


def is_file_source(name_or_path: str | os.PathLike) -> bool:
    """True when ``name_or_path`` names a file (by suffix, or an existing file) rather than a registered set."""
    text = str(name_or_path)
    if text in REGISTRY:
        return False
    lower = text.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    return lower.endswith(FILE_SUFFIXES) or Path(text).expanduser().is_file()


def _has_files(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file() or (folder / (marker + ".gz")).is_file()


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                     synthetic: SyntheticConfig | None = None) -> Path:
    """Return the folder holding registered data set ``name``'s files, downloading or generating it if needed."""
    entry = get_entry(name)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        for candidate in entry.folder_candidates(folder):
            if _has_files(candidate, entry.marker):
                return candidate
        raise FileNotFoundError(
            f"--data-dir {folder}: no {entry.marker}(.gz) for {name} there or in {folder / name}")
    env = os.environ.get("FCPO_DATA_DIR")
    if env:
        for candidate in entry.folder_candidates(Path(env))[1:]:
            if _has_files(candidate, entry.marker):
                return candidate
    if entry.generated:
        config = synthetic or SyntheticConfig()
        return ensure_synthetic(cache_root() / f"synthetic-{config.digest()}", config)
    folder = cache_root() / name
    if _has_files(folder, entry.marker):
        return folder
    if not download or entry.url is None:
        raise FileNotFoundError(_missing_message(name, env))
    from fcpo.data.download import download_dataset

    from fcpo.data.download import resolve_source

    log.warning("downloading %s from %s. Licence: %s", name, resolve_source(name)[0], entry.licence)
    try:
        return download_dataset(name, cache_root())
    except OSError as exc:
        raise FileNotFoundError(_missing_message(name, env) + f"\n(the download failed: {exc})") from exc


def _url_variable(name: str) -> str:
    return "FCPO_" + name.upper().replace("-", "_") + "_URL"


def _missing_message(name: str, env: str | None) -> str:
    entry = get_entry(name)
    return (
        f"MovieLens data set {name!r} not found. Provide it in one of three ways:\n"
        f"  1. pass data_dir=... / --data-dir DIR pointing at the folder with the {name} files;\n"
        f"  2. set FCPO_DATA_DIR to a folder containing {name}/ (now: {env or 'unset'});\n"
        f"  3. allow the download of the official GroupLens zip into {cache_root() / name} (needs network; "
        f"for a mirror set {_url_variable(name)} and {_url_variable(name)[:-4]}_SHA256).\n"
        f"Offline, try --dataset synthetic (generated locally, no download) to check the pipeline.\n"
        + (entry.licence or "The MovieLens licence allows research use only and forbids redistribution: "
           "fcpo never ships the data.")
    )


def _load_registered(name: str, folder: Path, cache: bool) -> RatingsData:
    entry = get_entry(name)
    if not cache:
        return entry.reader(folder, name)
    from fcpo.data.cache import cached_ratings, ratings_cache_key

    files = [p for f in entry.files for p in (folder / f, folder / (f + ".gz")) if p.is_file()]
    key = ratings_cache_key(f"registered:{name}:{entry.reader.__module__}.{entry.reader.__name__}", files, {})
    return cached_ratings(key, lambda: entry.reader(folder, name))


def _resolve_file(name_or_path, data_dir) -> Path:
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and data_dir is not None and not path.exists():
        path = Path(data_dir).expanduser() / path
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist"
                                + (f" (also looked in --data-dir {data_dir})" if data_dir is not None else ""))
    return path


def load_dataset(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, columns=None,
                 download: bool = True, synthetic: SyntheticConfig | None = None, *, cache: bool = True,
                 **table_options) -> RatingsData:
    """A registered data set by name, or an interaction file by path, as :class:`RatingsData`.

    ``columns`` (files only): ``"user=COL,item=COL[,rating=COL][,timestamp=COL]"`` or a dict; required for
    .csv/.tsv/.parquet, taken from the header for .inter, from the card for .yaml.  ``table_options`` go to
    :func:`fcpo.data.table.load_table` (``delimiter``, ``item_metadata``, ``threshold``, ``duplicates``...).
    """
    if not is_file_source(name_or_path):
        if columns is not None or table_options:
            raise ValueError(f"columns/table options apply to data files, not to the registered data set "
                             f"{name_or_path!r}")
        name = str(name_or_path)
        get_entry(name)  # unknown names fail here with the list of choices
        folder = resolve_data_dir(name, data_dir, download, synthetic)
        return _load_registered(name, folder, cache)
    path = _resolve_file(name_or_path, data_dir)
    lower = path.name.lower().removesuffix(".gz")
    if lower.endswith((".yaml", ".yml")):
        if columns is not None or table_options:
            raise ValueError(f"{path}: a data card carries its own columns and options; do not pass them too")
        from fcpo.data.card import load_card

        return load_card(path, cache=cache)
    if lower.endswith(".inter"):
        from fcpo.data.recbole import load_recbole

        if columns is not None:
            raise ValueError(f"{path}: RecBole .inter files name their columns in the header; do not pass columns")
        return load_recbole(path, cache=cache, **table_options)
    from fcpo.data.table import load_table

    if columns is None:
        raise ValueError(f"{path}: --columns is required for {path.suffix} files, e.g. "
                         "--columns user=userId,item=movieId,rating=rating,timestamp=timestamp "
                         "(or describe the file in a .yaml data card)")
    return load_table(path, columns, cache=cache, **table_options)


def source_fingerprint(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, columns=None,
                       **table_options) -> str:
    """A short hash identifying what :func:`load_dataset` would read: file contents (SHA-256) + options.

    For files (and data cards, with the files they name) this changes when a file's bytes change, so a
    memo keyed on it never serves stale data; for registered names it is the name and ``data_dir``.
    """
    import hashlib
    import json

    from fcpo.data.cache import ratings_cache_key
    from fcpo.data.columns import parse_columns

    if not is_file_source(name_or_path):
        return hashlib.sha256(json.dumps([str(name_or_path), str(data_dir)]).encode()).hexdigest()[:16]
    path = _resolve_file(name_or_path, data_dir)
    files = [path]
    if path.name.lower().endswith((".yaml", ".yml")):
        from fcpo.data.card import read_card

        card = read_card(path)
        files += [card.path] + ([Path(card.item_metadata["path"])] if card.item_metadata else [])
    elif path.name.lower().endswith(".inter") and path.with_suffix(".item").is_file():
        files.append(path.with_suffix(".item"))
    cmap = parse_columns(columns)
    return ratings_cache_key("fingerprint", [f for f in files if f.is_file()],
                             {"columns": cmap.to_text() if cmap else None, **table_options})[:16]


__all__ = ["DATASETS", "source_fingerprint", "FILE_SUFFIXES", "cache_root", "is_file_source", "list_datasets", "load_dataset",
           "resolve_data_dir"]
