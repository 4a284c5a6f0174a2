"""Backtracking line search for CPO / TRPO steps (Achiam et al. 2017, sec. 6.3).

The analytic step of eq. (13)/(14) solves a local linear-quadratic model; the
line search backtracks along it until the *actual* surrogates and mean KL
satisfy the trust-region problem (10):

* mean KL ``<= delta``;
* surrogate cost change ``<= max(-c, 0)``  (``c = J_C(pi_k) - d``: a feasible
  policy may spend its slack, an infeasible one must not increase the cost);
* surrogate reward change ``> 0`` when ``require_improvement`` (feasible cases;
  recovery steps ignore reward);
* all three values finite.

A candidate whose evaluation raises ``ValueError`` (e.g. ``torch.distributions`` argument
validation refusing a scale that overflowed to ``inf`` or ``0`` after a huge step, as with
``max_kl=1e9``) is a rejected trial with reason ``"invalid"``, not a crash: the search backtracks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["LineSearchTrial", "LineSearchResult", "backtracking_line_search"]

Evaluation = Sequence["float | Tensor"]


@dataclass(frozen=True)
class LineSearchTrial:
    """One candidate ``theta_k + fraction * direction``."""

    fraction: float
    reward_change: float
    cost_change: float
    kl: float
    accepted: bool
    reason: str  # "accepted" or the first failed test: "invalid", "non-finite", "kl", "cost", "reward"


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    ``params`` is the accepted candidate, or ``theta_k`` itself (a zero step)
    when no trial passed; ``fraction`` is then 0.0.  ``n_backtracks`` counts
    step shrinks before acceptance (0 = full step accepted; ``max_backtracks``
    when nothing was accepted).
    """

    params: Tensor
    accepted: bool
    fraction: float
    n_backtracks: int
    reward_change: float
    cost_change: float
    kl: float
    trials: tuple[LineSearchTrial, ...] = field(repr=False, default=())


def _scalar(v: "float | Tensor", name: str) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"evaluate() must return scalars; {name} has shape {tuple(v.shape)}")
        return float(v.detach().reshape(()).item())
    return float(v)


def backtracking_line_search(
    evaluate: Callable[[Tensor], Evaluation],
    theta: Tensor,
    direction: Tensor,
    *,
    c: float | None,
    delta: float,
    require_improvement: bool = True,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 10,
    baseline: Evaluation | None = None,
    kl_rescale: bool = False,
) -> LineSearchResult:
    """Largest fraction ``backtrack_ratio**j`` (``j < max_backtracks``) of ``direction`` that passes.

    Parameters
    ----------
    evaluate:
        ``evaluate(theta') -> (surrogate_reward, surrogate_cost, mean_kl)`` at
        the flat parameters ``theta'`` (it may load them into a model).  The
        cost surrogate must be in the units of ``c`` (per-episode cost).
    theta, direction:
        Flat 1-D parameters ``theta_k`` and the full step ``x`` (e.g.
        ``cpo_step(...).direction``).
    c:
        ``J_C(pi_k) - d``; the surrogate cost may rise by at most ``max(-c, 0)``.
        ``None`` disables the cost test (TRPO; the cost value is ignored).
    delta:
        KL radius; candidates need ``mean_kl <= delta``.
    require_improvement:
        Demand a strictly positive surrogate reward change (set it for the
        feasible cases, clear it for recovery / infeasible steps).
    baseline:
        The values at ``theta_k`` if already known, which saves the
        evaluation of ``theta_k``: ``(surrogate_reward, surrogate_cost)`` or
        ``(surrogate_reward, surrogate_cost, mean_kl)`` (the KL is not used;
        it is 0 at ``theta_k``).  Typically the surrogates the caller
        differentiated for ``g`` and ``b`` (tensors are detached).  With
        ``c=None`` the cost entry may be any number (e.g. ``nan``).
        ``None`` (default): call ``evaluate(theta)``.
    kl_rescale:
        After a trial rejected for its KL alone (``kl > delta``), try next the
        fraction ``f * max(backtrack_ratio, 0.99 sqrt(delta / kl))`` instead of
        ``f * backtrack_ratio``: the KL is quadratic in the fraction near
        ``theta_k``, so a step whose true KL overshoots the quadratic model by
        a few per cent is shrunk by about that much, not by ``backtrack_ratio``
        (the fractions are then no longer powers of ``backtrack_ratio``).
        Every candidate still passes the same tests.

    ``evaluate`` may leave the model at the last candidate: load
    ``result.params`` afterwards.
    """
    if not isinstance(theta, Tensor) or not isinstance(direction, Tensor):
        raise TypeError("theta and direction must be torch tensors")
    if theta.dim() != 1 or direction.shape != theta.shape:
        raise ValueError(f"theta and direction must be 1-D of equal shape, got {tuple(theta.shape)}, {tuple(direction.shape)}")
    if not bool(torch.isfinite(theta).all()) or not bool(torch.isfinite(direction).all()):
        raise ValueError("theta or direction contains non-finite values")
    check_cost = c is not None
    c = 0.0 if c is None else float(c)
    delta = float(delta)
    if not math.isfinite(c):
        raise ValueError(f"c must be finite, got {c}")
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"delta must be finite and > 0, got {delta}")
    if not (0.0 < backtrack_ratio < 1.0):
        raise ValueError(f"backtrack_ratio must lie in (0, 1), got {backtrack_ratio}")
    if isinstance(max_backtracks, bool) or not isinstance(max_backtracks, int) or max_backtracks < 1:
        raise ValueError(f"max_backtracks must be an int >= 1, got {max_backtracks!r}")

    if baseline is None:
        base = tuple(evaluate(theta))
        if len(base) != 3:
            raise ValueError(f"evaluate() must return (reward, cost, kl), got {len(base)} values")
    else:
        base = tuple(baseline)
        if len(base) not in (2, 3):
            raise ValueError(
                f"baseline must be (reward, cost) or (reward, cost, kl) at theta_k, got {len(base)} values"
            )
    r0, c0 = _scalar(base[0], "reward"), _scalar(base[1], "cost")
    if not check_cost:
        c0 = 0.0 if not math.isfinite(c0) else c0
    if not (math.isfinite(r0) and math.isfinite(c0)):
        raise ValueError(f"surrogates at theta_k are non-finite (reward={r0}, cost={c0})")
    cost_slack = max(-c, 0.0)

    trials: list[LineSearchTrial] = []
    if bool((direction == 0).all()):
        return LineSearchResult(theta.clone(), False, 0.0, 0, 0.0, 0.0, 0.0, ())
    rescaled = False  # fractions stay exactly backtrack_ratio ** j until a KL rescale
    for j in range(max_backtracks):
        frac = backtrack_ratio ** j
        if j and (kl_rescale or rescaled):
            last = trials[-1]
            shrink = backtrack_ratio
            if kl_rescale and last.reason == "kl" and last.kl > delta:
                shrink = max(backtrack_ratio, 0.99 * math.sqrt(delta / last.kl))
            rescaled = rescaled or shrink != backtrack_ratio
            frac = last.fraction * shrink if rescaled else frac
        cand = theta + frac * direction
        try:
            values = tuple(evaluate(cand))
        except ValueError:  # e.g. a distribution refusing the candidate's parameters (inf / 0 scale)
            trials.append(LineSearchTrial(frac, math.nan, math.nan, math.nan, False, "invalid"))
            continue
        rn, cn, kl = (_scalar(v, n) for v, n in zip(values, ("reward", "cost", "kl")))
        dr, dc = rn - r0, (cn - c0 if check_cost else 0.0)
        if not (math.isfinite(dr) and math.isfinite(dc) and math.isfinite(kl)):
            reason = "non-finite"
        elif kl > delta:
            reason = "kl"
        elif dc > cost_slack:
            reason = "cost"
        elif require_improvement and not dr > 0:
            reason = "reward"
        else:
            reason = "accepted"
        ok = reason == "accepted"
        trials.append(LineSearchTrial(frac, dr, dc, kl, ok, reason))
        if ok:
            return LineSearchResult(cand, True, frac, j, dr, dc, kl, tuple(trials))
    return LineSearchResult(theta.clone(), False, 0.0, max_backtracks, 0.0, 0.0, 0.0, tuple(trials))
