"""YAML data cards: a small file that describes an interaction table once.

Example ``amazon-books.yaml``::

    name: amazon-books
    path: reviews.csv            # relative to the card's folder
    format: csv                  # csv | tsv | parquet | recbole (default: from the file name)
    delimiter: ","               # optional; sniffed when absent
    columns: {user: reviewerID, item: asin, rating: overall, timestamp: unixReviewTime}
    item_metadata:               # optional, for rendering
      path: items.csv
      columns: {item: asin, title: title, genres: categories}
      genre_sep: "|"
    threshold: 4.0               # the positive threshold (implicit logs: 1.0, the default for them)
    duplicates: last             # last (drop repeated (user, item, timestamp) rows, keep the last) | error
    integer_ids: false           # true: ids must be integers
    description: Amazon book reviews, 2014 dump

Unknown keys are errors naming the card and the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fcpo.data.columns import ColumnMap, parse_columns
from fcpo.data.dataset import RatingsData
from fcpo.data.fileio import DataFormatError, read_text

CARD_KEYS = ("name", "path", "format", "delimiter", "columns", "item_metadata", "threshold", "duplicates",
             "integer_ids", "description")


@dataclass(frozen=True)
class DataCard:
    path: Path
    name: str
    format: str | None = None
    delimiter: str | None = None
    columns: ColumnMap | None = None
    item_metadata: dict | None = None
    threshold: float | None = None
    duplicates: str = "last"
    integer_ids: bool = False
    description: str = ""
    card: Path | None = field(default=None, compare=False)


def read_card(card_path: str | Path) -> DataCard:
    import yaml

    card_path = Path(card_path).expanduser()
    try:
        spec = yaml.safe_load(read_text(card_path))
    except yaml.YAMLError as exc:
        raise DataFormatError(f"{card_path}: not valid YAML ({exc})") from None
    if not isinstance(spec, dict):
        raise DataFormatError(f"{card_path}: a data card is a YAML mapping with at least 'path' (got {type(spec).__name__})")
    unknown = sorted(set(spec) - set(CARD_KEYS))
    if unknown:
        raise DataFormatError(f"{card_path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(CARD_KEYS)}")
    if not spec.get("path"):
        raise DataFormatError(f"{card_path}: key 'path' (the interaction file) is required")
    base = card_path.parent
    path = (base / Path(str(spec["path"])).expanduser()).resolve()
    meta = spec.get("item_metadata")
    if isinstance(meta, str):
        meta = {"path": meta}
    if isinstance(meta, dict):
        if "path" not in meta:
            raise DataFormatError(f"{card_path}: item_metadata needs a 'path'")
        meta = {**meta, "path": str((base / Path(str(meta["path"])).expanduser()).resolve())}
    elif meta is not None:
        raise DataFormatError(f"{card_path}: item_metadata must be a path or a mapping, got {meta!r}")
    try:
        columns = parse_columns(spec.get("columns"), flag=f"{card_path}: columns")
    except ValueError as exc:
        raise DataFormatError(str(exc)) from None
    threshold = spec.get("threshold")
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise DataFormatError(f"{card_path}: threshold must be a number, got {threshold!r}")
    return DataCard(path=path, name=str(spec.get("name") or card_path.stem), format=spec.get("format"),
                    delimiter=spec.get("delimiter"), columns=columns, item_metadata=meta,
                    threshold=None if threshold is None else float(threshold),
                    duplicates=str(spec.get("duplicates", "last")), integer_ids=bool(spec.get("integer_ids", False)),
                    description=str(spec.get("description", "")), card=card_path)


def load_card(card_path: str | Path, cache: bool = True) -> RatingsData:
    """Load the table a data card describes."""
    card = read_card(card_path)
    from fcpo.data.recbole import load_recbole
    from fcpo.data.table import load_table

    if card.format == "recbole" or (card.format is None and card.path.name.lower().endswith((".inter", ".inter.gz"))):
        return load_recbole(card.path, name=card.name, threshold=card.threshold, cache=cache)
    if card.columns is None:
        raise DataFormatError(f"{card.card}: key 'columns' is required for {card.path.name} "
                              "(e.g. columns: {user: userId, item: movieId, rating: rating})")
    return load_table(card.path, card.columns, name=card.name, delimiter=card.delimiter, format=card.format,
                      item_metadata=card.item_metadata, threshold=card.threshold, integer_ids=card.integer_ids,
                      duplicates=card.duplicates, cache=cache)
