"""Any interaction table as a :class:`~fcpo.data.dataset.RatingsData`: CSV/TSV, Parquet or a DataFrame.

``load_table(path_or_df, columns={"user": "reviewerID", "item": "asin", "rating": "overall",
"timestamp": "unixReviewTime"})`` reads the mapped columns only, parses them
exactly (:mod:`fcpo.data.columns`), maps string or integer ids to dense indices
(raw ids kept, sorted), and attaches optional item metadata (titles, genres /
categories) for rendering.

Conventions (documented choices):

* **no rating column** = implicit feedback: every interaction is a positive with
  rating 1.0, ``RatingsData.implicit`` is set and ``positive_threshold`` is 1.0,
  so splits called without a threshold take every interaction as a positive;
* **no timestamp column**: the file order is the time order (timestamps 0, 1, ...);
* **duplicates**: rows with the same (user, item, timestamp) are dropped keeping
  the LAST one in file order, with a warning giving the count
  (``duplicates="error"`` rejects them instead).  Repeated (user, item) pairs at
  different times are kept as separate events; the splits' rating matrices keep
  the latest rating of a pair, never a sum;
* a file with a header but no rows, a missing mapped column, an empty id, a
  non-numeric rating or an unparseable timestamp raise
  :class:`~fcpo.data.fileio.DataFormatError` naming the file, column and line.

File tables are cached after parsing (:mod:`fcpo.data.cache`), keyed by the
SHA-256 of the file(s) and the options, so a second load is a memory map away.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from fcpo.data.columns import ColumnMap, Where, parse_columns, parse_ids, parse_ratings, parse_timestamps
from fcpo.data.dataset import RatingsData, densify
from fcpo.data.fileio import DataFormatError, head_text

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
DUPLICATE_POLICIES = ("last", "error")
UNKNOWN_TITLE = "<unknown>"


def table_format(path: str | os.PathLike) -> str:
    """``csv`` / ``tsv`` / ``parquet`` from the name (``.gz`` allowed for text tables)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".tsv", ".inter", ".item", ".tab")):
        return "tsv"
    return "csv"


# ---------------------------------------------------------------- raw columns

def sniff_delimiter(path: Path, head: str) -> str:
    if table_format(path) == "tsv":
        return "\t"
    first = head.splitlines()[0] if head else ""
    try:
        return csv.Sniffer().sniff(head[:1 << 14], delimiters=",\t;|").delimiter
    except csv.Error:
        counts = {d: first.count(d) for d in ",\t;|"}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def header_columns(path: Path, delimiter: str | None = None) -> tuple[list[str], str]:
    """The header's column names and the delimiter; an empty file is an error naming it."""
    head = head_text(path)
    if not head.strip():
        raise DataFormatError(f"{path}: the file is empty (expected a header line and interactions)")
    sep = delimiter or sniff_delimiter(path, head)
    first = head.splitlines()[0]
    names = next(csv.reader([first], delimiter=sep)) if len(sep) == 1 else first.split(sep)
    return [n.strip() for n in names], sep


def _missing_column(path, column, role, available) -> DataFormatError:
    return DataFormatError(f"{path}: column {column!r} (mapped to {role}) is not in the table; "
                           f"columns are {', '.join(repr(a) for a in available)}")


def read_text_columns(path: Path, wanted: Mapping[str, str], delimiter: str | None = None
                      ) -> tuple[dict[str, pd.Series], Where]:
    """Read the columns ``wanted`` (role -> column) of a CSV/TSV file as strings; one Series per role."""
    names, sep = header_columns(path, delimiter)
    for role, col in wanted.items():
        if col not in names:
            raise _missing_column(path, col, role, names)
    cols = sorted(set(wanted.values()))
    frame = _read_csv_strings(path, sep, cols)
    if len(frame) == 0:
        raise DataFormatError(f"{path}: no interactions (the table has a header but no rows)")
    return {role: frame[col] for role, col in wanted.items()}, Where(str(path), first_line=2)


def _read_csv_strings(path: Path, sep: str, cols: list[str]) -> pd.DataFrame:
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        pa = None
    if pa is not None and len(sep) == 1:
        def read(encoding):
            return pacsv.read_csv(
                path, read_options=pacsv.ReadOptions(encoding=encoding, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=sep),
                convert_options=pacsv.ConvertOptions(include_columns=cols, column_types={c: pa.string() for c in cols},
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False))
        try:
            try:
                table = read("utf8")
            except pa.ArrowInvalid as exc:
                if "UTF8" not in str(exc).upper().replace("-", ""):
                    raise
                table = read("latin-1")
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            raise DataFormatError(f"{path}: cannot read as a {sep!r}-separated table: {exc}") from None
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    for encoding in ("utf-8", "latin-1"):
        try:
            return pd.read_csv(path, sep=sep, usecols=cols, dtype=str, keep_default_na=False, encoding=encoding,
                               engine="c" if len(sep) == 1 else "python")
        except UnicodeDecodeError:
            continue
        except (ValueError, pd.errors.ParserError, OSError, EOFError) as exc:
            raise DataFormatError(f"{path}: cannot read as a {sep!r}-separated table: {exc}") from None
    raise AssertionError("latin-1 decodes every byte")


def read_parquet_columns(path: Path, wanted: Mapping[str, str]) -> tuple[dict[str, pd.Series], Where]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise DataFormatError(f"{path}: not a readable Parquet file ({exc})") from None
    for role, col in wanted.items():
        if col not in names:
            raise _missing_column(path, col, role, names)
    frame = pq.read_table(path, columns=sorted(set(wanted.values()))).to_pandas()
    if len(frame) == 0:
        raise DataFormatError(f"{path}: no interactions (the table has no rows)")
    return {role: frame[col] for role, col in wanted.items()}, Where(str(path), first_line=None)


def frame_columns(frame: pd.DataFrame, wanted: Mapping[str, str], label: str = "DataFrame"
                  ) -> tuple[dict[str, pd.Series], Where]:
    for role, col in wanted.items():
        if col not in frame.columns:
            raise _missing_column(label, col, role, [str(c) for c in frame.columns])
    if len(frame) == 0:
        raise DataFormatError(f"{label}: no interactions (the table has no rows)")
    return ({role: frame[col].reset_index(drop=True) for role, col in wanted.items()},
            Where(label, first_line=None, labels=frame.index))


# ---------------------------------------------------------------- item metadata

@dataclass(frozen=True)
class ItemMetadata:
    """Titles and multi-label genres of items, keyed by raw item id."""

    ids: np.ndarray  # int64 or str
    titles: np.ndarray  # object (str)
    genres: np.ndarray  # bool [n, n_genres]
    genre_names: tuple[str, ...]


def genre_matrix(genre_lists: list[list[str]], leading: tuple[str, ...] = ()) -> tuple[np.ndarray, tuple[str, ...]]:
    """Multi-hot matrix; columns are ``leading`` then the other genres sorted."""
    seen = {g for gl in genre_lists for g in gl}
    names = tuple(leading) + tuple(sorted(seen - set(leading)))
    column = {g: j for j, g in enumerate(names)}
    rows = np.repeat(np.arange(len(genre_lists)), [len(gl) for gl in genre_lists])
    cols = np.fromiter((column[g] for gl in genre_lists for g in gl), dtype=np.int64, count=len(rows))
    matrix = np.zeros((len(genre_lists), len(names)), dtype=bool)
    matrix[rows, cols] = True
    return matrix, names


def read_item_metadata(spec, integer_ids: bool = False, leading_genres: tuple[str, ...] = ()) -> ItemMetadata:
    """Item metadata from a path, a DataFrame, or ``{"path": ..., "columns": {"item", "title", "genres"},
    "genre_sep": "|", "delimiter": None}``.  Default columns: ``item``, ``title``, ``genres``."""
    if isinstance(spec, (str, os.PathLike, pd.DataFrame)):
        spec = {"path": spec}
    spec = dict(spec)
    unknown = set(spec) - {"path", "columns", "genre_sep", "delimiter"}
    if unknown:
        raise ValueError(f"item_metadata: unknown key(s) {sorted(unknown)}; use path, columns, genre_sep, delimiter")
    cols = {"item": "item", "title": "title", "genres": "genres", **(spec.get("columns") or {})}
    sep = spec.get("genre_sep", "|")
    source = spec["path"]
    if isinstance(source, pd.DataFrame):
        label = "item metadata DataFrame"
        available = [str(c) for c in source.columns]
    else:
        source = Path(source).expanduser()
        label = str(source)
        if table_format(source) == "parquet":
            import pyarrow.parquet as pq
            available = pq.read_schema(source).names
        else:
            available, _ = header_columns(source, spec.get("delimiter"))
    wanted = {"item": cols["item"]}
    for role in ("title", "genres"):
        if cols.get(role) and cols[role] in available:
            wanted[role] = cols[role]
        elif cols.get(role) and role in (spec.get("columns") or {}):
            raise _missing_column(label, cols[role], role, available)
    if isinstance(source, pd.DataFrame):
        series, where = frame_columns(source, wanted, label)
    elif table_format(source) == "parquet":
        series, where = read_parquet_columns(source, wanted)
    else:
        series, where = read_text_columns(source, wanted, spec.get("delimiter"))
    ids = parse_ids(series["item"], wanted["item"], where, integer_ids=integer_ids)
    n = len(ids)
    titles = (series["title"].astype(object).where(series["title"].notna(), "").astype(str).to_numpy(object)
              if "title" in series else np.array([UNKNOWN_TITLE] * n, dtype=object))
    if "genres" in series:
        raw = series["genres"].astype(object).where(series["genres"].notna(), "").astype(str).tolist()
        lists = [[g.strip() for g in text.split(sep) if g.strip() and g.strip() != "(no genres listed)"]
                 for text in raw]
    else:
        lists = [[] for _ in range(n)]
    genres, names = genre_matrix(lists, leading=tuple(leading_genres))
    return ItemMetadata(ids=ids, titles=titles, genres=genres, genre_names=names)


def _match(raw_ids: np.ndarray, table_ids: np.ndarray) -> np.ndarray:
    """Row of each raw id in ``table_ids`` (first occurrence), -1 when absent; ints and strings compare as text."""
    if raw_ids.dtype.kind != table_ids.dtype.kind:
        raw_ids, table_ids = raw_ids.astype(str), table_ids.astype(str)
    index = pd.Index(table_ids)
    if not index.is_unique:
        dup = index[index.duplicated()]
        log.warning("item metadata: %d duplicate item id(s) (first %r); the first row of each is used",
                    len(dup), dup[0])
        rows = np.flatnonzero(~index.duplicated(keep="first"))
        pos = pd.Index(table_ids[rows]).get_indexer(raw_ids)
        return np.where(pos >= 0, rows[pos], -1)
    return index.get_indexer(raw_ids)


# ---------------------------------------------------------------- assembly

def build_ratings(name: str, users_raw: np.ndarray, items_raw: np.ndarray, ratings: np.ndarray | None,
                  timestamps: np.ndarray | None, *, source: str, metadata: ItemMetadata | None = None,
                  user_table: pd.DataFrame | None = None, duplicates: str = "last",
                  positive_threshold: float | None = None, where: Where | None = None) -> RatingsData:
    """Dense ids, the duplicate policy, metadata alignment -> :class:`RatingsData` (rows stay in file order)."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    n = len(users_raw)
    if n == 0:
        raise DataFormatError(f"{source}: no interactions")
    implicit = ratings is None
    ratings = np.ones(n, dtype=np.float32) if implicit else np.asarray(ratings, dtype=np.float32)
    timestamps = np.arange(n, dtype=np.int64) if timestamps is None else np.asarray(timestamps, dtype=np.int64)
    users, user_raw = densify(users_raw)
    items, item_raw = densify(items_raw)
    dup = pd.DataFrame({"u": users, "i": items, "t": timestamps}).duplicated(keep="last").to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        at = where(first) if where is not None else f"{source}, row {first}"
        if duplicates == "error":
            raise DataFormatError(f"{at}: duplicate (user, item, timestamp) = ({users_raw[first]!r}, "
                                  f"{items_raw[first]!r}, {timestamps[first]}); {int(dup.sum())} such rows")
        log.warning("%s: dropped %d duplicate (user, item, timestamp) row(s), keeping the last occurrence of "
                    "each (first dropped: %s)", source, int(dup.sum()), at)
        keep = ~dup
        users, items, ratings, timestamps = users[keep], items[keep], ratings[keep], timestamps[keep]
    titles = np.array([UNKNOWN_TITLE] * len(item_raw), dtype=object)
    if metadata is not None:
        rows = _match(item_raw, metadata.ids)
        known = rows >= 0
        titles[known] = metadata.titles[rows[known]]
        genres = np.zeros((len(item_raw), len(metadata.genre_names)), dtype=bool)
        genres[known] = metadata.genres[rows[known]]
        genre_names = metadata.genre_names
        if not known.all():
            log.warning("%s: %d item(s) have interactions but no metadata row (first: %r); they get title %r "
                        "and no genres", source, int((~known).sum()), item_raw[np.flatnonzero(~known)[0]].item(),
                        UNKNOWN_TITLE)
    else:
        genres, genre_names = np.zeros((len(item_raw), 0), dtype=bool), ()
    if user_table is not None:
        attrs = user_table.set_index("user").reindex(user_raw).reset_index(drop=True)
    else:
        attrs = pd.DataFrame(index=np.arange(len(user_raw)))
    attrs.insert(0, "raw_id", user_raw)
    if positive_threshold is None and implicit:
        positive_threshold = 1.0
    return RatingsData(name=name, users=users, items=items, ratings=ratings, timestamps=timestamps,
                       user_raw_ids=user_raw, item_raw_ids=item_raw, item_titles=titles, item_genres=genres,
                       genre_names=tuple(genre_names), user_attributes=attrs, source=source, implicit=implicit,
                       positive_threshold=positive_threshold)


def parse_interactions(series: Mapping[str, pd.Series], columns: ColumnMap, where: Where,
                       integer_ids: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    users = parse_ids(series["user"], columns.user, where, integer_ids=integer_ids)
    items = parse_ids(series["item"], columns.item, where, integer_ids=integer_ids)
    ratings = parse_ratings(series["rating"], columns.rating, where) if "rating" in series else None
    times = parse_timestamps(series["timestamp"], columns.timestamp, where) if "timestamp" in series else None
    return users, items, ratings, times


# ---------------------------------------------------------------- entry point

def load_table(source: "str | os.PathLike | pd.DataFrame", columns=None, *, name: str | None = None,
               delimiter: str | None = None, format: str | None = None, item_metadata=None,
               threshold: float | None = None, integer_ids: bool = False, duplicates: str = "last",
               cache: bool = True) -> RatingsData:
    """An interaction table (CSV/TSV/Parquet file or DataFrame) as :class:`RatingsData`.

    ``columns`` maps roles to source columns: a dict, a :class:`ColumnMap` or
    ``"user=reviewerID,item=asin,rating=overall,timestamp=unixReviewTime"``
    (``rating`` and ``timestamp`` optional).  ``threshold`` is the data set's
    positive threshold (implicit logs: 1.0).  ``item_metadata``: see
    :func:`read_item_metadata`.  File tables are cached (``cache=False`` to skip).
    """
    cmap = parse_columns(columns, flag="columns")
    if cmap is None:
        raise ValueError(f"load_table({source if not isinstance(source, pd.DataFrame) else 'DataFrame'}): "
                         "columns are required, e.g. columns='user=userId,item=movieId,rating=rating'")
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    wanted = dict(cmap.items())
    if isinstance(source, pd.DataFrame):
        return _build_from(None, source, cmap, wanted, name or "table", delimiter, format, item_metadata, threshold,
                           integer_ids, duplicates)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such interaction file")
    name = name or path.name.split(".")[0]

    def build():
        return _build_from(path, None, cmap, wanted, name, delimiter, format, item_metadata, threshold,
                           integer_ids, duplicates)

    if not cache:
        return build()
    from fcpo.data.cache import cached_ratings, ratings_cache_key

    meta_files = []
    if item_metadata is not None:
        meta_path = item_metadata if isinstance(item_metadata, (str, os.PathLike)) else (
            item_metadata.get("path") if isinstance(item_metadata, Mapping) else None)
        if isinstance(meta_path, (str, os.PathLike)):
            meta_files.append(Path(meta_path).expanduser())
        else:
            return build()  # a DataFrame of metadata has no file to key on
    options = {"columns": wanted, "name": name, "delimiter": delimiter, "format": format, "threshold": threshold,
               "integer_ids": integer_ids, "duplicates": duplicates,
               "item_metadata": {k: v for k, v in item_metadata.items() if k != "path"}
               if isinstance(item_metadata, Mapping) else None}
    key = ratings_cache_key("table", [path, *meta_files], options)
    return cached_ratings(key, build)


def _build_from(path, frame, cmap, wanted, name, delimiter, fmt, item_metadata, threshold, integer_ids,
                duplicates) -> RatingsData:
    if frame is not None:
        series, where = frame_columns(frame, wanted)
        source = "DataFrame"
    else:
        fmt = fmt or table_format(path)
        if fmt == "parquet":
            series, where = read_parquet_columns(path, wanted)
        elif fmt in ("csv", "tsv"):
            series, where = read_text_columns(path, wanted, delimiter or ("\t" if fmt == "tsv" else None))
        else:
            raise ValueError(f"{path}: unknown table format {fmt!r}; use csv, tsv or parquet")
        source = str(path)
    users, items, ratings, times = parse_interactions(series, cmap, where, integer_ids)
    del series
    metadata = read_item_metadata(item_metadata, integer_ids) if item_metadata is not None else None
    return build_ratings(name, users, items, ratings, times, source=source, metadata=metadata,
                         duplicates=duplicates, positive_threshold=threshold, where=where)


__all__ = ["load_table", "read_item_metadata", "ItemMetadata", "build_ratings", "table_format", "genre_matrix",
           "parse_interactions", "header_columns", "read_text_columns", "TABLE_SUFFIXES"]
