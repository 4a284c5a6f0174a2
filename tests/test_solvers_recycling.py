"""Issue 17: the inactive-constraint shortcut (no H^-1 b solve when the TRPO step already
satisfies the linearised constraint) and the recycled-subspace cost solve
(``cost_solve="subspace"``), against the full solve, dense linear algebra and scipy."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from fcpo.solvers import (
    CASE_FEASIBLE_BOUNDARY,
    CASE_INFEASIBLE_RECOVERABLE,
    CASE_TRPO_ALL_FEASIBLE,
    CASE_TRPO_INACTIVE,
    CPO_CASES,
    FEASIBLE_CASES,
    CPOConfig,
    conjugate_gradient,
    cpo_step,
)


def _problem(n, seed, spread=10.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * np.exp(rng.uniform(-np.log(spread), np.log(spread), n))) @ Q.T
    H = torch.from_numpy(0.5 * (H + H.T))
    return H, torch.from_numpy(rng.standard_normal(n)), torch.from_numpy(rng.standard_normal(n))


class Counting:
    def __init__(self, H):
        self.H, self.rows = H, []

    def __call__(self, v):
        self.rows.extend(v.reshape(-1, v.shape[-1]).clone())
        return v @ self.H


FULL = CPOConfig(skip_inactive_cost_solve=False)


def test_case_constants():
    assert CASE_TRPO_INACTIVE in FEASIBLE_CASES
    assert CPO_CASES[-1] == CASE_TRPO_INACTIVE  # appended: older indices unchanged
    assert CPO_CASES.index(CASE_FEASIBLE_BOUNDARY) == 2
    with pytest.raises(ValueError, match="skip_inactive_cost_solve"):
        CPOConfig(skip_inactive_cost_solve=1)
    with pytest.raises(ValueError, match="cost_solve"):
        CPOConfig(cost_solve="gmres")
    with pytest.raises(ValueError, match="cost_subspace_dim"):
        CPOConfig(cost_subspace_dim=0)
    with pytest.raises(ValueError, match="kl_rescale_backtracking"):
        CPOConfig(kl_rescale_backtracking="yes")


@pytest.mark.parametrize("seed", range(40))
def test_inactive_shortcut_is_the_full_solution(seed):
    """Random c <= 0 (inactive and active): the shortcut returns the full solve's step; when it
    fires, only the reward system was solved and nu* = 0 in the full solve (KKT)."""
    n, delta = 10, 0.03
    H, g, b = _problem(n, seed)
    rng = np.random.default_rng(1000 + seed)
    xr = math.sqrt(2 * delta / float(g @ torch.linalg.solve(H, g))) * torch.linalg.solve(H, g)
    # c around -b^T x_r: about half the draws leave the constraint inactive at the TRPO step
    c = min(0.0, -float(b @ xr) * rng.uniform(0.5, 1.5)) if seed % 5 else 0.0
    fast_hvp, full_hvp = Counting(H), Counting(H)
    fast = cpo_step(g, b, c, delta, fast_hvp, cg_iters=40, cg_residual_tol=1e-13)
    full = cpo_step(g, b, c, delta, full_hvp, config=FULL, cg_iters=40, cg_residual_tol=1e-13)
    inactive = c + float(b @ xr) <= 0
    if inactive:
        assert fast.case == CASE_TRPO_INACTIVE
        assert full.case in (CASE_TRPO_ALL_FEASIBLE, CASE_FEASIBLE_BOUNDARY) and full.nu == 0.0
        assert not any(torch.allclose(r, b) for r in fast_hvp.rows)  # H x = b never started
        assert len(fast_hvp.rows) == fast.cg.iterations <= len(full_hvp.rows) // 2 + 1
        assert fast.s == 0.0 and fast.nu == 0.0
        assert fast.lam == pytest.approx(full.lam, rel=1e-10)
        assert fast.predicted_cost_change == pytest.approx(float(b @ fast.direction), rel=1e-12)
        torch.testing.assert_close(fast.direction, xr, rtol=1e-8, atol=1e-11)
    else:
        assert fast.case == full.case == CASE_FEASIBLE_BOUNDARY and fast.nu > 0
    torch.testing.assert_close(fast.direction, full.direction, rtol=1e-9, atol=1e-12)
    assert fast.predicted_reward_change == pytest.approx(full.predicted_reward_change, rel=1e-9)
    assert fast.feasible


def test_inactive_shortcut_hand_checked():
    """H = I, g = (1, 0), b = (0, 1): the TRPO step (sqrt(2 delta), 0) has b^T x = 0, inactive for c <= 0."""
    g = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    hvp = Counting(torch.eye(2, dtype=torch.float64))
    step = cpo_step(g, b, -0.01, 0.02, hvp)
    assert step.case == CASE_TRPO_INACTIVE and len(hvp.rows) == 1
    torch.testing.assert_close(step.direction, torch.tensor([0.2, 0.0], dtype=torch.float64))
    assert step.lam == pytest.approx(1 / 0.2) and step.predicted_kl == pytest.approx(0.02)
    # c + b^T x = 0.01 > 0 once b tilts towards g: the full dual takes over
    step = cpo_step(g, torch.tensor([0.25, 1.0], dtype=torch.float64), -0.04, 0.02,
                    Counting(torch.eye(2, dtype=torch.float64)))
    assert step.case == CASE_FEASIBLE_BOUNDARY and step.nu > 0


@pytest.mark.parametrize("seed", range(6))
def test_cg_keeps_conjugate_directions(seed):
    n = 12
    H, g, _ = _problem(n, seed)
    res = conjugate_gradient(lambda v: v @ H, g, max_iters=6, residual_tol=0.0, keep_directions=True)
    P, HP = res.directions, res.direction_products
    assert P.shape == HP.shape == (6, n)
    torch.testing.assert_close(P[0], g)
    torch.testing.assert_close(HP, P @ H)
    C = P @ H @ P.T
    off = C - torch.diag(torch.diagonal(C))
    assert float(off.abs().max()) <= 1e-9 * float(torch.diagonal(C).max())  # H-conjugate
    # the CG iterate lies in span(P): the Galerkin solution there
    coef = torch.linalg.lstsq(P.T, res.x.unsqueeze(1)).solution
    torch.testing.assert_close((P.T @ coef).squeeze(1), res.x, rtol=1e-8, atol=1e-10)
    assert conjugate_gradient(lambda v: v @ H, g, max_iters=3).directions is None
    with pytest.raises(ValueError, match="1-D"):
        conjugate_gradient(lambda v: v @ H, torch.stack([g, g]), keep_directions=True)


def _exact(H, g, b, c, delta):
    """Problem (10) by scipy on the full space."""
    Hn, gn, bn = H.numpy(), g.numpy(), b.numpy()
    cons = [{"type": "ineq", "fun": lambda x: -(bn @ x + c), "jac": lambda x: -bn},
            {"type": "ineq", "fun": lambda x: delta - 0.5 * x @ Hn @ x, "jac": lambda x: -Hn @ x}]
    best = None
    for x0 in (np.zeros_like(gn), 1e-3 * np.linalg.solve(Hn, gn), -1e-3 * np.linalg.solve(Hn, bn)):
        out = minimize(lambda x: -gn @ x, x0, jac=lambda x: -gn, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-14, "maxiter": 500})
        if best is None or out.fun < best.fun:
            best = out
    return best.x


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("factor", [-0.3, 0.5])
def test_subspace_is_exact_when_cg_spans_the_space(seed, factor):
    """cg_iters >= n: the recycled Krylov space is the whole space, so the subspace step is the
    exact solution of (10) (scipy), at n + cost_subspace_dim products instead of 2n."""
    n, delta = 8, 0.04
    H, g, b = _problem(n, seed, spread=3.0)
    c = factor * math.sqrt(2 * delta * float(b @ torch.linalg.solve(H, b)))
    hvp = Counting(H)
    cfg = CPOConfig(cost_solve="subspace", skip_inactive_cost_solve=False, cost_subspace_dim=1)
    step = cpo_step(g, b, c, delta, hvp, config=cfg, cg_iters=n, cg_residual_tol=0.0)
    ref = cpo_step(g, b, c, delta, Counting(H), config=FULL, cg_iters=n, cg_residual_tol=0.0)
    assert step.case == ref.case
    assert len(hvp.rows) == n + 1
    torch.testing.assert_close(step.direction, ref.direction, rtol=1e-7, atol=1e-9)
    x_sp = torch.from_numpy(_exact(H, g, b, c, delta))
    assert float(g @ step.direction) >= float(g @ x_sp) - 1e-6 * abs(float(g @ x_sp))
    assert step.lam == pytest.approx(ref.lam, rel=1e-6) and step.nu == pytest.approx(ref.nu, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("factor, cases", [(-0.3, (CASE_FEASIBLE_BOUNDARY,)),
                                           (0.6, (CASE_INFEASIBLE_RECOVERABLE,))])
def test_subspace_step_is_the_optimum_over_its_subspace(seed, factor, cases):
    """Truncated CG (4 of 30 dimensions): the subspace step satisfies (10) with the TRUE H
    exactly and no feasible point of span(P, u, H u) does better (scipy on that span)."""
    n, delta, iters, extra = 30, 0.05, 4, 2
    H, g, b = _problem(n, seed)
    c = factor * math.sqrt(2 * delta * float(b @ torch.linalg.solve(H, b)))
    hvp = Counting(H)
    cfg = CPOConfig(cost_solve="subspace", cost_subspace_dim=extra, skip_inactive_cost_solve=False)
    step = cpo_step(g, b, c, delta, hvp, config=cfg, cg_iters=iters, cg_residual_tol=0.0)
    assert step.case in cases
    assert len(hvp.rows) == iters + extra
    x = step.direction
    assert 0.5 * float(x @ H @ x) <= delta * (1 + 1e-9)
    assert float(b @ x) + c <= 1e-9
    assert step.predicted_kl == pytest.approx(0.5 * float(x @ H @ x), rel=1e-9)
    assert step.predicted_reward_change == pytest.approx(float(g @ x), rel=1e-9)
    # independent reference: span(P, u, H u) from a fresh CG run, orthonormalised, solved by scipy
    first, u = (g, b) if c <= 0 else (b, g)
    P = conjugate_gradient(lambda v: v @ H, first, max_iters=iters, residual_tol=0.0, keep_directions=True).directions
    Q, _ = torch.linalg.qr(torch.cat([P, u[None], (u @ H)[None]]).T)
    y = torch.from_numpy(_exact(Q.T @ H @ Q, Q.T @ g, Q.T @ b, c, delta))
    best = float(g @ (Q @ y))
    assert float(g @ x) >= best - 1e-6 * abs(best)
    assert float(g @ x) <= best + 1e-6 * abs(best)


def test_subspace_float32_matches_float64():
    n, delta = 200, 0.02
    H, g, b = _problem(n, 3)
    c = -0.3 * math.sqrt(2 * delta * float(b @ torch.linalg.solve(H, b)))
    cfg = CPOConfig(cost_solve="subspace", skip_inactive_cost_solve=False)
    s64 = cpo_step(g, b, c, delta, lambda v: v @ H, config=cfg)
    H32 = H.float()
    s32 = cpo_step(g.float(), b.float(), c, delta, lambda v: v @ H32, config=cfg)
    assert s32.direction.dtype == torch.float32 and s32.case == s64.case == CASE_FEASIBLE_BOUNDARY
    torch.testing.assert_close(s32.direction.double(), s64.direction, rtol=1e-4, atol=1e-5)


def test_subspace_with_b_inside_the_krylov_space():
    """b in span(P) (here b = g): the dependent basis vector is dropped, no NaN, exact answer."""
    n, delta = 6, 0.05
    H, g, _ = _problem(n, 11, spread=2.0)
    b = 0.5 * g
    c = -0.05
    cfg = CPOConfig(cost_solve="subspace", skip_inactive_cost_solve=False)
    step = cpo_step(g, b, c, delta, lambda v: v @ H, config=cfg, cg_iters=n, cg_residual_tol=0.0)
    ref = cpo_step(g, b, c, delta, lambda v: v @ H, config=FULL, cg_iters=n, cg_residual_tol=0.0)
    assert bool(torch.isfinite(step.direction).all())
    torch.testing.assert_close(step.direction, ref.direction, rtol=1e-6, atol=1e-9)


def test_subspace_with_zero_reward_gradient_infeasible():
    """c > 0 and g = 0: the subspace holds only the cost solve's directions; the step is the
    least-KL point on the linearised constraint, as the full solve gives."""
    n, delta = 6, 0.05
    H, _, b = _problem(n, 5, spread=2.0)
    g = torch.zeros(n, dtype=torch.float64)
    c = 0.5 * math.sqrt(2 * delta * float(b @ torch.linalg.solve(H, b)))
    cfg = CPOConfig(cost_solve="subspace")
    step = cpo_step(g, b, c, delta, lambda v: v @ H, config=cfg, cg_iters=n, cg_residual_tol=0.0)
    ref = cpo_step(g, b, c, delta, lambda v: v @ H, config=FULL, cg_iters=n, cg_residual_tol=0.0)
    assert step.case == ref.case == CASE_INFEASIBLE_RECOVERABLE
    torch.testing.assert_close(step.direction, ref.direction, rtol=1e-7, atol=1e-10)
