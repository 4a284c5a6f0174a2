"""Readers for the MovieLens-1M and MovieLens-100K file formats.

ML-1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
(``MovieID::Title::Genres`` with ``|``-separated genres) and ``users.dat``
(``UserID::Gender::Age::Occupation::Zip-code``); ``::``-separated, latin-1, plain
or gzip (``ratings.dat.gz``).  ML-100K: ``u.data`` (tab-separated), ``u.item``
(``|``-separated, 19 genre flags), ``u.genre`` and ``u.user``.
Both become one :class:`~fcpo.data.dataset.RatingsData`; items are the rated ones.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd

from fcpo.data.dataset import RatingsData, densify

ML1M_GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def _find(folder: Path, name: str, required: bool = True) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"{folder}: neither '{name}' nor '{name}.gz' exists")
    return None


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return fh.read().decode("latin-1")


def _check_fields(path: Path, text: str, sep: str, n_fields: int) -> list[str]:
    """Split lines; raise with the file and 1-based line number of the first malformed line."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if line.count(sep) < n_fields - 1:
            raise ValueError(f"{path}, line {number}: expected {n_fields} '{sep}'-separated fields, got {line!r}")
    return lines


def _numeric_table(path: Path, sep: str, columns: list[str]) -> pd.DataFrame:
    text = _read_text(path)
    if sep != "\t":
        text = text.replace(sep, "\t")
    try:  # fast path: clean numeric files
        frame = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=columns, engine="c", dtype=np.float64)
    except (ValueError, pd.errors.ParserError):
        try:  # slow path, only to locate the offending line
            frame = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=columns, engine="c", dtype=str,
                                keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise ValueError(f"{path}: cannot parse as {len(columns)} '{sep}'-separated fields: {exc}") from None
        frame = frame.apply(pd.to_numeric, errors="coerce")
    bad = frame.isna().any(axis=1).to_numpy()
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise ValueError(f"{path}, line {line}: expected {len(columns)} numeric '{sep}'-separated fields")
    return frame


def _ratings(path: Path, sep: str) -> pd.DataFrame:
    frame = _numeric_table(path, sep, ["user", "item", "rating", "timestamp"])
    bad = ~frame["rating"].between(0, 5).to_numpy()
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise ValueError(f"{path}, line {line}: rating {frame['rating'].iloc[line - 1]} is outside 0..5")
    return frame


def _assemble(name, frame, item_table, genre_names, genre_matrix, user_table) -> RatingsData:
    users, user_raw = densify(frame["user"].to_numpy(np.int64))
    items, item_raw = densify(frame["item"].to_numpy(np.int64))
    position = pd.Index(item_table["item"].to_numpy(np.int64))
    rows = position.get_indexer(item_raw)
    titles = np.array(["<unknown>"] * len(item_raw), dtype=object)
    genres = np.zeros((len(item_raw), len(genre_names)), dtype=bool)
    known = rows >= 0
    titles[known] = item_table["title"].to_numpy(object)[rows[known]]
    genres[known] = genre_matrix[rows[known]]
    if user_table is not None:
        attrs = user_table.set_index("user").reindex(user_raw).reset_index(drop=True)
    else:
        attrs = pd.DataFrame(index=np.arange(len(user_raw)))
    attrs.insert(0, "raw_id", user_raw)
    return RatingsData(
        name=name,
        users=users,
        items=items,
        ratings=frame["rating"].to_numpy(np.float32),
        timestamps=frame["timestamp"].to_numpy(np.int64),
        user_raw_ids=user_raw,
        item_raw_ids=item_raw,
        item_titles=titles,
        item_genres=genres,
        genre_names=tuple(genre_names),
        user_attributes=attrs,
    )


def read_ml1m(folder: str | Path, name: str = "ml-1m") -> RatingsData:
    """Read an ML-1M-format folder (also used for the synthetic data set)."""
    folder = Path(folder)
    frame = _ratings(_find(folder, "ratings.dat"), "::")
    movies_path = _find(folder, "movies.dat")
    lines = _check_fields(movies_path, _read_text(movies_path), "::", 3)
    ids, titles, genre_lists = [], [], []
    for number, line in enumerate(lines, start=1):
        head, _, genres = line.rpartition("::")
        movie_id, _, title = head.partition("::")
        try:
            ids.append(int(movie_id))
        except ValueError:
            raise ValueError(f"{movies_path}, line {number}: MovieID {movie_id!r} is not an integer") from None
        titles.append(title)
        genre_lists.append([g for g in genres.split("|") if g])
    names = list(ML1M_GENRES) + sorted({g for gl in genre_lists for g in gl} - set(ML1M_GENRES))
    column = {g: j for j, g in enumerate(names)}
    matrix = np.zeros((len(ids), len(names)), dtype=bool)
    for row, gl in enumerate(genre_lists):
        matrix[row, [column[g] for g in gl]] = True
    item_table = pd.DataFrame({"item": ids, "title": titles})
    user_table = None
    users_path = _find(folder, "users.dat", required=False)
    if users_path is not None:
        rows = [line.split("::") for line in _check_fields(users_path, _read_text(users_path), "::", 5)]
        user_table = pd.DataFrame(rows, columns=["user", "gender", "age", "occupation", "zip"])
        for col in ("user", "age", "occupation"):
            user_table[col] = pd.to_numeric(user_table[col], errors="raise")
    return _assemble(name, frame, item_table, names, matrix, user_table)


def read_ml100k(folder: str | Path, name: str = "ml-100k") -> RatingsData:
    """Read an ML-100K folder (``u.data``, ``u.item``, ``u.genre``, ``u.user``)."""
    folder = Path(folder)
    frame = _ratings(_find(folder, "u.data"), "\t")
    genre_path = _find(folder, "u.genre", required=False)
    if genre_path is not None:
        genre_names = [line.split("|")[0] for line in _read_text(genre_path).splitlines() if line.strip()]
    else:
        genre_names = ["unknown"] + list(ML1M_GENRES)
    item_path = _find(folder, "u.item")
    n_fields = 5 + len(genre_names)
    lines = _check_fields(item_path, _read_text(item_path), "|", n_fields)
    ids, titles, flags = [], [], []
    for number, line in enumerate(lines, start=1):
        parts = line.split("|")
        try:
            ids.append(int(parts[0]))
            flags.append([int(x) for x in parts[-len(genre_names):]])
        except ValueError:
            raise ValueError(f"{item_path}, line {number}: non-integer id or genre flag in {line!r}") from None
        titles.append(parts[1])
    item_table = pd.DataFrame({"item": ids, "title": titles})
    user_table = None
    user_path = _find(folder, "u.user", required=False)
    if user_path is not None:
        rows = [line.split("|") for line in _check_fields(user_path, _read_text(user_path), "|", 5)]
        user_table = pd.DataFrame(rows, columns=["user", "age", "gender", "occupation", "zip"])
        for col in ("user", "age"):
            user_table[col] = pd.to_numeric(user_table[col], errors="raise")
    return _assemble(name, frame, item_table, genre_names, np.asarray(flags, dtype=bool), user_table)
