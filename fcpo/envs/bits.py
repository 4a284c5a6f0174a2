"""A bit-packed boolean matrix for the envs' per-episode item sets (shown items, remaining targets).

A dense ``bool [num_envs, n_items]`` matrix costs one byte per cell: 3.7 GB for each such matrix
when every ML-20M user (138,000) has an episode over 27,000 items, and resetting or copying it
costs as much.  :class:`PackedBoolMatrix` stores 8 cells per byte (466 MB there) and does
everything the envs need with vectorised gathers and scatters over ``[n, K]`` index arrays, so a
step costs O(n·K), not O(n·n_items); dense rows are built only when a caller asks for them
(:meth:`dense`, indexing).
"""
from __future__ import annotations

import numpy as np

_BIT = (np.uint8(1) << np.arange(8, dtype=np.uint8)).astype(np.uint8)  # little bit order: item i -> bit i % 8


class PackedBoolMatrix:
    """``rows × cols`` booleans, 8 per byte (little bit order, as ``np.packbits(..., bitorder="little")``)."""

    def __init__(self, rows: int, cols: int):
        if rows < 0 or cols < 0:
            raise ValueError(f"PackedBoolMatrix: shape must be non-negative, got ({rows}, {cols})")
        self.shape = (int(rows), int(cols))
        self.bits = np.zeros((self.shape[0], (self.shape[1] + 7) // 8), dtype=np.uint8)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)

    def _check_cols(self, cols: np.ndarray) -> None:
        if cols.size and (cols.min() < 0 or cols.max() >= self.shape[1]):
            raise IndexError(f"PackedBoolMatrix: column index out of range [0, {self.shape[1]})")

    def get(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Bool array of the cells ``(rows, cols)`` (broadcast as in NumPy fancy indexing, e.g. ``rows[:, None]``
        against ``cols [n, K]``)."""
        cols = np.asarray(cols, dtype=np.int64)
        self._check_cols(cols)
        return (self.bits[rows, cols >> 3] & _BIT[cols & 7]) != 0

    def set(self, rows: np.ndarray, cols: np.ndarray, value: bool = True) -> None:
        """Set the cells ``(rows, cols)`` to ``value``; repeated cells and cells sharing a byte are fine."""
        cols = np.asarray(cols, dtype=np.int64)
        self._check_cols(cols)
        rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.int64), cols)
        rows, cols = rows.ravel(), cols.ravel()
        if value:
            np.bitwise_or.at(self.bits, (rows, cols >> 3), _BIT[cols & 7])
        else:
            np.bitwise_and.at(self.bits, (rows, cols >> 3), ~_BIT[cols & 7])

    def clear_rows(self, rows: np.ndarray) -> None:
        self.bits[np.asarray(rows, dtype=np.int64)] = 0

    def set_ragged(self, rows: np.ndarray, lengths: np.ndarray, cols: np.ndarray) -> None:
        """Set, for each ``rows[j]``, the ``lengths[j]`` consecutive entries of the flat ``cols`` (CSR layout)."""
        self.set(np.repeat(np.asarray(rows, dtype=np.int64), np.asarray(lengths, dtype=np.int64)), cols)

    def dense(self, rows: np.ndarray | slice | int | None = None) -> np.ndarray:
        """The dense bool rows ``rows`` (all rows for ``None``): ``[n, cols]``, or ``[cols]`` for an int."""
        packed = self.bits if rows is None else self.bits[rows]
        return np.unpackbits(packed, axis=-1, count=self.shape[1], bitorder="little").view(bool)

    def __getitem__(self, rows) -> np.ndarray:
        """Dense rows, as a bool matrix would give them: ``m[3]``, ``m[idx]``, ``m[:]``."""
        return self.dense(rows)

    def row_counts(self, rows: np.ndarray | None = None) -> np.ndarray:
        """How many cells are True in each row (int64)."""
        packed = self.bits if rows is None else self.bits[rows]
        return np.unpackbits(packed, axis=-1, count=self.shape[1], bitorder="little").sum(axis=-1, dtype=np.int64)
