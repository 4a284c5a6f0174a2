"""The one in-memory form of a ratings data set that every part of fcpo reads."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RatingsData:
    """Explicit-feedback interactions with dense 0-based ids.

    Arrays ``users``, ``items``, ``ratings`` and ``timestamps`` are parallel (one
    entry per rating, in file order).  ``user_raw_ids[u]`` / ``item_raw_ids[i]``
    map dense ids back to the ids in the source files.
    """

    name: str
    users: np.ndarray  # int64, dense user id per rating
    items: np.ndarray  # int64, dense item id per rating
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64, unix seconds
    user_raw_ids: np.ndarray  # int64 [n_users]
    item_raw_ids: np.ndarray  # int64 [n_items]
    item_titles: np.ndarray  # object (str) [n_items]
    item_genres: np.ndarray  # bool [n_items, n_genres], multi-label
    genre_names: tuple[str, ...]
    user_attributes: pd.DataFrame = field(repr=False)  # indexed by dense user id

    def __post_init__(self) -> None:
        n = len(self.users)
        for attr in ("items", "ratings", "timestamps"):
            if len(getattr(self, attr)) != n:
                raise ValueError(f"RatingsData({self.name}): '{attr}' has {len(getattr(self, attr))} entries, users has {n}")
        if self.item_genres.shape != (self.n_items, len(self.genre_names)):
            raise ValueError(
                f"RatingsData({self.name}): item_genres shape {self.item_genres.shape} != ({self.n_items}, {len(self.genre_names)})"
            )

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)

    @property
    def n_ratings(self) -> int:
        return len(self.users)

    def summary(self) -> dict:
        """Counts in the form of the FCPO paper's data table."""
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "ratings": self.n_ratings,
            "ratings_per_user": self.n_ratings / max(self.n_users, 1),
            "ratings_per_item": self.n_ratings / max(self.n_items, 1),
            "density_percent": 100.0 * self.n_ratings / max(self.n_users * self.n_items, 1),
        }


def densify(raw: np.ndarray, universe: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to dense 0-based ids; returns (dense ids, sorted raw ids)."""
    keys = np.unique(raw) if universe is None else np.unique(universe)
    dense = np.searchsorted(keys, raw)
    if universe is not None and (np.any(dense >= len(keys)) or np.any(keys[np.minimum(dense, len(keys) - 1)] != raw)):
        missing = np.setdiff1d(raw, keys)[:5]
        raise ValueError(f"ids {missing.tolist()} are not in the item/user table")
    return dense.astype(np.int64), keys.astype(np.int64)
