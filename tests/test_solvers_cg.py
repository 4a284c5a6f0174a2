"""Conjugate gradient (fcpo.solvers.conjugate_gradient) against numpy.linalg.solve."""
import numpy as np
import pytest
import torch

from fcpo.solvers import conjugate_gradient


def _spd(rng, n, cond=100.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    e = np.exp(rng.uniform(0.0, np.log(cond), n))
    A = (Q * e) @ Q.T
    return 0.5 * (A + A.T)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("seed", range(20))
def test_single_rhs_matches_numpy_solve(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    A = _spd(rng, n)
    b = rng.standard_normal(n)
    At = torch.from_numpy(A)
    res = conjugate_gradient(lambda v: At @ v, torch.from_numpy(b), max_iters=4 * n, residual_tol=1e-12)
    ref = np.linalg.solve(A, b)
    np.testing.assert_allclose(res.x.numpy(), ref, rtol=1e-8, atol=1e-10)
    assert res.x.shape == (n,)
    assert res.converged == (True,)
    assert res.residual_norm <= 1e-12
    assert res.iterations <= 4 * n
    # the reported (recursive) residual is the true one, up to rounding
    true_res = np.linalg.norm(b - A @ res.x.numpy())
    assert true_res <= 1e-10


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("k", [2, 3])
def test_several_rhs_match_numpy_solve_in_one_loop(seed, k):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 50))
    A = _spd(rng, n)
    Bm = rng.standard_normal((k, n))
    At = torch.from_numpy(A)
    calls = []

    def avp(V):
        calls.append(tuple(V.shape))
        return V @ At  # A symmetric: rows of V times A

    res = conjugate_gradient(avp, torch.from_numpy(Bm), max_iters=4 * n, residual_tol=1e-12)
    ref = np.linalg.solve(A, Bm.T).T
    np.testing.assert_allclose(res.x.numpy(), ref, rtol=1e-8, atol=1e-10)
    assert res.x.shape == (k, n)
    assert len(calls) == res.iterations  # one operator call per iteration for all RHS
    assert calls[0] == (k, n)
    assert all(res.converged)
    assert max(res.column_iterations) == res.iterations


def test_converged_rows_leave_the_batch():
    # second RHS is an eigenvector: converges in one iteration, then only row 0 is passed on
    rng = np.random.default_rng(7)
    n = 12
    A = _spd(rng, n)
    w, V = np.linalg.eigh(A)
    Bm = np.stack([rng.standard_normal(n), V[:, 3]])
    At = torch.from_numpy(A)
    calls = []

    def avp(X):
        calls.append(tuple(X.shape))
        return X @ At

    res = conjugate_gradient(avp, torch.from_numpy(Bm), max_iters=50, residual_tol=1e-10)
    assert res.column_iterations[1] == 1
    assert calls[0] == (2, n) and calls[1] == (1, n)
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A, Bm.T).T, rtol=1e-8, atol=1e-10)


def test_max_iters_and_tolerance_are_used():
    rng = np.random.default_rng(3)
    n = 40
    A = _spd(rng, n, cond=1e4)
    b = torch.from_numpy(rng.standard_normal(n))
    At = torch.from_numpy(A)
    r3 = conjugate_gradient(lambda v: At @ v, b, max_iters=3, residual_tol=1e-12)
    assert r3.iterations == 3 and r3.column_iterations == (3,) and r3.converged == (False,)
    assert len(r3.residual_history) == 4
    loose = conjugate_gradient(lambda v: At @ v, b, max_iters=500, residual_tol=1e-2 * float(b.norm()))
    tight = conjugate_gradient(lambda v: At @ v, b, max_iters=500, residual_tol=1e-9)
    assert loose.converged == (True,) and tight.converged == (True,)
    assert loose.iterations < tight.iterations
    assert loose.residual_norm <= 1e-2 * float(b.norm())


def test_zero_rhs_needs_no_iterations():
    res = conjugate_gradient(lambda v: 2 * v, torch.zeros(5, dtype=torch.float64), max_iters=10)
    assert res.iterations == 0 and torch.equal(res.x, torch.zeros(5, dtype=torch.float64))
    assert res.converged == (True,)


def test_indefinite_operator_flags_breakdown_without_nan():
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    res = conjugate_gradient(lambda v: A @ v, b, max_iters=10)
    assert res.breakdown == (True,)
    assert torch.isfinite(res.x).all()


def test_nan_operator_flags_breakdown_without_nan():
    b = torch.ones(4, 3, dtype=torch.float64)
    res = conjugate_gradient(lambda V: V * float("nan"), b, max_iters=5)
    assert all(res.breakdown)
    assert torch.isfinite(res.x).all()


def test_float32():
    rng = np.random.default_rng(11)
    n = 20
    A = _spd(rng, n, cond=10.0)
    b = rng.standard_normal(n)
    At = torch.from_numpy(A).float()
    res = conjugate_gradient(lambda v: At @ v, torch.from_numpy(b).float(), max_iters=100, residual_tol=1e-5)
    assert res.x.dtype == torch.float32
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A, b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "b, kw, exc",
    [
        (torch.ones(2, 2, 2), {}, ValueError),
        (torch.ones(0), {}, ValueError),
        (torch.tensor([1.0, float("nan")]), {}, ValueError),
        (torch.tensor([1, 2]), {}, ValueError),
        (torch.ones(3), {"max_iters": 0}, ValueError),
        (torch.ones(3), {"residual_tol": -1.0}, ValueError),
        (torch.ones(3), {"residual_tol": float("nan")}, ValueError),
        ([1.0, 2.0], {}, TypeError),
    ],
)
def test_bad_input(b, kw, exc):
    with pytest.raises(exc):
        conjugate_gradient(lambda v: v, b, **kw)


def test_wrong_operator_shape():
    with pytest.raises(ValueError):
        conjugate_gradient(lambda v: v[:-1], torch.ones(3), max_iters=3)
