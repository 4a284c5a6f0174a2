"""Column mapping of an interaction table and exact, vectorised parsing of its columns.

A :class:`ColumnMap` says which source column holds the user id, the item id,
and optionally the rating and the timestamp; :func:`parse_columns` reads it from
the command-line form ``"user=reviewerID,item=asin,rating=overall"``.

The parsers take one :class:`pandas.Series` per column (strings as read from a
file, or already typed values from Parquet / a DataFrame) and raise
:class:`~fcpo.data.fileio.DataFormatError` naming the source, the column and the
line (files) or row (DataFrames) of the first bad value:

* ids are parsed exactly: when every id of a column is a canonical integer
  literal (no sign but ``-``, no leading zero) they become int64 (never through
  float64, so ``"2.5"`` is not user 2 and ids above 2**53 stay distinct);
  otherwise the column keeps its ids as strings (``"007"`` stays distinct from
  ``"7"``), unless ``integer_ids`` demands integers (then ``"2.5"`` is an error);
* ratings must be finite numbers;
* timestamps are integers (unix seconds), decimals (floored) or ISO-8601 dates
  (converted to unix seconds, UTC when no zone is given).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from fcpo.data.fileio import DataFormatError

ROLES = ("user", "item", "rating", "timestamp")
REQUIRED_ROLES = ("user", "item")
_INT_RE = r"[+-]?\d+"
_CANONICAL_INT_RE = r"-?(?:0|[1-9]\d*)"


@dataclass(frozen=True)
class ColumnMap:
    """Source column names for each role (``rating`` / ``timestamp`` optional)."""

    user: str
    item: str
    rating: str | None = None
    timestamp: str | None = None

    def items(self) -> list[tuple[str, str]]:
        """(role, source column) for every mapped role."""
        return [(role, getattr(self, role)) for role in ROLES if getattr(self, role) is not None]

    def to_text(self) -> str:
        return ",".join(f"{role}={col}" for role, col in self.items())


def parse_columns(text: "str | Mapping[str, str] | ColumnMap | None", flag: str = "--columns") -> ColumnMap | None:
    """``"user=reviewerID,item=asin,rating=overall,timestamp=unixReviewTime"`` (or a dict) -> :class:`ColumnMap`.

    Errors name ``flag`` and the offending text.  ``None`` stays ``None``.
    """
    if text is None or isinstance(text, ColumnMap):
        return text
    if isinstance(text, Mapping):
        pairs = [(str(k).strip(), v) for k, v in text.items()]
        shown = repr(dict(text))
    else:
        shown = repr(text)
        pairs = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            role, sep, col = part.partition("=")
            if not sep:
                raise ValueError(f"{flag} {shown}: {part.strip()!r} is not ROLE=COLUMN "
                                 f"(roles: {', '.join(ROLES)}; e.g. user=reviewerID,item=asin)")
            pairs.append((role.strip(), col.strip()))
    mapping: dict[str, str] = {}
    for role, col in pairs:
        if role not in ROLES:
            raise ValueError(f"{flag} {shown}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if role in mapping:
            raise ValueError(f"{flag} {shown}: role {role!r} is given twice")
        if col is None or not str(col).strip():
            raise ValueError(f"{flag} {shown}: role {role!r} has an empty column name")
        mapping[role] = str(col).strip()
    missing = [r for r in REQUIRED_ROLES if r not in mapping]
    if missing:
        raise ValueError(f"{flag} {shown}: missing required role(s) {', '.join(missing)} "
                         "(need at least user=COLUMN,item=COLUMN)")
    return ColumnMap(**mapping)


@dataclass(frozen=True)
class Where:
    """Turns a 0-based data row into ``'file, line N'`` (files) or ``'table, row N'`` (DataFrames)."""

    source: str
    first_line: int | None = 2  # file line of data row 0 (2 with a header line); None: report row labels
    labels: pd.Index | None = None

    def __call__(self, row: int, column: str | None = None) -> str:
        col = f", column {column!r}" if column is not None else ""
        if self.first_line is None:
            label = self.labels[row] if self.labels is not None else row
            label = label.item() if hasattr(label, "item") else label
            return f"{self.source}, row {label!r}{col}"
        return f"{self.source}, line {self.first_line + row}{col}"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _is_text(s: pd.Series) -> bool:
    return s.dtype == object or isinstance(s.dtype, (pd.StringDtype, pd.ArrowDtype))


def _check_not_blank(s: pd.Series, column: str, where: Where, what: str) -> pd.Series | None:
    """Raise on the first missing or empty value; return the stripped text of a text column (else None)."""
    missing = s.isna().to_numpy(dtype=bool, copy=True)
    text = _as_strings(s) if _is_text(s) else None
    if text is not None:
        missing |= text.eq("").fillna(True).to_numpy(dtype=bool, copy=True)
    if missing.any():
        raise DataFormatError(f"{where(_first(missing), column)}: empty {what}")
    return text


def _as_strings(s: pd.Series) -> pd.Series:
    """Text form of a column (arrow-backed when pyarrow is present)."""
    if isinstance(s.dtype, pd.ArrowDtype) and "string" in str(s.dtype):
        return s.str.strip()
    try:
        import pyarrow  # noqa: F401  (arrow-backed strings: vectorised, compact)

        return s.astype("string[pyarrow]").str.strip()
    except (ImportError, TypeError, ValueError):
        return s.astype("string[python]").str.strip()


def _cast(text: pd.Series, dtype: str) -> np.ndarray:
    """Text -> int64 / float64 numpy; arrow's C++ cast when the strings are arrow-backed (10x pandas' astype).

    Raises ValueError when a value does not convert.
    """
    if hasattr(text.array, "__arrow_array__"):
        try:
            import pyarrow as pa
            import pyarrow.compute as pc
        except ImportError:
            pass
        else:
            try:
                cast = pc.cast(pa.array(text.array), getattr(pa, dtype)())
                return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=dtype)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise ValueError(str(exc)) from None
    return text.astype(dtype).to_numpy(dtype=dtype)


def parse_ids(s: pd.Series, column: str, where: Where, integer_ids: bool = False,
              nonnegative: bool = False) -> np.ndarray:
    """Exact ids: an int64 array when every id is an integer literal, else a str array.

    ``integer_ids`` rejects non-integer ids (naming the first); ``nonnegative`` rejects negative ones.
    """
    text = _check_not_blank(s, column, where, "id")
    kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else "T"  # T: text (object / string / arrow)
    if kind in "iu":
        values = s.to_numpy()
        if kind == "u" and len(values) and values.max() > np.iinfo(np.int64).max:
            raise DataFormatError(f"{where(_first(values > np.iinfo(np.int64).max), column)}: id beyond int64")
        values = values.astype(np.int64)
    elif kind == "f":
        values = s.to_numpy()
        bad = (values != np.floor(values)) | (np.abs(values) > 2.0 ** 53)
        if bad.any():
            raise DataFormatError(f"{where(_first(bad), column)}: id {float(values[_first(bad)])!r} is not an exact "
                                  "integer (store ids as integers or strings, not floats)")
        values = values.astype(np.int64)
    elif kind == "b":
        raise DataFormatError(f"{where(0, column)}: ids are booleans")
    else:
        text = text if text is not None else _as_strings(s)  # e.g. nullable Int64, categorical
        # canonical integers only: '007' / '+7' stay strings (else they would merge with '7')
        canonical = text.str.fullmatch(_CANONICAL_INT_RE).fillna(False).to_numpy(dtype=bool)
        if not canonical.all():
            if not integer_ids:
                return text.to_numpy(dtype=str)
            is_int = text.str.fullmatch(_INT_RE).fillna(False).to_numpy(dtype=bool)
            if not is_int.all():
                row = _first(~is_int)
                raise DataFormatError(f"{where(row, column)}: id {text.iloc[row]!r} is not an integer")
            text = text.str.lstrip("+")
        try:
            values = _cast(text, "int64")
        except (OverflowError, ValueError, TypeError) as exc:  # beyond int64
            big = text.str.len().to_numpy() > 18
            row = _first(big) if big.any() else 0
            raise DataFormatError(f"{where(row, column)}: id {text.iloc[row]!r} does not fit in int64 ({exc})") from None
    if nonnegative and len(values) and values.min() < 0:
        row = _first(values < 0)
        raise DataFormatError(f"{where(row, column)}: negative id {int(values[row])}")
    return values


def parse_ratings(s: pd.Series, column: str, where: Where) -> np.ndarray:
    """Finite float32 ratings."""
    text = _check_not_blank(s, column, where, "rating")
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf":
        values = s.to_numpy(dtype=np.float64)
    else:
        text = text if text is not None else _as_strings(s)
        try:
            values = _cast(text, "float64")
        except (ValueError, TypeError):
            coerced = pd.to_numeric(text.astype(object), errors="coerce").to_numpy(dtype=np.float64)
            row = _first(np.isnan(coerced))
            raise DataFormatError(f"{where(row, column)}: rating {text.iloc[row]!r} is not a number") from None
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first(bad)
        raise DataFormatError(f"{where(row, column)}: rating {float(values[row])!r} is not a finite number")
    return values.astype(np.float32)


def parse_timestamps(s: pd.Series, column: str, where: Where) -> np.ndarray:
    """int64 unix seconds from integers, decimals (floored) or ISO-8601 dates/datetimes."""
    text = _check_not_blank(s, column, where, "timestamp")
    if isinstance(s.dtype, pd.DatetimeTZDtype) or (isinstance(s.dtype, np.dtype) and s.dtype.kind == "M"):
        return _datetime_seconds(pd.to_datetime(s, utc=True))
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu":
        return s.to_numpy().astype(np.int64)
    if isinstance(s.dtype, np.dtype) and s.dtype.kind == "f":
        values = s.to_numpy()
        if not np.isfinite(values).all():
            row = _first(~np.isfinite(values))
            raise DataFormatError(f"{where(row, column)}: timestamp {float(values[row])!r} is not finite")
        return np.floor(values).astype(np.int64)
    if isinstance(s.dtype, pd.ArrowDtype) and "timestamp" in str(s.dtype):
        return _datetime_seconds(pd.to_datetime(s.astype(object), utc=True))
    text = text if text is not None else _as_strings(s)
    for dtype in ("int64", "float64"):
        try:
            values = _cast(text, dtype)
        except (ValueError, TypeError, OverflowError):
            continue
        if dtype == "float64":
            if not np.isfinite(values).all():
                row = _first(~np.isfinite(values))
                raise DataFormatError(f"{where(row, column)}: timestamp {text.iloc[row]!r} is not finite")
            values = np.floor(values)
        return values.astype(np.int64)
    dates = pd.to_datetime(text.astype(object), format="ISO8601", utc=True, errors="coerce")
    bad = dates.isna().to_numpy(dtype=bool)
    if bad.any():
        row = _first(bad)
        raise DataFormatError(f"{where(row, column)}: timestamp {text.iloc[row]!r} is neither a number "
                              "(unix seconds) nor an ISO-8601 date")
    return _datetime_seconds(dates)


def _datetime_seconds(dates) -> np.ndarray:
    values = pd.DatetimeIndex(dates).as_unit("ns").asi8
    return np.floor_divide(values, 1_000_000_000).astype(np.int64)
