"""The one registry of named data sets: adding one is one :class:`DatasetEntry`.

An entry says how to read the folder (``reader``), which file marks a complete
folder, which files the reader uses (hashed for the processed cache), where the
official archive lives with its SHA-256 (``None`` = not pinned: the download
proceeds with a warning that prints the actual hash to pin), and the licence
text shown before a download.  :func:`list_datasets` gives name -> description
(for ``fcpo-train --list-datasets``).

Checksums: ml-100k, ml-1m, ml-20m and ml-25m are the SHA-256 values pinned by
tensorflow/datasets (``tensorflow_datasets/url_checksums/movielens.txt``, with
the archive sizes below); ml-10m and ml-32m could not be verified offline and
are left unpinned on purpose (set ``FCPO_ML_10M_SHA256`` / ``FCPO_ML_32M_SHA256``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fcpo.data.dataset import RatingsData
from fcpo.data.movielens import read_ml1m, read_ml100k, read_ml_csv

MOVIELENS_LICENCE = (
    "MovieLens data sets (GroupLens Research, University of Minnesota) may be used for research only: no "
    "commercial use and no redistribution without separate permission from GroupLens, no use to identify "
    "users, and publications must cite F. M. Harper and J. A. Konstan, 'The MovieLens Datasets: History and "
    "Context', ACM TiiS 5(4), 2015. fcpo never ships the data; read the README in the archive for the full terms."
)
_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"


@dataclass(frozen=True)
class DatasetEntry:
    """Everything fcpo needs to find, fetch, verify and read one named data set."""

    name: str
    description: str
    reader: Callable[[Path, str], RatingsData]  # reader(folder, name)
    marker: str  # a folder holding this file (or marker.gz) holds the data set
    files: tuple[str, ...]  # files the reader may read (those present are hashed for the cache)
    url: str | None = None  # official archive (zip); None: not downloadable (generated or local only)
    sha256: str | None = None  # pinned SHA-256 of the archive; None: not verified (warning on download)
    size: int | None = None  # bytes of the archive (informational)
    licence: str = ""
    folder_names: tuple[str, ...] = ()  # other names of the folder inside a parent (--data-dir PARENT)
    generated: bool = False  # made by fcpo (synthetic), never downloaded
    extra: dict = field(default_factory=dict)

    def folder_candidates(self, parent: Path) -> list[Path]:
        return [parent, parent / self.name, *(parent / n for n in self.folder_names)]


REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry, replace: bool = False) -> DatasetEntry:
    """Add ``entry``; a second entry of the same name is an error unless ``replace``."""
    if entry.name in REGISTRY and not replace:
        raise ValueError(f"data set {entry.name!r} is already registered")
    if entry.sha256 is not None and (len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256)):
        raise ValueError(f"{entry.name}: sha256 must be 64 lower-case hex digits or None, got {entry.sha256!r}")
    REGISTRY[entry.name] = entry
    return entry


def get_entry(name: str) -> DatasetEntry:
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(REGISTRY)}, or give the path of a "
                         ".csv/.tsv/.parquet/.inter file or a .yaml data card")
    return REGISTRY[name]


def list_datasets() -> dict[str, str]:
    """Registered name -> one-line description."""
    return {name: entry.description for name, entry in REGISTRY.items()}


_DAT = ("ratings.dat", "movies.dat", "users.dat")
_CSV = ("ratings.csv", "movies.csv")
for _entry in (
    DatasetEntry("ml-1m", "MovieLens 1M: 6,040 users, 3,706 movies, 1,000,209 ratings (1-5), user demographics",
                 read_ml1m, "ratings.dat", _DAT, _GROUPLENS + "ml-1m.zip",
                 "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", 5_917_549, MOVIELENS_LICENCE),
    DatasetEntry("ml-100k", "MovieLens 100K: 943 users, 1,682 movies, 100,000 ratings (1-5), user demographics",
                 read_ml100k, "u.data", ("u.data", "u.item", "u.genre", "u.user"), _GROUPLENS + "ml-100k.zip",
                 "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", 4_924_029, MOVIELENS_LICENCE),
    DatasetEntry("ml-10m", "MovieLens 10M: 71,567 users, 10,681 movies, 10,000,054 ratings (0.5-5, half stars)",
                 read_ml1m, "ratings.dat", _DAT, _GROUPLENS + "ml-10m.zip", None, None, MOVIELENS_LICENCE,
                 folder_names=("ml-10M100K",)),
    DatasetEntry("ml-20m", "MovieLens 20M: 138,493 users, 27,278 movies, 20,000,263 ratings (0.5-5)",
                 read_ml_csv, "ratings.csv", _CSV, _GROUPLENS + "ml-20m.zip",
                 "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", 198_702_078, MOVIELENS_LICENCE),
    DatasetEntry("ml-25m", "MovieLens 25M: 162,541 users, 62,423 movies, 25,000,095 ratings (0.5-5)",
                 read_ml_csv, "ratings.csv", _CSV, _GROUPLENS + "ml-25m.zip",
                 "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa", 261_978_986, MOVIELENS_LICENCE),
    DatasetEntry("ml-32m", "MovieLens 32M: 200,948 users, 87,585 movies, 32,000,204 ratings (0.5-5)",
                 read_ml_csv, "ratings.csv", _CSV, _GROUPLENS + "ml-32m.zip", None, None, MOVIELENS_LICENCE),
    DatasetEntry("synthetic", "Synthetic ML-1M-format set generated by fcpo (no download; seconds; for tests)",
                 read_ml1m, "ratings.dat", _DAT, generated=True),
):
    register_dataset(_entry)
