"""RecBole atomic files: ``.inter`` interactions and the ``.item`` file beside them.

Both are tab-separated with a header of ``name:type`` fields, e.g.
``user_id:token	item_id:token	rating:float	timestamp:float``.  Roles are found
by name: ``user_id`` and ``item_id`` (else the first field starting with
``user`` / ``item``), ``rating`` and ``timestamp`` (optional: no rating field
means implicit feedback).  ``<stem>.item`` beside ``<stem>.inter`` gives titles
(the first field whose name contains ``title`` or ``name``) and genres (a field
named ``genre``, ``genres``, ``categories``, ``category`` or ``class``;
``token_seq`` values are space-separated).
"""
from __future__ import annotations

from pathlib import Path

from fcpo.data.columns import ColumnMap
from fcpo.data.dataset import RatingsData
from fcpo.data.fileio import DataFormatError
from fcpo.data.table import header_columns, load_table

_GENRE_FIELDS = ("genre", "genres", "categories", "category", "class")


def _fields(path: Path) -> dict[str, str]:
    """field name -> full header column (``name:type``)."""
    names, _ = header_columns(path, "\t")
    out = {}
    for column in names:
        name, sep, kind = column.partition(":")
        if not sep:
            raise DataFormatError(f"{path}, line 1: header field {column!r} is not NAME:TYPE "
                                  "(RecBole atomic files need typed headers such as user_id:token)")
        out[name.strip()] = column
    return out


def _role(fields: dict[str, str], exact: str, prefix: str | None, path: Path, required: bool) -> str | None:
    if exact in fields:
        return fields[exact]
    if prefix is not None:
        for name, column in fields.items():
            if name.startswith(prefix):
                return column
    if required:
        raise DataFormatError(f"{path}, line 1: no {exact!r} field in the header (fields: {', '.join(fields)})")
    return None


def recbole_columns(path: str | Path) -> ColumnMap:
    fields = _fields(Path(path))
    return ColumnMap(user=_role(fields, "user_id", "user", path, True), item=_role(fields, "item_id", "item", path, True),
                     rating=_role(fields, "rating", None, path, False),
                     timestamp=_role(fields, "timestamp", None, path, False))


def item_metadata_spec(item_path: str | Path, item_field: str = "item_id") -> dict | None:
    """The ``item_metadata`` spec of a RecBole ``.item`` file, or None when it does not exist."""
    item_path = Path(item_path)
    if not item_path.is_file():
        return None
    fields = _fields(item_path)
    item_col = _role(fields, item_field, "item", item_path, True)
    title = next((c for n, c in fields.items() if "title" in n or n == "name"), None)
    genre = next((fields[n] for n in _GENRE_FIELDS if n in fields), None)
    columns = {"item": item_col, "title": title, "genres": genre}
    sep = " " if genre is not None and genre.endswith("token_seq") else "|"
    return {"path": str(item_path), "columns": {k: v for k, v in columns.items() if v}, "genre_sep": sep,
            "delimiter": "\t"}


def load_recbole(path: str | Path, name: str | None = None, threshold: float | None = None,
                 item_file: str | Path | None = None, cache: bool = True) -> RatingsData:
    """Read ``<stem>.inter`` (and ``<stem>.item`` beside it, or ``item_file``) as :class:`RatingsData`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such RecBole .inter file")
    columns = recbole_columns(path)
    item_field = columns.item.partition(":")[0]
    meta = item_metadata_spec(item_file if item_file is not None else path.with_suffix(".item"), item_field)
    return load_table(path, columns, name=name or path.stem, delimiter="\t", format="tsv", item_metadata=meta,
                      threshold=threshold, cache=cache)
