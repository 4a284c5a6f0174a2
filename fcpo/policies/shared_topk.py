"""Exact top-k lists of "shared scores plus per-row corrections", without forming the [B, K, n] scores.

The Gaussian actor's deployed (greedy) slate uses W = μ(s), whose K rows are one user query plus a
learned per-row offset: W_j = u + o_j (:class:`fcpo.policies.actor.SlateActor`).  Its row scores are

    score[b, j, i] = s[b, i] + t[j, i],     s = u Vᵀ (+ 0/-inf exclusion bias),  t = O Vᵀ (+ group offset),

and a decoder needs each (b, j) row's best k items.  A full top-k reads all B·K·n scores (on one CPU
thread about 2 ns a score: 1.8 of the 6 s of the default ml-1m evaluation).  Instead, one selection
over the shared scores plus per-row corrections:

1. take each user's best P shared scores s (one top-P over [B, n], K times fewer scores);
2. add the K corrections to those P candidates and keep each row's best k;
3. an item outside the P has s ≤ s_(P) (the P-th best) and t_j ≤ max t_j, so the list is exact when its
   k-th value beats s_(P) + max_i t[j, i] (strictly), or when s_(P) = -inf (no other finite score);
4. rows failing the test are retried with 4·P candidates (their users only), then recomputed in full.

The result equals ``torch.topk(s[:, None] + t[None], k)`` (values exactly -- the candidates' scores are
the same float additions -- and indices too when no two scores of a row tie), whatever the data: a
loose bound (large corrections) costs time, never correctness.  ``benchmarks/decode_speed.py``
measures the speed and the share of rows retried.
"""
from __future__ import annotations

import torch

NEG_INF = float("-inf")

#: shared candidates per user in the first pass: max(DEFAULT_PROBE, n // PROBE_DIVISOR) for n columns
#: (measured on trained ml-1m actors, 1 thread: 16 for ml-100k's 1,682 items, ~30 for ml-1m's 3,706)
DEFAULT_PROBE = 16
PROBE_DIVISOR = 128


def _candidate_lists(s: torch.Tensor, t: torch.Tensor, k: int, p: int):
    """Stage 1-3 for users ``s`` [U, m]: (values [U, K, k], ids [U, K, k], exact [U, K])."""
    u, m = s.shape
    rows = t.shape[0]
    p = min(max(p, k), m)
    sv, si = torch.topk(s, p, dim=1)  # [U, P]
    cand = sv.unsqueeze(1) + t.T[si].transpose(1, 2)  # [U, K, P]: s_i + t_ji, as in the full scores
    values, pos = torch.topk(cand, k, dim=2)
    ids = si.unsqueeze(1).expand(u, rows, p).gather(2, pos)
    if p == m:
        return values, ids, torch.ones(u, rows, dtype=torch.bool, device=s.device)
    last = sv[:, p - 1:p]  # [U, 1]: the best shared score left out
    exact = (values[..., k - 1] > last + t.amax(dim=1).unsqueeze(0)) | (last == NEG_INF)
    return values, ids, exact


def shared_plus_row_topk(s: torch.Tensor, t: torch.Tensor, k: int, probe: int | None = None,
                         stats: dict | None = None):
    """Top-k of ``s[b] + t[j]`` for every (b, j): values [B, K, k] (descending) and column ids [B, K, k].

    ``s`` [B, m] is finite or -inf (an unavailable column), ``t`` [K, m] finite; a row with fewer
    than k finite scores fills its list with -inf values (their ids are arbitrary, as with
    ``torch.topk``).  ``probe``: shared candidates per user in the first pass (default ``max(DEFAULT_PROBE, m // PROBE_DIVISOR)``).  ``stats``, if given,
    accumulates ``rows``, ``retried`` (rows that needed the 4·probe pass) and ``recomputed`` (rows that
    needed the full pass).
    """
    if s.dim() != 2 or t.dim() != 2 or s.shape[1] != t.shape[1]:
        raise ValueError(f"s must be [B, m] and t [K, m] with the same m, got {list(s.shape)} and {list(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("the per-row corrections t must be finite (put unavailable columns in s as -inf)")
    b, m = s.shape
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    probe = max(DEFAULT_PROBE, s.shape[1] // PROBE_DIVISOR) if probe is None else probe
    if probe < 1:
        raise ValueError(f"probe must be >= 1, got {probe}")
    t = t.to(s.dtype)
    values, ids, exact = _candidate_lists(s, t, k, probe)
    retried = recomputed = 0
    bad = (~exact).nonzero()
    if bad.shape[0]:  # second pass: 4x the candidates, for the users with a failing row
        retried = int(bad.shape[0])
        users = torch.unique(bad[:, 0])
        v2, i2, e2 = _candidate_lists(s.index_select(0, users), t, k, 4 * probe)
        values[users], ids[users] = v2, i2
        exact[users] = e2
        bad = (~exact).nonzero()
    if bad.shape[0]:  # last resort: the full row, as the plain decoder computes it
        recomputed = int(bad.shape[0])
        full = s.index_select(0, bad[:, 0]) + t.index_select(0, bad[:, 1])
        fv, fi = torch.topk(full, k, dim=1)
        values[bad[:, 0], bad[:, 1]] = fv
        ids[bad[:, 0], bad[:, 1]] = fi
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + b * t.shape[0]
        stats["retried"] = stats.get("retried", 0) + retried
        stats["recomputed"] = stats.get("recomputed", 0) + recomputed
    return values, ids
