"""Configuration of the CPO / TRPO policy-update solvers.

Every limit used by :mod:`fcpo.solvers` lives here and is actually read by the
solver that needs it (see ``cpo_step``, ``trpo_step``, ``conjugate_gradient``,
``fisher_vector_product`` and ``backtracking_line_search``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["CPOConfig"]


@dataclass(frozen=True)
class CPOConfig:
    """Hyper-parameters of one CPO (Achiam et al. 2017, eq. 10-14) policy update.

    Attributes
    ----------
    max_kl:
        Trust-region radius delta of eq. (10): the step satisfies
        ``0.5 * x^T H x <= max_kl`` with ``H`` the Hessian of the mean KL, and
        the line search accepts only candidates whose true mean KL is
        ``<= max_kl``.
    cg_iters:
        Maximum conjugate-gradient iterations (Hessian-vector products) per solve.
    cg_residual_tol:
        CG stops a right-hand side once the Euclidean norm of its residual
        ``||b - A x||_2`` is ``<= cg_residual_tol`` (an absolute norm, not the
        squared norm used by some reference TRPO code).
    damping:
        Tikhonov damping added to the KL Hessian, ``(H + damping * I) v``.  0.1 is
        the value used by the CPO authors' reference implementation
        (safety-starter-agents); it bounds the CG condition number by
        ``(lambda_max(H) + damping) / damping`` and makes the quadratic model
        slightly conservative (the line search checks the true KL anyway).
    backtrack_ratio:
        Step fraction multiplier between line-search trials (fractions
        ``1, r, r^2, ...``), in (0, 1).
    max_backtracks:
        Number of line-search trials; if none is accepted the update is a zero
        step.
    cost_grad_tol:
        The cost gradient counts as zero when ``b^T b <= cost_grad_tol``; a
        feasible policy then takes a plain TRPO step.
    centre_cost_advantages, rescale_cost_advantages:
        Cost advantages are centred but *not* divided by their standard
        deviation by default: rescaling would change the units of the
        cost-surrogate gradient ``b`` while ``c = J_C(pi_k) - d`` stays in
        per-episode cost, breaking ``b^T x + c <= 0``.
    centre_reward_advantages, rescale_reward_advantages:
        Reward advantages may be standardised freely (only the direction of
        ``g`` matters, eq. 13 rescales it).
    fvp_method:
        ``"autograd"`` (double back-propagation), ``"func"`` (``torch.func``
        forward-over-reverse) or ``"gauss_newton"`` (``J^T M J v``, needs the
        policy outputs); see :func:`fcpo.solvers.fisher_vector_product`.
    joint_cg:
        Feasible start: solve ``H x = g`` and ``H x = b`` in one lock-step CG
        loop (one ``hvp`` call on the ``(2, n)`` stack per iteration) rather
        than two loops.  Same products either way with the default row-loop
        ``hvp``; see :func:`fcpo.solvers.cpo_step` and ``benchmarks/cpo_step.py``.
    skip_inactive_cost_solve:
        Feasible start (``c <= 0``): solve ``H x = g`` first and, when the TRPO
        step ``x_r = sqrt(2 delta / q) H^-1 g`` already satisfies
        ``c + b^T x_r <= 0``, return it without solving ``H x = b`` (the
        constraint is inactive, ``nu* = 0`` by the KKT conditions, so the CPO
        solution *is* ``x_r``; case ``"trpo_constraint_inactive"``).  Same step
        as the full solve up to rounding (``tests/test_solvers_fast_paths.py``).
    cost_solve:
        How ``H^-1 b`` enters the step when both systems are needed.
        ``"cg"``: its own ``cg_iters``-iteration CG solve (Achiam et al.'s
        recipe).  ``"subspace"``: recycle the reward solve's CG directions
        ``P`` (a basis of the Krylov space ``K(H, g)``, with the products
        ``H P`` already computed) and add ``b`` plus ``cost_subspace_dim - 1``
        Krylov vectors of ``b`` (``cost_subspace_dim`` extra products), then
        solve problem (10) *exactly* on that subspace with the true ``H``
        restricted to it: the step satisfies ``0.5 x^T H x <= delta`` and
        ``b^T x + c <= 0`` exactly (no CG residual enters the model), at
        ``cg_iters + cost_subspace_dim`` products instead of ``2 cg_iters``.
        Not the same step as ``"cg"`` (a different approximation of the same
        problem); accuracy against a converged solve is measured in
        ``benchmarks/cpo_step.py``.
    cost_subspace_dim:
        ``cost_solve="subspace"`` only: products spent on the cost direction.
    kl_rescale_backtracking:
        Line search: after a trial rejected only for its KL, shrink the step by
        ``max(backtrack_ratio, 0.99 sqrt(max_kl / kl))`` rather than
        ``backtrack_ratio`` (see :func:`~fcpo.solvers.backtracking_line_search`).
    """

    max_kl: float = 0.01
    cg_iters: int = 10
    cg_residual_tol: float = 1e-10
    damping: float = 0.1
    backtrack_ratio: float = 0.8
    max_backtracks: int = 10
    cost_grad_tol: float = 1e-8
    centre_cost_advantages: bool = True
    rescale_cost_advantages: bool = False
    centre_reward_advantages: bool = True
    rescale_reward_advantages: bool = True
    fvp_method: str = "autograd"
    joint_cg: bool = True
    skip_inactive_cost_solve: bool = True
    cost_solve: str = "cg"
    cost_subspace_dim: int = 2
    kl_rescale_backtracking: bool = False

    def __post_init__(self) -> None:
        def _pos(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if v < 0 or (v == 0 and not allow_zero):
                raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {v!r}")

        _pos("max_kl")
        _pos("cg_residual_tol", allow_zero=True)
        _pos("damping", allow_zero=True)
        _pos("cost_grad_tol", allow_zero=True)
        for name in ("cg_iters", "max_backtracks", "cost_subspace_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        r = self.backtrack_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 < r < 1.0):
            raise ValueError(f"backtrack_ratio must lie in (0, 1), got {r!r}")
        for name in ("joint_cg", "skip_inactive_cost_solve", "kl_rescale_backtracking"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.cost_solve not in ("cg", "subspace"):
            raise ValueError(f"cost_solve must be 'cg' or 'subspace', got {self.cost_solve!r}")
        if self.fvp_method not in ("autograd", "func", "gauss_newton"):
            raise ValueError(f"fvp_method must be 'autograd', 'func' or 'gauss_newton', got {self.fvp_method!r}")

    @property
    def delta(self) -> float:
        """Alias of :attr:`max_kl` (the paper's delta)."""
        return self.max_kl

    def replace(self, **changes: Any) -> "CPOConfig":
        """Return a copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
