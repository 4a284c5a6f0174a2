"""Fast paths of the CPO update (issue 17): the recovery step solves only H x = b,
a known baseline saves the line search's evaluation of theta_k, joint and
sequential CG solves agree."""
import math

import numpy as np
import pytest
import torch

from fcpo.solvers import (
    CASE_FEASIBLE_BOUNDARY,
    CASE_INFEASIBLE_RECOVERABLE,
    CASE_INFEASIBLE_RECOVERY,
    CASE_TRPO_ALL_FEASIBLE,
    CPOConfig,
    backtracking_line_search,
    conjugate_gradient,
    cpo_step,
    cpo_update,
    trpo_update,
)


def _spd(n, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * np.exp(rng.uniform(np.log(0.1), np.log(10.0), n))) @ Q.T
    H = torch.from_numpy(0.5 * (H + H.T))
    g = torch.from_numpy(rng.standard_normal(n))
    b = torch.from_numpy(rng.standard_normal(n))
    return H, g, b


class CountingHvp:
    """``v -> H v`` recording each call's input (rows of a stack counted separately)."""

    def __init__(self, H):
        self.H, self.calls, self.rows = H, 0, []

    def __call__(self, v):
        self.calls += 1
        self.rows.extend(v.reshape(-1, v.shape[-1]).clone())
        return v @ self.H


def _t(H, b, delta):
    """Largest first-order cost decrease inside the trust region, sqrt(2 delta s)."""
    return math.sqrt(2 * delta * float(b @ torch.linalg.solve(H, b)))


@pytest.mark.parametrize("seed", range(5))
def test_recovery_solves_only_the_cost_system(seed):
    n, delta, iters = 12, 0.05, 40
    H, g, b = _spd(n, seed)
    c = 2.0 * _t(H, b, delta)  # unrecoverable
    hvp = CountingHvp(H)
    step = cpo_step(g, b, c, delta, hvp, cg_iters=iters, cg_residual_tol=1e-12)
    assert step.case == CASE_INFEASIBLE_RECOVERY
    alone = conjugate_gradient(lambda v: v @ H, b, max_iters=iters, residual_tol=1e-12)
    # one product per iteration of the b-system and nothing else; no row ever equals g
    assert hvp.calls == alone.iterations == step.cg.iterations
    assert all(r.shape == (n,) for r in hvp.rows) and torch.equal(hvp.rows[0], b)
    assert not any(torch.allclose(r, g) for r in hvp.rows)
    vb = torch.linalg.solve(H, b)
    torch.testing.assert_close(step.direction, -math.sqrt(2 * delta / float(b @ vb)) * vb, rtol=1e-8, atol=1e-10)
    assert step.s == pytest.approx(float(b @ vb), rel=1e-9)
    assert step.r == pytest.approx(float(g @ vb), rel=1e-8, abs=1e-10)  # g^T H^-1 b from the b-solve
    assert step.q == 0.0 and step.A == 0.0  # not computed: the g-system was skipped
    assert step.predicted_kl == pytest.approx(delta, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_recoverable_solves_both_after_the_cost_system(seed):
    n, delta, iters = 12, 0.05, 40
    H, g, b = _spd(n, seed)
    c = 0.5 * _t(H, b, delta)
    hvp = CountingHvp(H)
    step = cpo_step(g, b, c, delta, hvp, cg_iters=iters, cg_residual_tol=1e-12)
    assert step.case == CASE_INFEASIBLE_RECOVERABLE
    assert torch.equal(hvp.rows[0], b)  # cost system first
    assert hvp.calls == sum(step.cg.column_iterations)
    assert step.cg.x.shape == (2, n) and step.cg.iterations == max(step.cg.column_iterations)
    vg, vb = torch.linalg.solve(H, g), torch.linalg.solve(H, b)
    torch.testing.assert_close(step.cg.x, torch.stack([vg, vb]), rtol=1e-8, atol=1e-10)
    assert step.q == pytest.approx(float(g @ vg), rel=1e-9)
    assert float(b @ step.direction) + c == pytest.approx(0.0, abs=1e-9)  # constraint active


@pytest.mark.parametrize("factor, case", [(-0.5, CASE_FEASIBLE_BOUNDARY), (-2.0, CASE_TRPO_ALL_FEASIBLE)])
def test_joint_and_sequential_cg_agree(factor, case):
    n, delta = 15, 0.02
    H, g, b = _spd(n, 7)
    c = factor * _t(H, b, delta)
    joint_hvp, seq_hvp = CountingHvp(H), CountingHvp(H)
    full = CPOConfig(skip_inactive_cost_solve=False)  # joint_cg only matters when both systems are solved
    joint = cpo_step(g, b, c, delta, joint_hvp, config=full, cg_iters=50, cg_residual_tol=1e-12)
    seq = cpo_step(g, b, c, delta, seq_hvp, config=full.replace(joint_cg=False), cg_iters=50, cg_residual_tol=1e-12)
    assert joint.case == seq.case == case
    torch.testing.assert_close(joint.direction, seq.direction, rtol=1e-9, atol=1e-12)
    assert (joint.lam, joint.nu) == pytest.approx((seq.lam, seq.nu), rel=1e-9)
    # joint: one call per iteration on the stack; sequential: one call per iteration per system
    assert joint_hvp.calls == joint.cg.iterations
    assert seq_hvp.calls == sum(seq.cg.column_iterations) > seq.cg.iterations
    assert len(joint_hvp.rows) == len(seq_hvp.rows)  # the same number of products
    assert cpo_step(g, b, c, delta, CountingHvp(H), config=full, joint_cg=False).cg.x.shape == (2, n)
    with pytest.raises(ValueError, match="joint_cg"):
        CPOConfig(joint_cg=1)


def _quadratic_problem():
    H = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    g = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    b = torch.tensor([0.3, 1.0, 0.0], dtype=torch.float64)
    theta0 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    calls = []

    def evaluate(theta):
        calls.append(theta.clone())
        x = theta - theta0
        return 1.5 + g @ x, -0.7 + b @ x, 0.5 * x @ H @ x * 2.0  # true KL 2x the model: backtracks

    return H, g, b, theta0, evaluate, calls


@pytest.mark.parametrize("c", [-0.05, 0.02, 1.0])
@pytest.mark.parametrize("kl_entry", [True, False])
def test_cpo_update_with_baseline_saves_one_evaluation(c, kl_entry):
    H, g, b, theta0, evaluate, calls = _quadratic_problem()
    cfg = CPOConfig(max_kl=0.01)
    ref = cpo_update(theta0, g, b, c, lambda v: v @ H, evaluate, config=cfg)
    n_ref = len(calls)
    assert torch.equal(calls[0], theta0)  # without a baseline theta_k is evaluated first
    calls.clear()
    base = (torch.tensor(1.5, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64), 0.0) if kl_entry else (1.5, -0.7)
    fast = cpo_update(theta0, g, b, c, lambda v: v @ H, evaluate, config=cfg, baseline=base)
    assert len(calls) == n_ref - 1 and not any(torch.equal(t, theta0) for t in calls)
    assert torch.equal(fast.params, ref.params)
    assert fast.line_search.trials == ref.line_search.trials
    assert fast.line_search.n_backtracks == ref.line_search.n_backtracks >= 1


def test_trpo_update_with_baseline_ignores_cost_entry():
    H, g, _, theta0, evaluate, calls = _quadratic_problem()
    ref = trpo_update(theta0, g, lambda v: v @ H, evaluate)
    n_ref = len(calls)
    calls.clear()
    fast = trpo_update(theta0, g, lambda v: v @ H, evaluate, baseline=(1.5, float("nan")))
    assert len(calls) == n_ref - 1
    assert torch.equal(fast.params, ref.params) and fast.line_search.trials == ref.line_search.trials


def test_baseline_validation():
    H, g, b, theta0, evaluate, _ = _quadratic_problem()
    d = torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="baseline must be"):
        backtracking_line_search(evaluate, theta0, d, c=-1.0, delta=0.01, baseline=(1.5,))
    with pytest.raises(ValueError, match="baseline must be"):
        backtracking_line_search(evaluate, theta0, d, c=-1.0, delta=0.01, baseline=(1.5, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="non-finite"):
        backtracking_line_search(evaluate, theta0, d, c=-1.0, delta=0.01, baseline=(1.5, float("nan")))
    with pytest.raises(ValueError, match=r"evaluate\(\) must return"):
        backtracking_line_search(lambda t: (0.0, 0.0), theta0, d, c=-1.0, delta=0.01)
