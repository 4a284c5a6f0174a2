"""Readers for the MovieLens file formats.

* ML-1M / ML-10M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``),
  ``movies.dat`` (``MovieID::Title::Genres``, ``|``-separated genres) and, ML-1M
  only, ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``);
* ML-100K: ``u.data`` (tab-separated), ``u.item`` (``|``-separated, 19 genre
  flags), ``u.genre`` and ``u.user``;
* ML-20M / ML-25M / ML-32M (and ml-latest): ``ratings.csv``
  (``userId,movieId,rating,timestamp``) and ``movies.csv`` (``movieId,title,genres``).

Any file may be gzip-compressed (``ratings.dat.gz``); a corrupt ``.gz`` is a
:class:`~fcpo.data.fileio.DataFormatError` naming it.  Text is decoded as
strict UTF-8, else latin-1.  Ids are parsed as exact non-negative integers
(``2.5`` or ``-3`` is an error naming the file and line, never user 2), ratings
must lie in 0..5, empty files are errors.  A rated movie missing from the movie
file keeps the title ``<unknown>`` and no genres, with a warning giving the count.
Duplicate (user, movie, timestamp) rows: the last is kept, with a warning.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from fcpo.data.columns import ColumnMap, Where, parse_ids, parse_ratings, parse_timestamps
from fcpo.data.dataset import RatingsData
from fcpo.data.fileio import DataFormatError, read_bytes, read_text
from fcpo.data.table import ItemMetadata, build_ratings, genre_matrix, read_item_metadata, read_text_columns

ML1M_GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_RATING_COLUMNS = ("user", "item", "rating", "timestamp")


def _find(folder: Path, name: str, required: bool = True) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"{folder}: neither '{name}' nor '{name}.gz' exists")
    return None


def _lines(path: Path, sep: str, n_fields: int) -> list[str]:
    """Non-empty trailing-stripped lines; raise with the file and 1-based line of the first malformed one."""
    lines = read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFormatError(f"{path}: the file is empty")
    for number, line in enumerate(lines, start=1):
        if line.count(sep) < n_fields - 1:
            raise DataFormatError(f"{path}, line {number}: expected {n_fields} '{sep}'-separated fields, got {line!r}")
    return lines


def _split_strings(path: Path, sep: str, n_fields: int) -> pd.DataFrame:
    """A headerless ``sep``-separated file as ``n_fields`` string columns (vectorised)."""
    raw = read_bytes(path)
    if not raw.strip():
        raise DataFormatError(f"{path}: the file is empty")
    if sep != "\t":
        raw = raw.replace(sep.encode(), b"\t")
    names = list(_RATING_COLUMNS[:n_fields])
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            table = pacsv.read_csv(io.BytesIO(raw), read_options=pacsv.ReadOptions(column_names=names, encoding="latin-1"),
                                   parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                                   convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                                        strings_can_be_null=False))
            return table.to_pandas(types_mapper=pd.ArrowDtype)
        except pa.ArrowInvalid:
            pass  # locate the bad line below
    except ImportError:
        try:
            frame = pd.read_csv(io.BytesIO(raw), sep="\t", header=None, names=names, dtype=str,
                                keep_default_na=False, na_values=[], quoting=3, encoding="latin-1")
            last = frame[names[-1]]
            if (last.isna() | last.eq("")).any():  # pandas pads short lines: name the first one, if any
                _lines(path, sep, n_fields)
            return frame
        except (ValueError, pd.errors.ParserError):
            pass
    _lines(path, sep, n_fields)  # raises with the line number of the first line with too few fields
    lines = read_text(path).splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip() and line.count(sep) != n_fields - 1:
            raise DataFormatError(f"{path}, line {number}: expected {n_fields} '{sep}'-separated fields, got {line!r}")
    raise DataFormatError(f"{path}: cannot parse as {n_fields} '{sep}'-separated fields")


def _check_rating_range(ratings: np.ndarray, where: Where) -> None:
    bad = (ratings < 0) | (ratings > 5)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{where(row)}: rating {ratings[row]:g} is outside 0..5")


def _ratings(path: Path, sep: str):
    """(users, items, ratings, timestamps, where) of a headerless ratings file."""
    frame = _split_strings(path, sep, 4)
    where = Where(str(path), first_line=1)
    users = parse_ids(frame["user"], "UserID", where, integer_ids=True, nonnegative=True)
    items = parse_ids(frame["item"], "MovieID", where, integer_ids=True, nonnegative=True)
    ratings = parse_ratings(frame["rating"], "Rating", where)
    _check_rating_range(ratings, where)
    times = parse_timestamps(frame["timestamp"], "Timestamp", where)
    return users, items, ratings, times, where


def _movie_id(text: str, path: Path, number: int) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise DataFormatError(f"{path}, line {number}: MovieID {text!r} is not a non-negative integer")
    return int(text)


def read_ml1m(folder: str | Path, name: str = "ml-1m") -> RatingsData:
    """Read an ML-1M / ML-10M-format folder (also used for the synthetic data set)."""
    folder = Path(folder)
    users, items, ratings, times, where = _ratings(_find(folder, "ratings.dat"), "::")
    movies_path = _find(folder, "movies.dat")
    ids, titles, genre_lists = [], [], []
    for number, line in enumerate(_lines(movies_path, "::", 3), start=1):
        head, _, genres = line.rpartition("::")
        movie_id, _, title = head.partition("::")
        ids.append(_movie_id(movie_id, movies_path, number))
        titles.append(title)
        genre_lists.append([g for g in genres.split("|") if g and g != "(no genres listed)"])
    matrix, names = genre_matrix(genre_lists, leading=ML1M_GENRES)
    metadata = ItemMetadata(ids=np.asarray(ids, dtype=np.int64), titles=np.asarray(titles, dtype=object),
                            genres=matrix, genre_names=names)
    user_table = None
    users_path = _find(folder, "users.dat", required=False)
    if users_path is not None:
        rows = [line.split("::")[:5] for line in _lines(users_path, "::", 5)]
        user_table = pd.DataFrame(rows, columns=["user", "gender", "age", "occupation", "zip"])
        for col in ("user", "age", "occupation"):
            user_table[col] = pd.to_numeric(user_table[col], errors="raise")
    return build_ratings(name, users, items, ratings, times, source=str(folder), metadata=metadata,
                         user_table=user_table, where=where)


def read_ml100k(folder: str | Path, name: str = "ml-100k") -> RatingsData:
    """Read an ML-100K folder (``u.data``, ``u.item``, ``u.genre``, ``u.user``)."""
    folder = Path(folder)
    users, items, ratings, times, where = _ratings(_find(folder, "u.data"), "\t")
    genre_path = _find(folder, "u.genre", required=False)
    if genre_path is not None:
        genre_names = [line.split("|")[0] for line in read_text(genre_path).splitlines() if line.strip()]
    else:
        genre_names = ["unknown"] + list(ML1M_GENRES)
    item_path = _find(folder, "u.item")
    n_fields = 5 + len(genre_names)
    ids, titles, flags = [], [], []
    for number, line in enumerate(_lines(item_path, "|", n_fields), start=1):
        parts = line.split("|")
        ids.append(_movie_id(parts[0], item_path, number))
        try:
            flags.append([int(x) for x in parts[-len(genre_names):]])
        except ValueError:
            raise DataFormatError(f"{item_path}, line {number}: non-integer genre flag in {line!r}") from None
        titles.append(parts[1])
    metadata = ItemMetadata(ids=np.asarray(ids, dtype=np.int64), titles=np.asarray(titles, dtype=object),
                            genres=np.asarray(flags, dtype=bool).reshape(len(ids), len(genre_names)),
                            genre_names=tuple(genre_names))
    user_table = None
    user_path = _find(folder, "u.user", required=False)
    if user_path is not None:
        rows = [line.split("|")[:5] for line in _lines(user_path, "|", 5)]
        user_table = pd.DataFrame(rows, columns=["user", "age", "gender", "occupation", "zip"])
        for col in ("user", "age"):
            user_table[col] = pd.to_numeric(user_table[col], errors="raise")
    return build_ratings(name, users, items, ratings, times, source=str(folder), metadata=metadata,
                         user_table=user_table, where=where)


ML_CSV_COLUMNS = ColumnMap(user="userId", item="movieId", rating="rating", timestamp="timestamp")


def read_ml_csv(folder: str | Path, name: str = "ml-20m") -> RatingsData:
    """Read an ML-20M / ML-25M / ML-32M folder (``ratings.csv``, ``movies.csv``)."""
    folder = Path(folder)
    ratings_path = _find(folder, "ratings.csv")
    series, where = read_text_columns(ratings_path, dict(ML_CSV_COLUMNS.items()), delimiter=",")
    users = parse_ids(series["user"], "userId", where, integer_ids=True, nonnegative=True)
    items = parse_ids(series["item"], "movieId", where, integer_ids=True, nonnegative=True)
    ratings = parse_ratings(series["rating"], "rating", where)
    _check_rating_range(ratings, where)
    times = parse_timestamps(series["timestamp"], "timestamp", where)
    del series
    movies_path = _find(folder, "movies.csv", required=False)
    metadata = None
    if movies_path is not None:
        metadata = read_item_metadata({"path": movies_path, "delimiter": ",",
                                       "columns": {"item": "movieId", "title": "title", "genres": "genres"}},
                                      integer_ids=True, leading_genres=ML1M_GENRES)
    return build_ratings(name, users, items, ratings, times, source=str(folder), metadata=metadata, where=where)
