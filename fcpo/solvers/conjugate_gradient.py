"""Conjugate gradient for one or several right-hand sides sharing one operator.

CPO (Achiam et al. 2017, sec. 6.1) needs ``H^{-1} g`` and ``H^{-1} b``.  Both
are solved here by independent CG recurrences run in lock-step, so each
iteration makes a single call ``Avp(P)`` on the stacked search directions: one
Python round trip (and one batched Hessian-vector product) instead of two.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["CGResult", "conjugate_gradient"]


@dataclass(frozen=True)
class CGResult:
    """Solution and diagnostics of :func:`conjugate_gradient`.

    ``x`` has the shape of the right-hand side.  The per-right-hand-side tuples
    are ordered like the rows of a 2-D right-hand side (a single entry for 1-D).

    Attributes
    ----------
    iterations: number of loop iterations, i.e. calls of ``Avp``.
    column_iterations: CG iterations spent on each right-hand side.
    residual_norms: final recursive residual norm ``||b - A x||_2`` per RHS.
    rhs_norms: ``||b||_2`` per RHS (for relative residuals).
    converged: whether each RHS reached ``residual_tol``.
    breakdown: whether a non-positive or non-finite curvature ``p^T A p`` was met
        (``A`` not positive definite along ``p``); that RHS stopped there.
    residual_history: per loop iteration, the residual norms of all RHS
        (entry 0 is the initial residual ``||b||``).
    directions, direction_products: with ``keep_directions=True`` (1-D right-hand
        side only), the search directions ``p_0 .. p_{m-1}`` actually used, shape
        ``(m, n)``, and their products ``A p_i`` (the operator's outputs): an
        ``A``-conjugate basis of the Krylov space ``K_m(A, b)`` and its image, for
        recycling at no extra products (see ``cost_solve="subspace"`` in
        :class:`~fcpo.solvers.CPOConfig`); ``None`` otherwise.
    """

    x: Tensor
    iterations: int
    column_iterations: tuple[int, ...]
    residual_norms: tuple[float, ...]
    rhs_norms: tuple[float, ...]
    converged: tuple[bool, ...]
    breakdown: tuple[bool, ...]
    residual_history: tuple[tuple[float, ...], ...] = field(repr=False, default=())
    directions: Optional[Tensor] = field(repr=False, default=None)
    direction_products: Optional[Tensor] = field(repr=False, default=None)

    @property
    def residual_norm(self) -> float:
        """Largest final residual norm over the right-hand sides."""
        return max(self.residual_norms)

    @property
    def all_converged(self) -> bool:
        return all(self.converged)

    @property
    def any_breakdown(self) -> bool:
        return any(self.breakdown)


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor],
    b: Tensor,
    max_iters: int = 10,
    residual_tol: float = 1e-10,
    *,
    keep_directions: bool = False,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``v -> A v``.

    Parameters
    ----------
    Avp:
        The operator.  Called with a tensor of shape ``(n,)`` when ``b`` is 1-D,
        or ``(k', n)`` (a subset of the still-active rows, ``k' <= k``) when ``b``
        is ``(k, n)``; must return a tensor of the same shape.
    b:
        Right-hand side, shape ``(n,)`` or ``(k, n)`` (one system per row).
    max_iters:
        Maximum number of iterations (calls of ``Avp``).
    residual_tol:
        A row stops once ``||r||_2 <= residual_tol`` (absolute Euclidean norm).
    keep_directions:
        Return the search directions and their products (1-D ``b`` only; see
        :class:`CGResult`).  Costs memory ``2 m n``, no extra products.

    Starts from ``x0 = 0`` (Hestenes & Stiefel 1952).  A row whose curvature
    ``p^T A p`` is not positive and finite stops with ``breakdown=True`` and
    keeps its last iterate; the solution is never NaN unless ``Avp`` returned
    NaN on the very first product of a row (then that row is zero and flagged).
    """
    if not isinstance(b, Tensor):
        raise TypeError(f"b must be a torch.Tensor, got {type(b).__name__}")
    if b.dim() not in (1, 2) or b.shape[-1] == 0:
        raise ValueError(f"b must have shape (n,) or (k, n) with n > 0, got {tuple(b.shape)}")
    if not torch.is_floating_point(b):
        raise ValueError(f"b must be a floating-point tensor, got {b.dtype}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b contains non-finite values")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be an int >= 1, got {max_iters!r}")
    if not (residual_tol >= 0.0) or residual_tol != residual_tol or residual_tol == float("inf"):
        raise ValueError(f"residual_tol must be a finite number >= 0, got {residual_tol!r}")

    single = b.dim() == 1
    if keep_directions and not single:
        raise ValueError("keep_directions needs a 1-D right-hand side")
    kept_p: list[Tensor] = []
    kept_ap: list[Tensor] = []
    B = b.detach().unsqueeze(0) if single else b.detach()
    k, n = B.shape
    tol2 = float(residual_tol) ** 2

    X = torch.zeros_like(B)
    R = B.clone()
    P = B.clone()
    rr = (R * R).sum(dim=1)  # (k,)
    rr_list = rr.tolist()
    rhs_norms = tuple(v ** 0.5 for v in rr_list)
    active = [v > tol2 for v in rr_list]
    col_iters = [0] * k
    breakdown = [False] * k
    history = [tuple(rhs_norms)]

    iterations = 0
    for _ in range(max_iters):
        idx = [i for i in range(k) if active[i]]
        if not idx:
            break
        iterations += 1
        sel = torch.tensor(idx, dtype=torch.long, device=B.device) if len(idx) < k else None
        Pa = P if sel is None else P.index_select(0, sel)
        APa = Avp(Pa[0] if single else Pa)
        if not isinstance(APa, Tensor):
            raise TypeError("Avp must return a torch.Tensor")
        APa = APa.detach()
        if single:
            APa = APa.reshape(1, -1)
        if APa.shape != Pa.shape:
            raise ValueError(f"Avp returned shape {tuple(APa.shape)}, expected {tuple(Pa.shape)}")
        Ra = R if sel is None else R.index_select(0, sel)
        rra = rr if sel is None else rr.index_select(0, sel)
        pAp = (Pa * APa).sum(dim=1)
        ok = torch.isfinite(pAp) & (pAp > 0) & torch.isfinite(APa).all(dim=1)
        alpha = torch.where(ok, rra / torch.where(ok, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        Xa_step = alpha.unsqueeze(1) * Pa
        Ra_new = Ra - alpha.unsqueeze(1) * torch.where(ok.unsqueeze(1), APa, torch.zeros_like(APa))
        rr_new = (Ra_new * Ra_new).sum(dim=1)
        beta = rr_new / torch.where(rra > 0, rra, torch.ones_like(rra))
        Pa_new = Ra_new + beta.unsqueeze(1) * Pa
        if sel is None:
            X = X + Xa_step
            R, P, rr = Ra_new, Pa_new, rr_new
        else:
            X = X.index_add(0, sel, Xa_step)
            R = R.index_copy(0, sel, Ra_new)
            P = P.index_copy(0, sel, Pa_new)
            rr = rr.index_copy(0, sel, rr_new)
        ok_l = ok.tolist()
        rr_l = rr_new.tolist()
        if keep_directions and ok_l[0]:
            kept_p.append(Pa[0])
            kept_ap.append(APa[0])
        for j, i in enumerate(idx):
            if not ok_l[j]:
                breakdown[i] = True
                active[i] = False
                continue
            col_iters[i] += 1
            if rr_l[j] <= tol2:
                active[i] = False
        history.append(tuple(v ** 0.5 for v in rr.tolist()))

    res = tuple(v ** 0.5 for v in rr.tolist())
    converged = tuple((r * r) <= tol2 for r in res)
    return CGResult(
        x=X[0] if single else X,
        iterations=iterations,
        column_iterations=tuple(col_iters),
        residual_norms=res,
        rhs_norms=rhs_norms,
        converged=converged,
        breakdown=tuple(breakdown),
        residual_history=tuple(history),
        directions=(torch.stack(kept_p) if kept_p else B.new_zeros(0, n)) if keep_directions else None,
        direction_products=(torch.stack(kept_ap) if kept_ap else B.new_zeros(0, n)) if keep_directions else None,
    )
