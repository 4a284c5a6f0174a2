"""Analytic CPO step (Achiam et al. 2017, sec. 6.1 and appendix 10.2) and TRPO step.

The local problem, eq. (10), in the *maximisation* form used throughout::

    maximise  g^T x   subject to   b^T x + c <= 0,   0.5 x^T H x <= delta

``g``: gradient of the reward surrogate, ``b``: gradient of the cost surrogate,
``c = J_C(pi_k) - d``, ``H``: (damped) Hessian of the mean KL, ``x = theta - theta_k``.

The appendix's theorem is stated for ``min g^T x s.t. x^T H x <= delta``;
substituting ``g -> -g`` and ``delta -> 2 delta`` gives, with
``q = g^T H^-1 g``, ``r = g^T H^-1 b``, ``s = b^T H^-1 b``,
``A = q - r^2/s``, ``B = 2 delta - c^2/s``:

* dual (eq. 11): ``min_{lam, nu >= 0} (q - 2 nu r + nu^2 s)/(2 lam) - nu c + lam delta``;
* ``nu*(lam) = max(0, (lam c + r)/s)``  (note ``+ r``, the paper's ``lam c - r``
  belongs to the min form);
* on ``Lambda_a = {lam c + r > 0}``: ``D_a = A/(2 lam) + lam B/2 - r c/s``,
  minimised at ``lam_a = sqrt(A/B)``; on ``Lambda_b = {lam c + r <= 0}``:
  ``D_b = q/(2 lam) + lam delta``, minimised at ``lam_b = sqrt(q/(2 delta))``;
* primal (eq. 12/13): ``x* = H^-1 (g - nu* b) / lam*``;
* infeasible and unrecoverable (``c > 0``, ``B < 0``), eq. (14):
  ``x = -sqrt(2 delta / s) H^-1 b``.

Units: ``c``, the cost surrogate (whose gradient is ``b``) and the limit ``d``
must use the same per-episode cost estimator; cost advantages are centred but
not rescaled by default (:func:`process_advantages`), since dividing them by
their standard deviation would rescale ``b`` but not ``c``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from fcpo.solvers.config import CPOConfig
from fcpo.solvers.conjugate_gradient import CGResult, conjugate_gradient
from fcpo.solvers.line_search import LineSearchResult, backtracking_line_search

__all__ = [
    "CASE_TRPO",
    "CASE_TRPO_ZERO_COST_GRAD",
    "CASE_TRPO_ALL_FEASIBLE",
    "CASE_TRPO_INACTIVE",
    "CASE_FEASIBLE_BOUNDARY",
    "CASE_INFEASIBLE_RECOVERABLE",
    "CASE_INFEASIBLE_RECOVERY",
    "CASE_INFEASIBLE_ZERO_COST_GRAD",
    "FEASIBLE_CASES",
    "CPO_CASES",
    "Constraints",
    "StepResult",
    "UpdateResult",
    "cpo_step",
    "trpo_step",
    "cpo_update",
    "trpo_update",
    "solve_cpo_dual",
    "process_advantages",
]

#: plain TRPO step (``trpo_step``; no constraint).
CASE_TRPO = "trpo"
#: ``b^T b <= cost_grad_tol`` and ``c <= 0``: TRPO step.
CASE_TRPO_ZERO_COST_GRAD = "trpo_zero_cost_grad"
#: ``c < 0`` and ``B <= 0``: the whole trust region is feasible, TRPO step.
CASE_TRPO_ALL_FEASIBLE = "trpo_all_feasible"
#: ``c <= 0`` and the TRPO step ``x_r`` already satisfies ``c + b^T x_r <= 0``: the
#: constraint is inactive (``nu* = 0``), TRPO step; ``H x = b`` was not solved, so
#: ``s``, ``A`` and ``B`` are 0.0 (not computed) (``CPOConfig.skip_inactive_cost_solve``).
CASE_TRPO_INACTIVE = "trpo_constraint_inactive"
#: ``c <= 0`` and ``B > 0``: the constraint boundary cuts the region, dual solution.
CASE_FEASIBLE_BOUNDARY = "feasible_boundary"
#: ``c > 0`` and ``B >= 0``: infeasible but the region meets the feasible set, dual solution.
CASE_INFEASIBLE_RECOVERABLE = "infeasible_recoverable"
#: ``c > 0`` and ``B < 0``: recovery step ``-sqrt(2 delta/s) H^-1 b`` (eq. 14).
CASE_INFEASIBLE_RECOVERY = "infeasible_recovery"
#: fallback: ``c > 0`` but ``b^T b <= cost_grad_tol``; nothing can reduce the cost
#: to first order, so the step is zero.
CASE_INFEASIBLE_ZERO_COST_GRAD = "infeasible_zero_cost_grad"

FEASIBLE_CASES = frozenset(
    {CASE_TRPO, CASE_TRPO_ZERO_COST_GRAD, CASE_TRPO_ALL_FEASIBLE, CASE_TRPO_INACTIVE, CASE_FEASIBLE_BOUNDARY}
)
CPO_CASES = (
    CASE_TRPO_ZERO_COST_GRAD,
    CASE_TRPO_ALL_FEASIBLE,
    CASE_FEASIBLE_BOUNDARY,
    CASE_INFEASIBLE_RECOVERABLE,
    CASE_INFEASIBLE_RECOVERY,
    CASE_INFEASIBLE_ZERO_COST_GRAD,
    CASE_TRPO_INACTIVE,  # appended: indices of the others (fcpo.runs' cpo_case_index) are unchanged
)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Constraints:
    """A vector of constraints ``J_{C_i}(pi) <= d_i``.

    ``values`` are the current estimates ``J_{C_i}(pi_k)`` and ``limits`` the
    ``d_i``, both 1-D and in per-episode cost units.  The analytic CPO step
    handles exactly one (:meth:`scalar_c`); Lagrangian methods use all.
    """

    names: tuple[str, ...]
    limits: Tensor
    values: Tensor

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        object.__setattr__(self, "names", names)
        lim = torch.as_tensor(self.limits, dtype=torch.float64).reshape(-1) if not isinstance(
            self.limits, Tensor) else self.limits.detach().reshape(-1)
        val = torch.as_tensor(self.values, dtype=torch.float64).reshape(-1) if not isinstance(
            self.values, Tensor) else self.values.detach().reshape(-1)
        if not (len(names) == lim.numel() == val.numel()) or not names:
            raise ValueError(
                f"names, limits and values must have equal non-zero length, got "
                f"{len(names)}, {lim.numel()}, {val.numel()}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"constraint names must be unique, got {names}")
        if not (bool(torch.isfinite(lim).all()) and bool(torch.isfinite(val).all())):
            raise ValueError("constraint limits and values must be finite")
        object.__setattr__(self, "limits", lim)
        object.__setattr__(self, "values", val)

    @classmethod
    def single(cls, name: str, limit: float, value: float) -> "Constraints":
        return cls((name,), torch.tensor([float(limit)], dtype=torch.float64),
                   torch.tensor([float(value)], dtype=torch.float64))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def c(self) -> Tensor:
        """``J_C(pi_k) - d`` per constraint (positive = violated)."""
        return self.values - self.limits

    @property
    def satisfied(self) -> Tensor:
        return self.c <= 0

    def scalar_c(self) -> float:
        if len(self) != 1:
            raise ValueError(
                f"the analytic CPO step handles exactly one constraint, got {len(self)} "
                f"({', '.join(self.names)}); use a Lagrangian method for several"
            )
        return float(self.c[0])


@dataclass(frozen=True)
class StepResult:
    """Output of :func:`cpo_step` / :func:`trpo_step`.

    ``direction`` is the full step ``x`` (already scaled; ``theta_{k+1} = theta_k + x``
    before line search).  ``lam``, ``nu`` are the dual variables of eq. (11) with
    ``x = H^-1 (g - nu b)/lam``; they are 0.0 where undefined (recovery and
    zero-step cases) and may be ``inf`` when the trust region only touches the
    constraint (``B == 0``).  ``q, r, s, A, B`` are the scalars of appendix 10.2
    (0.0 where not computed).  ``predicted_*`` come from the local model:
    ``g^T x``, ``b^T x`` and ``0.5 x^T H x``.
    """

    direction: Tensor
    lam: float
    nu: float
    case: str
    q: float = 0.0
    r: float = 0.0
    s: float = 0.0
    A: float = 0.0
    B: float = 0.0
    c: float = 0.0
    delta: float = 0.0
    predicted_reward_change: float = 0.0
    predicted_cost_change: float = 0.0
    predicted_kl: float = 0.0
    cg: Optional[CGResult] = field(default=None, repr=False)

    @property
    def feasible(self) -> bool:
        """Whether ``pi_k`` satisfied the constraint (line search then demands reward gain)."""
        return self.case in FEASIBLE_CASES

    @property
    def constraint_active(self) -> bool:
        return self.nu > 0.0


def _guard(step: "StepResult") -> "StepResult":
    """Last line of defence: no NaN / inf direction and no NaN scalar ever leaves."""
    if not bool(torch.isfinite(step.direction).all()):
        raise ValueError(f"CPO step ({step.case}) is non-finite: inputs out of floating-point range")
    for name in ("lam", "nu", "q", "r", "s", "A", "B", "predicted_reward_change",
                 "predicted_cost_change", "predicted_kl"):
        if math.isnan(getattr(step, name)):
            raise ValueError(f"CPO step ({step.case}): {name} is NaN")
    return step


@dataclass(frozen=True)
class UpdateResult:
    """A step plus its line search: ``params`` are the new flat parameters."""

    step: StepResult
    line_search: LineSearchResult

    @property
    def params(self) -> Tensor:
        return self.line_search.params


# --------------------------------------------------------------------------- helpers


def process_advantages(adv: Tensor, *, centre: bool = True, rescale: bool = False, eps: float = 1e-8) -> Tensor:
    """Centre (subtract the mean) and optionally rescale (divide by std + eps) advantages.

    Use ``centre=config.centre_cost_advantages, rescale=config.rescale_cost_advantages``
    for cost advantages: rescaling changes the units of ``b`` but not of ``c``.
    """
    if adv.numel() == 0:
        return adv
    out = adv - adv.mean() if centre else adv
    if rescale:
        std = out.std(unbiased=False) if adv.numel() > 1 else out.new_zeros(())
        out = out / (std + eps)
    return out


def _check_vec(v: Tensor, name: str) -> Tensor:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(v.shape)}")
    if not torch.is_floating_point(v):
        raise ValueError(f"{name} must be floating point, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} contains non-finite values")
    return v.detach()


def _check_scalar(v: object, name: str) -> float:
    if isinstance(v, Constraints):
        v = v.scalar_c()
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(
                f"{name} must be a scalar; the analytic CPO step handles one constraint, got shape {tuple(v.shape)}"
            )
        v = v.detach().reshape(()).item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _options(config: Optional[CPOConfig], delta, cg_iters, cg_residual_tol, cost_grad_tol):
    cfg = config if config is not None else CPOConfig()
    if not isinstance(cfg, CPOConfig):
        raise TypeError(f"config must be a CPOConfig, got {type(cfg).__name__}")
    delta = cfg.max_kl if delta is None else _check_scalar(delta, "delta")
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    it = cfg.cg_iters if cg_iters is None else cg_iters
    tol = cfg.cg_residual_tol if cg_residual_tol is None else float(cg_residual_tol)
    ctol = cfg.cost_grad_tol if cost_grad_tol is None else float(cost_grad_tol)
    if not (ctol >= 0 and math.isfinite(ctol)):
        raise ValueError(f"cost_grad_tol must be finite and >= 0, got {ctol}")
    return float(delta), it, tol, ctol


def _stack_results(rg: CGResult, rb: CGResult) -> CGResult:
    """One :class:`CGResult` for the systems ``H x = g`` and ``H x = b`` solved by two CG loops.

    Rows are ordered ``(g, b)`` as in a joint solve; ``iterations`` is the
    larger loop count (what a lock-step loop would report), the operator was
    called ``rg.iterations + rb.iterations`` times.
    """
    hg, hb = rg.residual_history, rb.residual_history
    history = tuple((h[0], hb[0][0]) for h in hg) + tuple((hg[-1][0], h[0]) for h in hb[1:])
    return CGResult(
        x=torch.stack([rg.x, rb.x]),
        iterations=max(rg.iterations, rb.iterations),
        column_iterations=rg.column_iterations + rb.column_iterations,
        residual_norms=rg.residual_norms + rb.residual_norms,
        rhs_norms=rg.rhs_norms + rb.rhs_norms,
        converged=rg.converged + rb.converged,
        breakdown=rg.breakdown + rb.breakdown,
        residual_history=history,
    )


def _solve(hvp, rhs: Tensor, iters: int, tol: float, keep: bool = False) -> CGResult:
    res = conjugate_gradient(hvp, rhs, max_iters=iters, residual_tol=tol, keep_directions=keep)
    if res.any_breakdown:
        raise ValueError(
            "hvp is not positive definite along a CG direction (p^T H p <= 0 or non-finite); "
            "increase damping or check the KL function"
        )
    if not bool(torch.isfinite(res.x).all()):
        raise ValueError("conjugate gradient produced non-finite values")
    return res


def _check_s(s: float) -> float:
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"invalid curvature s={s}: hvp is not positive definite")
    return s


def _div(a: float, b: float) -> float:
    """``a / b`` on [0, inf] with ``0/x = 0`` and ``a/0 = inf`` for ``a > 0``."""
    if a == 0.0:
        return 0.0
    if b == 0.0:
        return math.inf
    return a / b


def _mul(a: float, b: float) -> float:
    """``a * b`` with ``0 * inf = 0``."""
    return 0.0 if a == 0.0 or b == 0.0 else a * b


def solve_cpo_dual(
    q: float, r: float, s: float, c: float, delta: float, A: Optional[float] = None
) -> tuple[float, float, str]:
    """Minimise the CPO dual (eq. 11, max form) over ``lam >= 0`` for ``s > 0``, ``B >= 0``.

    Returns ``(lam*, nu*, piece)`` with ``piece`` ``"a"`` (``nu > 0`` branch,
    ``Lambda_a``) or ``"b"`` (``nu = 0``).  ``lam`` lies in ``[0, inf]``.  The
    dual is convex in ``lam``, so the minimiser is the better of the two
    branch minimisers each projected onto its (closed) branch interval
    (appendix 10.2, with ``r -> -r``, ``delta -> 2 delta``).  ``A`` overrides
    ``q - r^2/s`` (negative values are clamped to 0).
    """
    A = max(q - r * (r / s) if A is None else A, 0.0)
    B = 2.0 * delta - c * (c / s)
    inf = math.inf
    if c > 0:
        lm = -r / c
        a_iv = (max(lm, 0.0), inf)
        b_iv = (0.0, lm) if lm > 0 else None
    elif c < 0:
        lm = -r / c
        a_iv = (0.0, lm) if lm > 0 else None
        b_iv = (max(lm, 0.0), inf)
    else:
        a_iv = (0.0, inf) if r > 0 else None
        b_iv = None if r > 0 else (0.0, inf)

    best = (inf, 0.0, "b")
    if a_iv is not None:
        lam = math.sqrt(A / B) if B > 0 else inf
        lam = min(max(lam, a_iv[0]), a_iv[1])
        val = 0.5 * _div(A, lam) + 0.5 * _mul(lam, max(B, 0.0)) - r * c / s
        best = (val, lam, "a")
    if b_iv is not None:
        lam = min(max(math.sqrt(q / (2.0 * delta)), b_iv[0]), b_iv[1])
        val = 0.5 * _div(q, lam) + _mul(lam, delta)
        if val < best[0] or a_iv is None:
            best = (val, lam, "b")
    _, lam, piece = best
    if piece == "b":
        nu = 0.0
    elif lam == inf:
        nu = inf
    else:
        nu = max(0.0, (lam * c + r) / s)
    return lam, nu, piece


# --------------------------------------------------------------------------- steps


def trpo_step(
    g: Tensor,
    delta: Optional[float],
    hvp: Callable[[Tensor], Tensor],
    *,
    config: Optional[CPOConfig] = None,
    cg_iters: Optional[int] = None,
    cg_residual_tol: Optional[float] = None,
) -> StepResult:
    """TRPO step ``x = sqrt(2 delta / q) H^-1 g`` (maximise ``g^T x`` s.t. ``0.5 x^T H x <= delta``).

    ``hvp`` must already include damping.  Options default to ``config``
    (``CPOConfig()`` if omitted); ``delta=None`` means ``config.max_kl``.  A zero
    gradient gives a zero step.
    """
    g = _check_vec(g, "g")
    delta, iters, tol, _ = _options(config, delta, cg_iters, cg_residual_tol, None)
    res = _solve(hvp, g, iters, tol)
    return _guard(_trpo_from(g, res.x, delta, CASE_TRPO, res, c=0.0))


def _trpo_from(g: Tensor, vg: Tensor, delta: float, case: str, cg: CGResult, c: float,
               r: float = 0.0, s: float = 0.0) -> StepResult:
    q = float(torch.dot(g, vg))
    if not math.isfinite(q) or q < 0:
        raise ValueError(f"g^T H^-1 g = {q} is negative or non-finite: hvp is not positive definite")
    if q == 0.0:
        return StepResult(torch.zeros_like(g), 0.0, 0.0, case, q=0.0, r=r, s=s, c=c, delta=delta, cg=cg)
    alpha = math.sqrt(2.0 * delta / q)
    x = alpha * vg
    pr = float(torch.dot(g, x))
    return StepResult(
        x, math.sqrt(q / (2.0 * delta)), 0.0, case, q=q, r=r, s=s,
        A=(q - r * (r / s)) if s > 0 else 0.0, B=(2 * delta - c * (c / s)) if s > 0 else 0.0,
        c=c, delta=delta, predicted_reward_change=pr, predicted_kl=0.5 * alpha * pr, cg=cg,
    )


def cpo_step(
    g: Tensor,
    b: Tensor,
    c: Union[float, Tensor, Constraints],
    delta: Optional[float],
    hvp: Callable[[Tensor], Tensor],
    *,
    config: Optional[CPOConfig] = None,
    cg_iters: Optional[int] = None,
    cg_residual_tol: Optional[float] = None,
    cost_grad_tol: Optional[float] = None,
    joint_cg: Optional[bool] = None,
) -> StepResult:
    """Analytic CPO step for one constraint (Achiam et al. 2017, eqs. 10-14, appendix 10.2).

    Parameters
    ----------
    g, b:
        Flat 1-D gradients of the reward and cost surrogates at ``theta_k``.
    c:
        ``J_C(pi_k) - d`` in per-episode cost (same estimator as the cost
        surrogate and ``d``); a float, a one-element tensor or a
        one-constraint :class:`Constraints`.
    delta:
        KL radius (``0.5 x^T H x <= delta``); ``None`` means ``config.max_kl``.
    hvp:
        ``v -> H v`` for the damped KL Hessian, accepting ``(n,)`` and ``(k, n)``
        (see :func:`~fcpo.solvers.fisher_vector_product`).
    config, cg_iters, cg_residual_tol, cost_grad_tol:
        Limits; explicit keywords override ``config`` (default ``CPOConfig()``).
    joint_cg:
        Feasible start (``c <= 0``): solve ``H x = g`` and ``H x = b`` in one
        lock-step CG loop (one ``hvp`` call on a ``(2, n)`` stack per
        iteration) if true, else in two loops; ``None`` means
        ``config.joint_cg``.  Used only with
        ``config.skip_inactive_cost_solve=False`` and ``cost_solve="cg"``:
        otherwise ``H x = g`` is solved first, and ``H x = b`` only if the
        TRPO step violates the linearised constraint (case
        ``"trpo_constraint_inactive"`` when it does not).  Infeasible start (``c > 0``): ``H x = b`` is
        always solved first and ``H x = g`` only if the step is not the
        recovery step (eq. 14 needs only ``s``); the recovery result then has
        ``q = A = 0.0`` (not computed) and ``r = g^T H^-1 b``.

    ``config.cost_solve="subspace"``: the second system is not solved by CG;
    problem (10) is solved exactly on the first solve's Krylov space plus
    ``config.cost_subspace_dim`` vectors of the other right-hand side (see
    :class:`~fcpo.solvers.CPOConfig`); ``cg`` is then the first solve's result.

    Cases (see
    the ``CASE_*`` constants): zero cost gradient and feasible, whole region
    feasible, or constraint inactive at the TRPO step -> TRPO step; boundary cutting the region or infeasible but
    recoverable -> dual solution (eq. 12-13); infeasible and unrecoverable ->
    recovery (eq. 14); infeasible with zero cost gradient -> zero step.
    Raises ``ValueError`` on bad input or a non-positive-definite ``hvp``;
    never returns NaN.
    """
    g = _check_vec(g, "g")
    b = _check_vec(b, "b")
    if b.shape != g.shape:
        raise ValueError(f"g and b must have the same shape, got {tuple(g.shape)} and {tuple(b.shape)}")
    b = b.to(g.dtype)
    c = _check_scalar(c, "c")
    delta, iters, tol, ctol = _options(config, delta, cg_iters, cg_residual_tol, cost_grad_tol)
    cfg = config if config is not None else CPOConfig()
    joint = cfg.joint_cg if joint_cg is None else bool(joint_cg)
    subspace = cfg.cost_solve == "subspace"

    if float(torch.dot(b, b)) <= ctol:
        if c <= 0:
            res = _solve(hvp, g, iters, tol)
            return _guard(_trpo_from(g, res.x, delta, CASE_TRPO_ZERO_COST_GRAD, res, c=c))
        return StepResult(torch.zeros_like(g), 0.0, 0.0, CASE_INFEASIBLE_ZERO_COST_GRAD, c=c, delta=delta)

    if c > 0:
        # infeasible: the recovery test B < 0 needs only s = b^T H^-1 b, so the
        # cost system is solved first and H x = g only when the step needs it
        res_b = _solve(hvp, b, iters, tol, keep=subspace)
        vb = res_b.x
        s = _check_s(float(torch.dot(b, vb)))
        B = 2.0 * delta - c * (c / s)
        if B < 0:  # eq. (14): no feasible point in the trust region
            beta = -math.sqrt(2.0 * delta / s)
            x = beta * vb
            return _guard(StepResult(
                x, 0.0, 0.0, CASE_INFEASIBLE_RECOVERY, q=0.0, r=float(torch.dot(g, vb)), s=s, A=0.0, B=B,
                c=c, delta=delta, predicted_reward_change=float(torch.dot(g, x)), predicted_cost_change=beta * s,
                predicted_kl=0.5 * beta * beta * s, cg=res_b,
            ))
        if subspace:
            return _guard(_subspace_step(g, b, c, delta, hvp, res_b, first_is_g=False,
                                         extra=cfg.cost_subspace_dim))
        res_g = _solve(hvp, g, iters, tol)
        res = _stack_results(res_g, res_b)
    elif cfg.skip_inactive_cost_solve or subspace:
        res_g = _solve(hvp, g, iters, tol, keep=subspace)
        if cfg.skip_inactive_cost_solve:
            trpo = _trpo_from(g, res_g.x, delta, CASE_TRPO_INACTIVE, res_g, c=c, r=float(torch.dot(b, res_g.x)))
            cost_change = float(torch.dot(b, trpo.direction))
            if c + cost_change <= 0:  # KKT: nu* = 0, the CPO solution is the TRPO step
                return _guard(replace(trpo, predicted_cost_change=cost_change))
        if subspace:
            return _guard(_subspace_step(g, b, c, delta, hvp, res_g, first_is_g=True, extra=cfg.cost_subspace_dim))
        res = _stack_results(res_g, _solve(hvp, b, iters, tol))
    elif joint:
        res = _solve(hvp, torch.stack([g, b]), iters, tol)
    else:
        res = _stack_results(_solve(hvp, g, iters, tol), _solve(hvp, b, iters, tol))
    return _guard(_dual_step(g, b, res.x[0], res.x[1], c, delta, res))


def _dual_step(g: Tensor, b: Tensor, vg: Tensor, vb: Tensor, c: float, delta: float, res: CGResult,
               eps: Optional[float] = None) -> StepResult:
    """The step from ``vg ~ H^-1 g`` and ``vb ~ H^-1 b`` once both are known (appendix 10.2, eq. 12-13).

    ``eps``: machine epsilon of the data the vectors came from (default that of ``g``)."""
    q = float(torch.dot(g, vg))
    s = _check_s(float(torch.dot(b, vb)))
    r = float(torch.dot(b, vg))  # = g^T H^-1 b; this choice makes b^T x + c = 0 exact when active
    if not (math.isfinite(q) and math.isfinite(r)) or q < 0:
        raise ValueError(f"invalid curvature q={q}, s={s}: hvp is not positive definite")
    A = q - r * (r / s)
    B = 2.0 * delta - c * (c / s)
    if c < 0 and B <= 0:  # whole trust region feasible
        return _trpo_from(g, vg, delta, CASE_TRPO_ALL_FEASIBLE, res, c=c, r=r, s=s)

    case = CASE_FEASIBLE_BOUNDARY if c <= 0 else CASE_INFEASIBLE_RECOVERABLE
    # A = q - r^2/s >= 0 by Cauchy-Schwarz; values at rounding level mean g is
    # parallel to b (in the H^-1 metric) and are set to 0 (no noise direction).
    eps = torch.finfo(g.dtype).eps if eps is None else eps
    A_eff = A if A > 64.0 * eps * q else 0.0
    lam, nu, piece = solve_cpo_dual(q, r, s, c, delta, A=A_eff)
    alpha = 1.0 / lam if 0.0 < lam < math.inf else 0.0  # lam = 0 only with a zero numerator
    if piece == "b":  # nu = 0: x = H^-1 g / lam
        beta = 0.0
    else:  # nu = (lam c + r)/s: x = (H^-1 g - (r/s) H^-1 b)/lam - (c/s) H^-1 b
        beta = -alpha * r / s - c / s
    x = alpha * vg + beta * vb
    pr = float(torch.dot(g, x))
    pc = float(torch.dot(b, x))
    return StepResult(
        x, lam, nu, case, q=q, r=r, s=s, A=A, B=B, c=c, delta=delta,
        predicted_reward_change=pr, predicted_cost_change=pc,
        predicted_kl=0.5 * (alpha * pr + beta * pc), cg=res,
    )


def _subspace_step(g: Tensor, b: Tensor, c: float, delta: float, hvp, first: CGResult, *, first_is_g: bool,
                   extra: int) -> StepResult:
    """Problem (10) solved exactly on ``span(P, u, H u, ..)`` (``CPOConfig.cost_solve="subspace"``).

    ``P`` are the search directions of the first CG solve (``first``; a basis of
    ``K(H, g)``, or of ``K(H, b)`` after an infeasible start) with their
    products ``H P`` already known; ``u`` is the other right-hand side, extended
    by Lanczos vectors to ``extra`` new basis vectors at one product each.  With
    ``W`` the basis (rows) and ``G = W H W^T``, the coordinates ``z`` of
    ``x = W^T M z``, ``M = D U L^-1/2`` (``D G D = U L U^T`` with ``D`` making
    the diagonal 1; eigen-directions at rounding level are dropped), make the
    restricted KL Hessian the identity and turn eq. (10) into the same problem
    with ``H = I``: ``H^-1 g -> g_z``, ``H^-1 b -> b_z``.  The result is
    the exact optimum of (10) over the subspace with the true ``H``; its
    ``q, r, s`` are those of the projected problem (``q <= g^T H^-1 g``).
    """
    P, HP = first.directions, first.direction_products
    u = b if first_is_g else g
    rows, prods = [P], [HP]
    lanczos: list[Tensor] = []
    u_norm = float(u.norm())
    v = u / u_norm if u_norm > 0 else u
    for j in range(extra if u_norm > 0 else 0):  # a zero vector adds nothing to the span
        Hv = hvp(v)
        if not isinstance(Hv, Tensor) or Hv.shape != v.shape:
            raise ValueError(f"hvp returned shape {tuple(getattr(Hv, 'shape', ()))}, expected {tuple(v.shape)}")
        Hv = Hv.detach()
        if not bool(torch.isfinite(Hv).all()):
            raise ValueError("hvp returned non-finite values")
        rows.append(v.unsqueeze(0))
        prods.append(Hv.unsqueeze(0))
        lanczos.append(v)
        if j + 1 < extra:  # next Lanczos vector: H v orthogonalised against the previous ones (twice, for float32)
            w = Hv
            for _ in range(2):
                for prev in lanczos:
                    w = w - torch.dot(prev, w) * prev
            nw = float(w.norm())
            if not nw > 0 or not math.isfinite(nw):
                break
            v = w / nw
    W = torch.cat(rows).to(torch.float64)
    HW = torch.cat(prods).to(torch.float64)
    G = W @ HW.T
    G = 0.5 * (G + G.T)
    diag = torch.diagonal(G)
    if not bool(torch.isfinite(G).all()) or bool((diag <= 0).any()):
        raise ValueError("hvp is not positive definite on the recycled subspace (w^T H w <= 0 or non-finite)")
    d = diag.rsqrt()
    evals, evecs = torch.linalg.eigh(d[:, None] * G * d[None, :])
    keep = evals > 1e3 * torch.finfo(g.dtype).eps * float(evals.max())
    M = d[:, None] * evecs[:, keep] * evals[keep].rsqrt()[None, :]  # W coefficients of the z coordinates
    g64, b64 = g.to(torch.float64), b.to(torch.float64)
    gz, bz = M.T @ (W @ g64), M.T @ (W @ b64)
    inner = _dual_step(gz, bz, gz, bz, c, delta, first, eps=torch.finfo(g.dtype).eps)
    return replace(inner, direction=((M @ inner.direction) @ W).to(g.dtype))


# --------------------------------------------------------------------------- updates


def cpo_update(
    theta: Tensor,
    g: Tensor,
    b: Tensor,
    c: Union[float, Tensor, Constraints],
    hvp: Callable[[Tensor], Tensor],
    evaluate: Callable[[Tensor], Sequence],
    *,
    config: Optional[CPOConfig] = None,
    baseline: Optional[Sequence] = None,
) -> UpdateResult:
    """One CPO policy update: :func:`cpo_step` then :func:`backtracking_line_search`.

    ``evaluate(theta') -> (surrogate_reward, surrogate_cost, mean_kl)``; the
    line search demands reward improvement only in the feasible cases.
    ``baseline``: the surrogates at ``theta`` if known, ``(reward, cost)`` or
    ``(reward, cost, kl)`` -- pass the values ``g`` and ``b`` were taken from
    to save one evaluation (default ``None``: ``evaluate(theta)`` is called).
    Load ``result.params`` into the policy afterwards.
    """
    cfg = config if config is not None else CPOConfig()
    step = cpo_step(g, b, c, cfg.max_kl, hvp, config=cfg)
    ls = backtracking_line_search(
        evaluate, theta.detach(), step.direction, c=step.c, delta=cfg.max_kl,
        require_improvement=step.feasible, backtrack_ratio=cfg.backtrack_ratio,
        max_backtracks=cfg.max_backtracks, baseline=baseline, kl_rescale=cfg.kl_rescale_backtracking,
    )
    return UpdateResult(step, ls)


def trpo_update(
    theta: Tensor,
    g: Tensor,
    hvp: Callable[[Tensor], Tensor],
    evaluate: Callable[[Tensor], Sequence],
    *,
    config: Optional[CPOConfig] = None,
    baseline: Optional[Sequence] = None,
) -> UpdateResult:
    """One TRPO policy update (no cost test in the line search; ``evaluate``'s cost is ignored).

    ``baseline`` as in :func:`cpo_update`; its cost entry is ignored (e.g. ``(reward, nan)``).
    """
    cfg = config if config is not None else CPOConfig()
    step = trpo_step(g, cfg.max_kl, hvp, config=cfg)
    ls = backtracking_line_search(
        evaluate, theta.detach(), step.direction, c=None, delta=cfg.max_kl,
        require_improvement=True, backtrack_ratio=cfg.backtrack_ratio,
        max_backtracks=cfg.max_backtracks, baseline=baseline, kl_rescale=cfg.kl_rescale_backtracking,
    )
    return UpdateResult(step, ls)
