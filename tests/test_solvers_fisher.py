"""Fisher (KL-Hessian) vector products against the dense autograd Hessian of the mean KL."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from fcpo.solvers import fisher_vector_product, flat_grad, flat_params, set_flat_params

from solver_policies import Gaussian, _float64, gaussian_kl  # noqa: F401 (_float64: autouse fixture)


class Categorical(nn.Module):
    def __init__(self, obs=3, n_actions=4):
        super().__init__()
        self.lin = nn.Linear(obs, n_actions)

    def forward(self, s):
        return torch.log_softmax(self.lin(s), -1)


def categorical_kl(logp0, logp1):
    return (logp0.exp() * (logp0 - logp1)).sum(-1).mean()


def _setup(kind, seed):
    torch.manual_seed(seed)
    states = torch.randn(7, 3)
    if kind == "gaussian":
        pol = Gaussian()
        with torch.no_grad():
            mu0, ls0 = pol(states)

        def kl_of(out):
            return gaussian_kl(mu0, ls0, *out)
    else:
        pol = Categorical()
        with torch.no_grad():
            lp0 = pol(states)

        def kl_of(out):
            return categorical_kl(lp0, out)

    names = [n for n, _ in pol.named_parameters()]
    params = list(pol.parameters())
    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]

    def kl_flat(theta):
        ps = [t.view(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        return kl_of(functional_call(pol, dict(zip(names, ps)), (states,)))

    def kl_func(ps):
        return kl_of(functional_call(pol, dict(zip(names, ps)), (states,)))

    return pol, params, (lambda: kl_of(pol(states))), kl_func, kl_flat


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("method", ["autograd", "func"])
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_fvp_equals_dense_kl_hessian(kind, method, damping):
    pol, params, kl0, kl_func, kl_flat = _setup(kind, 0)
    theta0 = flat_params(params)
    H = torch.autograd.functional.hessian(kl_flat, theta0)
    n = theta0.numel()
    assert H.shape == (n, n)
    assert torch.linalg.eigvalsh(H).min() > -1e-10  # Fisher: PSD
    hvp = fisher_vector_product(kl0 if method == "autograd" else kl_func, params, damping=damping, method=method)
    torch.manual_seed(1)
    V = torch.randn(3, n)
    expected = V @ H.T + damping * V
    for i in range(3):
        torch.testing.assert_close(hvp(V[i]), expected[i], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(hvp(V), expected, rtol=1e-8, atol=1e-10)  # batched
    # repeated calls give the same answer (graph retained)
    torch.testing.assert_close(hvp(V[0]), expected[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_unbatched_stack_equals_batched(method):
    pol, params, kl0, kl_func, _ = _setup("gaussian", 2)
    fn = kl0 if method == "autograd" else kl_func
    a = fisher_vector_product(fn, params, damping=0.1, method=method, batched=True)
    b = fisher_vector_product(fn, params, damping=0.1, method=method, batched=False)
    V = torch.randn(2, flat_params(params).numel())
    torch.testing.assert_close(a(V), b(V), rtol=1e-10, atol=1e-12)


def test_fvp_rejects_bad_vectors_and_options():
    pol, params, kl0, _, _ = _setup("categorical", 0)
    hvp = fisher_vector_product(kl0, params, damping=0.1)
    n = flat_params(params).numel()
    with pytest.raises(ValueError):
        hvp(torch.ones(n + 1))
    with pytest.raises(ValueError):
        hvp(torch.ones(1, 1, n))
    with pytest.raises(ValueError):
        fisher_vector_product(kl0, params, damping=-1.0)
    with pytest.raises(ValueError):
        fisher_vector_product(kl0, params, method="nope")
    with pytest.raises(ValueError):
        fisher_vector_product(kl0, [], damping=0.1)


def test_fvp_nonfinite_raises():
    p = nn.Parameter(torch.ones(3))
    hvp = fisher_vector_product(lambda: (p * p).sum() * float("inf"), [p], damping=0.0)
    with pytest.raises(ValueError):
        hvp(torch.ones(3))


def test_unused_parameter_gets_zero_curvature():
    p, unused = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    hvp = fisher_vector_product(lambda: 0.5 * (p * p).sum(), [p, unused], damping=0.5)
    out = hvp(torch.ones(5))
    torch.testing.assert_close(out, torch.tensor([1.5, 1.5, 0.5, 0.5, 0.5]))


def test_flat_helpers_round_trip():
    pol = Gaussian()
    theta = flat_params(pol)
    assert theta.dim() == 1 and theta.numel() == sum(p.numel() for p in pol.parameters())
    set_flat_params(pol, theta + 1.0)
    torch.testing.assert_close(flat_params(pol), theta + 1.0)
    theta[0] = 123.0  # flat_params returns a copy
    assert float(flat_params(pol)[0]) != 123.0
    with pytest.raises(ValueError):
        set_flat_params(pol, theta[:-1])
    with pytest.raises(ValueError):
        set_flat_params(pol, torch.full_like(theta, float("nan")))


def test_flat_grad_matches_autograd_and_fills_unused():
    a, unused = nn.Parameter(torch.tensor([1.0, 2.0])), nn.Parameter(torch.zeros(2))
    out = (a ** 2).sum()
    g = flat_grad(out, [a, unused])
    torch.testing.assert_close(g, torch.tensor([2.0, 4.0, 0.0, 0.0]))
    with pytest.raises(ValueError):
        flat_grad((a * 2).reshape(1, 2), [a])


def test_flat_grad_of_several_outputs_is_one_batched_backward():
    pol = Gaussian()
    s = torch.randn(6, 3)
    mu, ls = pol(s)
    l1, l2 = (mu ** 2).mean(), (mu.sin() * ls).sum()
    both = flat_grad(torch.stack([l1, l2]), pol, retain_graph=True)
    torch.testing.assert_close(both[0], flat_grad(l1, pol, retain_graph=True))
    torch.testing.assert_close(both[1], flat_grad(l2, pol))
