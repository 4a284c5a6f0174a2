"""How well recommended slates respect FCPO's popularity constraint (Ge et al., WSDM 2021, eq. 7-9).

FCPO bounds the popular group's share of every K-item slate by α'.  In items, a slate
may hold at most the per-slate cap

    m = floor(α'·K + 1e-9)

G0 items: α' = 0.4, K = 5 gives 2 (the 1e-9 absorbs float error: 0.29 * 100 is
28.999999999999996 in floats, yet the cap is 29).  A slate violates the per-slate constraint when it holds strictly more
than m G0 items.  :func:`constraint_report` summarises a rollout's G0 counts both in
expectation (the mean share CPO constrains) and per slate (what the ``per-slate`` mode
of :class:`fcpo.policies.actor.SlateActor` enforces).  Pure numpy.
"""
from __future__ import annotations

import math

import numpy as np


def per_slate_cap(alpha_prime: float, k: int) -> int:
    """The most G0 items a k-item slate may hold under share α': floor(α'·k + 1e-9)."""
    if not 0.0 <= float(alpha_prime) <= 1.0:
        raise ValueError(f"alpha_prime must lie in [0, 1], got {alpha_prime!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"slate size k must be a positive integer, got {k!r}")
    return int(math.floor(float(alpha_prime) * int(k) + 1e-9))


def constraint_report(popular_counts, k: int, alpha_prime: float, alive=None) -> dict:
    """Summary of per-slate G0 counts against the cap m = :func:`per_slate_cap` (α', k).

    popular_counts: [U, L] number of G0 items in the slate user u got at step t;
    alive: optional bool [U, L], False for slates that were never shown (an episode that
    ended early); those are left out of every statistic.

    Returns a dict of plain Python values:
    ``popular_share`` (mean G0 share over shown slates), ``popular_share_per_step`` ([L];
    NaN at a step with no shown slate), ``max_step_share`` (its maximum),
    ``max_slate_popular`` (most G0 items in one slate), ``fraction_above_cap`` (share of
    slates with more than m G0 items), ``cap`` (m), ``alpha_prime``, ``k``, ``slates``
    (number of shown slates) and ``per_slate_ok`` (no shown slate above the cap).
    """
    m = per_slate_cap(alpha_prime, k)
    counts = np.asarray(popular_counts)
    if counts.ndim != 2:
        raise ValueError(f"popular_counts must be a [users, steps] array, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) or np.any(counts > k) \
            or np.any(counts != np.round(counts)):
        raise ValueError(f"popular_counts must hold whole numbers of G0 items in [0, k={k}]")
    if alive is None:
        shown = np.ones(counts.shape, dtype=bool)
    else:
        shown = np.asarray(alive)
        if shown.dtype != bool or shown.shape != counts.shape:
            raise ValueError(f"alive must be a bool array of shape {counts.shape}, "
                             f"got dtype {shown.dtype} shape {shown.shape}")
    n_slates = int(shown.sum())
    if n_slates == 0:
        raise ValueError("constraint_report: no shown slate (alive is False everywhere, or no users/steps)")
    counts = np.where(shown, counts, 0).astype(np.int64)
    per_step_slates = shown.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_step = np.where(per_step_slates > 0, counts.sum(axis=0) / (k * per_step_slates), np.nan)
    above = int(((counts > m) & shown).sum())
    return {
        "popular_share": float(counts.sum() / (k * n_slates)),
        "popular_share_per_step": [float(x) for x in per_step],
        "max_step_share": float(np.nanmax(per_step)),
        "max_slate_popular": int(counts[shown].max()),
        "fraction_above_cap": above / n_slates,
        "cap": m,
        "alpha_prime": float(alpha_prime),
        "k": int(k),
        "slates": n_slates,
        "per_slate_ok": above == 0,
    }
