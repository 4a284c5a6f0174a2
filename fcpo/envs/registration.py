"""Registration of the ``fcpo/...`` environment ids (Gymnasium 1.x has no plugin entry points).

The table and the registering function live in :mod:`fcpo` itself, so that ``import fcpo`` registers
the ids without importing this package (numpy, pandas, scipy and torch stay unloaded until an env is made).
"""
from __future__ import annotations

from fcpo import _ENV_ENTRY_POINTS, _register_envs

ENV_IDS = tuple(_ENV_ENTRY_POINTS)


def register_envs() -> None:
    """Register every fcpo environment id once; safe to call repeatedly."""
    _register_envs()
