"""The analytic CPO step (fcpo.solvers.cpo_step) against scipy.optimize on random problems.

Problem (Achiam et al. 2017, eq. 10):  maximise g^T x  s.t.  b^T x + c <= 0,  0.5 x^T H x <= delta.
"""
import ctypes
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from fcpo.solvers import (
    CASE_FEASIBLE_BOUNDARY,
    CASE_INFEASIBLE_RECOVERABLE,
    CASE_INFEASIBLE_RECOVERY,
    CASE_INFEASIBLE_ZERO_COST_GRAD,
    CASE_TRPO,
    CASE_TRPO_ALL_FEASIBLE,
    CASE_TRPO_INACTIVE,
    CASE_TRPO_ZERO_COST_GRAD,
    CPO_CASES,
    Constraints,
    CPOConfig,
    cpo_step,
    cpo_update,
    process_advantages,
    solve_cpo_dual,
    trpo_step,
    trpo_update,
)

SCIPY_CASES = (
    CASE_TRPO_ZERO_COST_GRAD,
    CASE_TRPO_ALL_FEASIBLE,
    CASE_FEASIBLE_BOUNDARY,
    CASE_INFEASIBLE_RECOVERABLE,
    CASE_INFEASIBLE_RECOVERY,
)
N_PROBLEMS = 1000


def _openblas_libs():
    """ctypes handles of the OpenBLAS copies loaded by numpy/scipy (best effort, Linux only)."""
    libs = []
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line}
        for p in sorted(paths):
            lib = ctypes.CDLL(p)
            if hasattr(lib, "openblas_set_num_threads_local"):
                libs.append(lib)
    except OSError:
        pass
    return libs


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny dense problems: threads only add contention on a shared machine (OpenBLAS spins)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    libs = _openblas_libs()
    old = [lib.openblas_set_num_threads_local(1) for lib in libs]
    yield
    for lib, k in zip(libs, old):
        lib.openblas_set_num_threads_local(k)
    torch.set_num_threads(n)


def random_problem(rng, target):
    """Random SPD H (dim 2-50, condition <= 100) and g, b, c, delta landing in ``target``.

    With t = sqrt(2 delta s) (the largest cost decrease inside the trust region),
    c < -t: whole region feasible; -t < c <= 0: boundary cuts the region;
    0 < c < t: infeasible but recoverable; c > t: unrecoverable.  Margins of 5%
    keep scipy away from the degenerate transitions.
    """
    n = int(rng.integers(2, 51))
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    e = np.exp(rng.uniform(np.log(0.1), np.log(10.0), n))
    H = (Q * e) @ Q.T
    H = 0.5 * (H + H.T)
    g = rng.standard_normal(n) * 10 ** rng.uniform(-1, 1)
    b = rng.standard_normal(n) * 10 ** rng.uniform(-1, 1)
    delta = float(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
    if target == CASE_TRPO_ZERO_COST_GRAD:
        if rng.random() < 0.5:
            b = np.zeros(n)
            c = 0.0 if rng.random() < 0.3 else -float(rng.uniform(0.01, 1.0))
        else:  # tiny but non-zero gradient, b^T b < cost_grad_tol, constraint slack
            b = b / np.linalg.norm(b) * 1e-6
            c = -float(rng.uniform(0.1, 1.0))
        return H, g, b, c, delta
    t = math.sqrt(2 * delta * b @ np.linalg.solve(H, b))
    if target == CASE_TRPO_ALL_FEASIBLE:
        u = -rng.uniform(1.05, 3.0)
    elif target == CASE_FEASIBLE_BOUNDARY:
        u = 0.0 if rng.random() < 0.1 else -rng.uniform(0.0, 0.95)
    elif target == CASE_INFEASIBLE_RECOVERABLE:
        u = rng.uniform(0.05, 0.95)
    else:
        u = rng.uniform(1.05, 3.0)
    return H, g, b, float(u * t), delta


def _whiten(H, delta):
    """x = W z with 0.5 x^T H x = |z|^2 delta: SLSQP then sees a unit-ball constraint."""
    L = np.linalg.cholesky(H)
    return np.linalg.solve(L.T, np.eye(len(H))) * math.sqrt(2 * delta)


def _slsqp(fun_vec, cons, z0):
    res = minimize(lambda z: fun_vec @ z, z0, jac=lambda z: fun_vec, method="SLSQP",
                   constraints=cons, options=dict(ftol=1e-15, maxiter=1000))
    # status 8 ("positive directional derivative for linesearch"): no further progress
    # possible at ftol=1e-15; accepted only if the point is feasible (checked by callers)
    assert res.status in (0, 8), res.message
    return res.x


def scipy_maximiser(H, g, b, c, delta):
    """argmax g^T x s.t. b^T x + c <= 0, 0.5 x^T H x <= delta, by SLSQP in whitened coordinates."""
    W = _whiten(H, delta)
    gz, bz = W.T @ g, W.T @ b
    gz_n = gz / np.linalg.norm(gz)
    ball = dict(type="ineq", fun=lambda z: 1.0 - z @ z, jac=lambda z: -2 * z)
    cons = [ball]
    z0 = np.zeros(len(g))
    if bz.any():
        cons.append(dict(type="ineq", fun=lambda z: -(bz @ z + c), jac=lambda z: -bz))
        if c > 0:  # strictly feasible start between the constraint and the ball's edge
            nb = np.linalg.norm(bz)
            z0 = -bz / nb * 0.5 * (c / nb + 1.0)
    z = _slsqp(-gz_n, cons, z0)
    x = W @ z
    assert 0.5 * x @ H @ x <= delta * (1 + 1e-7)
    assert b @ x + c <= 1e-7 * (1 + abs(c))
    return x


def scipy_recovery(H, b, delta):
    """argmin b^T x s.t. 0.5 x^T H x <= delta (eq. 14's problem)."""
    W = _whiten(H, delta)
    bz = W.T @ b
    ball = dict(type="ineq", fun=lambda z: 1.0 - z @ z, jac=lambda z: -2 * z)
    x = W @ _slsqp(bz / np.linalg.norm(bz), [ball], np.zeros(len(b)))
    assert 0.5 * x @ H @ x <= delta * (1 + 1e-7)
    return x


def _step(H, g, b, c, delta, **kw):
    """The full dual solve (both systems) whatever the constraint's activity; the default's
    inactive-constraint shortcut is checked against it (_check_default_path)."""
    Ht = torch.from_numpy(H)
    n = len(g)
    kw.setdefault("cg_iters", 2 * n + 10)
    kw.setdefault("cg_residual_tol", 1e-12)
    kw["config"] = (kw.get("config") or CPOConfig()).replace(skip_inactive_cost_solve=False)
    return cpo_step(torch.from_numpy(g), torch.from_numpy(b), c, delta, lambda v: v @ Ht, **kw)


def _check_default_path(full, H, g, b, c, delta):
    """The default config (inactive-constraint shortcut) gives the full solve's step; its case is
    ``trpo_constraint_inactive`` exactly when the full solve has c <= 0 and nu = 0."""
    Ht = torch.from_numpy(H)
    n = len(g)
    fast = cpo_step(torch.from_numpy(g), torch.from_numpy(b), c, delta, lambda v: v @ Ht,
                    cg_iters=2 * n + 10, cg_residual_tol=1e-12)
    if c <= 0 and full.nu == 0.0 and full.case != CASE_TRPO_ZERO_COST_GRAD:
        assert fast.case == CASE_TRPO_INACTIVE, (fast.case, full.case)
    else:
        assert fast.case == full.case
    torch.testing.assert_close(fast.direction, full.direction, rtol=1e-9, atol=1e-12)


def _rel(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def test_matches_scipy_on_random_problems():
    rng = np.random.default_rng(20170706)
    seen = Counter()
    active = Counter()
    worst = {}
    for i in range(N_PROBLEMS):
        target = SCIPY_CASES[i % len(SCIPY_CASES)]
        H, g, b, c, delta = random_problem(rng, target)
        step = _step(H, g, b, c, delta)
        assert step.case == target, (i, step.case, target)
        _check_default_path(step, H, g, b, c, delta)
        seen[step.case] += 1
        x = step.direction.numpy()
        assert np.isfinite(x).all() and not math.isnan(step.lam) and not math.isnan(step.nu)
        if target == CASE_INFEASIBLE_RECOVERY:
            vb = np.linalg.solve(H, b)
            analytic = -math.sqrt(2 * delta / (b @ vb)) * vb  # eq. (14)
            err = max(_rel(x, analytic), _rel(x, scipy_recovery(H, b, delta)))
        else:
            ref = scipy_maximiser(H, g, b, c, delta)
            err = _rel(x, ref)
            # our x is feasible for the model problem
            assert b @ x + c <= 1e-9 * (1 + abs(c)) + 1e-12
            assert 0.5 * x @ H @ x <= delta * (1 + 1e-9)
            if target == CASE_FEASIBLE_BOUNDARY:
                active[step.nu > 0] += 1
        worst[target] = max(worst.get(target, 0.0), err)
        assert err <= 1e-5, (i, target, err)
    assert set(seen) == set(SCIPY_CASES) and min(seen.values()) == N_PROBLEMS // len(SCIPY_CASES)
    # the boundary case really exercises both branches of the dual (constraint active or not)
    assert active[True] >= 20 and active[False] >= 5, active


# ------------------------------------------------------------------ hand-checked 2-D cases

I2 = np.eye(2)


@pytest.mark.parametrize(
    "g, b, c, delta, case, x, lam, nu",
    [
        # max x1 s.t. x2 <= -1/2, |x| <= 1
        ([1, 0], [0, 1], 0.5, 0.5, CASE_INFEASIBLE_RECOVERABLE, [math.sqrt(3) / 2, -0.5], 2 / math.sqrt(3), 1 / math.sqrt(3)),
        # max x1 + x2 s.t. x2 <= 0: r = +1 > 0 must make the constraint active
        ([1, 1], [0, 1], 0.0, 0.5, CASE_FEASIBLE_BOUNDARY, [1.0, 0.0], 1.0, 1.0),
        # max x1 + x2 s.t. x2 <= 1/2, |x| <= 1
        ([1, 1], [0, 1], -0.5, 0.5, CASE_FEASIBLE_BOUNDARY, [math.sqrt(0.75), 0.5], 2 / math.sqrt(3), 1 - 1 / math.sqrt(3)),
        # constraint x2 <= 0.9 does not bind the TRPO step (0.707, 0.707): nu = 0
        ([1, 1], [0, 1], -0.9, 0.5, CASE_FEASIBLE_BOUNDARY, [1 / math.sqrt(2), 1 / math.sqrt(2)], math.sqrt(2), 0.0),
        # x2 <= 1.5 never binds: TRPO
        ([1, 1], [0, 1], -1.5, 0.5, CASE_TRPO_ALL_FEASIBLE, [1 / math.sqrt(2), 1 / math.sqrt(2)], math.sqrt(2), 0.0),
        # x2 <= -1.5 is out of reach: recovery x = -sqrt(2 delta / s) b
        ([1, 1], [0, 1], 1.5, 0.5, CASE_INFEASIBLE_RECOVERY, [0.0, -1.0], 0.0, 0.0),
        # trust region 0.5 * 4 x^2 <= 0.5  ->  |x| <= 1/2 along an axis with H = diag(4, 1)
        ([1, 0], [0, 1], -1.0, 0.5, CASE_TRPO_ALL_FEASIBLE, [0.5, 0.0], 0.5, 0.0),
    ],
)
def test_hand_checked_2d(g, b, c, delta, case, x, lam, nu):
    H = np.diag([4.0, 1.0]) if x == [0.5, 0.0] else I2
    step = _step(H, np.array(g, float), np.array(b, float), c, delta)
    assert step.case == case
    np.testing.assert_allclose(step.direction.numpy(), x, atol=1e-12)
    _check_default_path(step, H, np.array(g, float), np.array(b, float), c, delta)
    assert step.lam == pytest.approx(lam, abs=1e-12)
    assert step.nu == pytest.approx(nu, abs=1e-12)


# ------------------------------------------------------------------ each case label


def _case_of(g, b, c, delta=0.5, H=I2):
    return _step(H, np.array(g, float), np.array(b, float), c, delta)


@pytest.mark.parametrize(
    "args, case",
    [
        (([1, 1], [0, 0], -0.1), CASE_TRPO_ZERO_COST_GRAD),
        (([1, 1], [0, 0], 0.0), CASE_TRPO_ZERO_COST_GRAD),
        (([1, 1], [0, 1], -1.0), CASE_TRPO_ALL_FEASIBLE),
        (([1, 1], [0, 1], -0.3), CASE_FEASIBLE_BOUNDARY),
        (([1, 1], [0, 1], 0.0), CASE_FEASIBLE_BOUNDARY),
        (([1, 1], [0, 1], 0.3), CASE_INFEASIBLE_RECOVERABLE),
        (([1, 1], [0, 1], 1.0), CASE_INFEASIBLE_RECOVERABLE),  # B = 0: tangent, x = -(c/s) H^-1 b
        (([1, 1], [0, 1], 1.2), CASE_INFEASIBLE_RECOVERY),
        (([1, 1], [0, 0], 0.1), CASE_INFEASIBLE_ZERO_COST_GRAD),
    ],
)
def test_every_case_label(args, case):
    step = _case_of(*args)
    assert step.case == case
    assert torch.isfinite(step.direction).all()
    assert not (math.isnan(step.lam) or math.isnan(step.nu))
    assert step.feasible == (args[2] <= 0)
    if case == CASE_INFEASIBLE_ZERO_COST_GRAD:
        assert torch.equal(step.direction, torch.zeros(2, dtype=torch.float64))
    if args[2] == 1.0:
        np.testing.assert_allclose(step.direction.numpy(), [0.0, -1.0], atol=1e-12)
    assert set(CPO_CASES) >= {case}


@pytest.mark.parametrize(
    "g, c",
    [
        ([0.0, 2.0], 0.3),  # g parallel to b (A = 0), recoverable
        ([0.0, 2.0], -0.3),  # parallel, feasible
        ([0.0, -2.0], 0.3),  # anti-parallel, recoverable: x = -|x| b
        ([0.0, -2.0], -0.3),
        ([0.0, 0.0], 0.3),  # zero reward gradient: least-norm feasible point
        ([0.0, 0.0], -0.3),  # zero reward gradient, feasible: zero step
    ],
)
def test_degenerate_reward_gradients(g, c):
    b = np.array([0.0, 1.0])
    step = _case_of(g, b, c)
    x = step.direction.numpy()
    assert np.isfinite(x).all() and not math.isnan(step.lam) and not math.isnan(step.nu)
    g = np.array(g)
    assert b @ x + c <= 1e-12 and 0.5 * x @ x <= 0.5 + 1e-12
    if g.any():  # optimal value equals scipy's (the maximiser need not be unique)
        ref = scipy_maximiser(I2, g, b, c, 0.5)
        assert g @ x == pytest.approx(g @ ref, abs=1e-7)
    else:  # any feasible point is optimal; we return the least-norm one
        np.testing.assert_allclose(x, [0.0, -max(c, 0.0)], atol=1e-12)


def test_dual_matches_brute_force_minimisation():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = 4
        M = rng.standard_normal((n, n))
        H = M @ M.T + 0.1 * np.eye(n)
        g, b = rng.standard_normal(n), rng.standard_normal(n)
        delta = float(rng.uniform(0.01, 1))
        q, r, s = g @ np.linalg.solve(H, g), g @ np.linalg.solve(H, b), b @ np.linalg.solve(H, b)
        c = float(rng.uniform(-1, 1)) * math.sqrt(2 * delta * s)
        lam, nu, _ = solve_cpo_dual(q, r, s, c, delta)
        lams = np.linspace(1e-4, 4 * max(lam, 1e-3), 20001)
        nus = np.maximum(0.0, (lams * c + r) / s)
        D = (q - 2 * nus * r + nus ** 2 * s) / (2 * lams) - nus * c + lams * delta
        D_star = (q - 2 * nu * r + nu ** 2 * s) / (2 * lam) - nu * c + lam * delta
        assert D_star <= D.min() + 1e-9


# ------------------------------------------------------------------ properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    scale_g=st.sampled_from([0.0, 1e-12, 1e-3, 1.0, 1e6]),
    scale_b=st.sampled_from([0.0, 1e-9, 1e-3, 1.0, 1e6]),
    c=st.floats(-1e3, 1e3, allow_nan=False) | st.sampled_from([0.0, 1e-300, -1e-300]),
    delta=st.floats(1e-8, 10.0),
)
def test_never_nan_and_model_feasible(n, seed, scale_g, scale_b, c, delta):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    H = M @ M.T + 0.1 * np.eye(n)
    g = rng.standard_normal(n) * scale_g
    b = rng.standard_normal(n) * scale_b
    step = _step(H, g, b, c, delta)
    x = step.direction.numpy()
    assert np.isfinite(x).all()
    for v in (step.lam, step.nu, step.q, step.r, step.s, step.A, step.B, step.predicted_kl):
        assert not math.isnan(v)
    assert 0.5 * x @ H @ x <= delta * (1 + 1e-6) + 1e-300
    if step.case in (CASE_FEASIBLE_BOUNDARY, CASE_INFEASIBLE_RECOVERABLE, CASE_TRPO_ALL_FEASIBLE):
        assert b @ x + c <= 1e-6 * (abs(c) + math.sqrt(2 * delta * max(step.s, 0.0))) + 1e-12


# ------------------------------------------------------------------ TRPO, updates, options


def test_trpo_step_is_scaled_natural_gradient():
    rng = np.random.default_rng(0)
    n = 10
    M = rng.standard_normal((n, n))
    H = M @ M.T + np.eye(n)
    g = rng.standard_normal(n)
    Ht = torch.from_numpy(H)
    step = trpo_step(torch.from_numpy(g), 0.02, lambda v: v @ Ht, cg_iters=50, cg_residual_tol=1e-13)
    vg = np.linalg.solve(H, g)
    np.testing.assert_allclose(step.direction.numpy(), math.sqrt(0.04 / (g @ vg)) * vg, rtol=1e-9)
    assert step.case == CASE_TRPO and step.feasible
    assert step.predicted_kl == pytest.approx(0.02)
    zero = trpo_step(torch.zeros(n, dtype=torch.float64), 0.02, lambda v: v @ Ht)
    assert not zero.direction.any()


def test_config_limits_are_used():
    rng = np.random.default_rng(1)
    n = 30
    H = np.diag(np.exp(rng.uniform(np.log(0.1), np.log(10.0), n)))
    g, b = rng.standard_normal(n), rng.standard_normal(n)
    base = _step(H, g, b, -0.01, 0.01, cg_iters=None, cg_residual_tol=None, config=CPOConfig(cg_iters=3))
    assert base.cg.iterations == 3
    more = _step(H, g, b, -0.01, 0.01, cg_iters=None, cg_residual_tol=None, config=CPOConfig(cg_iters=200))
    assert more.cg.iterations > 3 and more.cg.all_converged
    loose = _step(H, g, b, -0.01, 0.01, cg_iters=None, cg_residual_tol=None,
                  config=CPOConfig(cg_iters=200, cg_residual_tol=1e-2))
    assert loose.cg.iterations < more.cg.iterations
    # delta=None takes config.max_kl; explicit kwargs override the config
    s1 = _step(H, g, b, -0.01, None, config=CPOConfig(max_kl=0.05))
    s2 = _step(H, g, b, -0.01, 0.05)
    torch.testing.assert_close(s1.direction, s2.direction)
    assert _step(H, g, b, -0.01, 0.01, config=CPOConfig(cg_iters=3), cg_iters=7).cg.iterations == 7
    # cost_grad_tol decides when b counts as zero
    tiny = 1e-5 * b / np.linalg.norm(b)
    assert _step(H, g, tiny, -0.5, 0.01).case == CASE_TRPO_ZERO_COST_GRAD
    assert _step(H, g, tiny, -0.5, 0.01, cost_grad_tol=0.0).case != CASE_TRPO_ZERO_COST_GRAD


@pytest.mark.parametrize(
    "kw", [dict(max_kl=0.0), dict(cg_iters=0), dict(backtrack_ratio=1.0), dict(max_backtracks=0),
           dict(damping=-1.0), dict(cg_residual_tol=float("nan")), dict(fvp_method="x"), dict(cg_iters=2.5)]
)
def test_config_validation(kw):
    with pytest.raises(ValueError):
        CPOConfig(**kw)


def _toy_problem():
    """Quadratic toy: reward g^T x, cost b^T x, KL 0.5 x^T H x (exact), so the analytic step passes."""
    H = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    g = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    b = torch.tensor([0.3, 1.0, 0.0], dtype=torch.float64)
    theta0 = torch.zeros(3, dtype=torch.float64)

    def evaluate(theta):
        x = theta - theta0
        return g @ x, b @ x, 0.5 * x @ H @ x * 2.0  # true KL 2x the model: forces backtracking

    return H, g, b, theta0, evaluate


def test_cpo_and_trpo_update():
    H, g, b, theta0, evaluate = _toy_problem()
    cfg = CPOConfig(max_kl=0.01, cg_iters=10)
    up = cpo_update(theta0, g, b, -0.05, lambda v: v @ H, evaluate, config=cfg)
    assert up.step.case == CASE_FEASIBLE_BOUNDARY
    # the step fills the model trust region; true KL 2 f^2 delta <= delta  ->  f = 0.8^2
    assert up.line_search.accepted and up.line_search.fraction == pytest.approx(0.64)
    torch.testing.assert_close(up.params, theta0 + 0.64 * up.step.direction)
    tr = trpo_update(theta0, g, lambda v: v @ H, evaluate, config=cfg)
    assert tr.step.case == CASE_TRPO and tr.line_search.fraction == pytest.approx(0.64)
    # infeasible start: reward improvement not demanded, cost must fall
    rec = cpo_update(theta0, g, b, 1.0, lambda v: v @ H, evaluate, config=cfg)
    assert rec.step.case == CASE_INFEASIBLE_RECOVERY and rec.line_search.cost_change < 0


def test_constraints_vector():
    cons = Constraints(("exposure", "gini"), torch.tensor([1.0, 0.5]), torch.tensor([1.5, 0.2]))
    assert len(cons) == 2
    torch.testing.assert_close(cons.c, torch.tensor([0.5, -0.3], dtype=cons.c.dtype))
    assert cons.satisfied.tolist() == [False, True]
    with pytest.raises(ValueError, match="exactly one constraint"):
        cons.scalar_c()
    one = Constraints.single("exposure", limit=1.0, value=1.3)
    assert one.scalar_c() == pytest.approx(0.3)
    step = _case_of([1, 1], [0, 1], one)
    assert step.case == CASE_INFEASIBLE_RECOVERABLE and step.c == pytest.approx(0.3)
    with pytest.raises(ValueError):
        _case_of([1, 1], [0, 1], cons)
    with pytest.raises(ValueError):
        Constraints(("a", "b"), [1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        Constraints(("a", "a"), [1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        Constraints(("a",), [float("nan")], [1.0])


def test_process_advantages():
    adv = torch.tensor([1.0, 2.0, 3.0, 6.0])
    centred = process_advantages(adv, centre=True, rescale=False)
    torch.testing.assert_close(centred, adv - 3.0)
    z = process_advantages(adv, centre=True, rescale=True)
    assert abs(float(z.mean())) < 1e-6 and float(z.std(unbiased=False)) == pytest.approx(1.0, rel=1e-6)
    cfg = CPOConfig()
    assert cfg.centre_cost_advantages and not cfg.rescale_cost_advantages


# ------------------------------------------------------------------ guards


def _good():
    return torch.ones(3, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "mod",
    [
        lambda g, b: dict(g=g.reshape(1, 3)),
        lambda g, b: dict(b=b[:2]),
        lambda g, b: dict(g=torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64)),
        lambda g, b: dict(b=torch.tensor([1.0, float("inf"), 0.0], dtype=torch.float64)),
        lambda g, b: dict(c=float("nan")),
        lambda g, b: dict(c=torch.tensor([0.1, 0.2])),
        lambda g, b: dict(delta=0.0),
        lambda g, b: dict(delta=-1.0),
        lambda g, b: dict(delta=float("inf")),
        lambda g, b: dict(g=torch.empty(0), b=torch.empty(0)),
    ],
)
def test_bad_input_raises_value_error(mod):
    g, b = _good()
    args = dict(g=g, b=b, c=-0.1, delta=0.01)
    args.update(mod(g, b))
    with pytest.raises(ValueError):
        cpo_step(args["g"], args["b"], args["c"], args["delta"], lambda v: v)


@pytest.mark.parametrize("hvp", [lambda v: -v, lambda v: v * float("nan"), lambda v: 0 * v])
def test_bad_hessian_raises_value_error(hvp):
    g, b = _good()
    with pytest.raises(ValueError):
        cpo_step(g, b, -0.1, 0.01, hvp)
    with pytest.raises(ValueError):
        trpo_step(g, 0.01, hvp)


def test_overflow_raises_instead_of_nan():
    g, b = _good()
    with pytest.raises(ValueError):
        cpo_step(g * 1e200, b * 1e200, -0.1, 0.01, lambda v: v * 1e200)
    with pytest.raises(ValueError):
        trpo_step(g * 1e300, 0.01, lambda v: v * 1e300)
