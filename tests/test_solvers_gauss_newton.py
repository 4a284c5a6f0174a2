"""Gauss-Newton Fisher-vector products (method="gauss_newton") against the dense KL Hessian at theta_k."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from fcpo.solvers import CPOConfig, cpo_step, fisher_vector_product, flat_params


from solver_policies import Gaussian, _float64, gaussian_kl  # noqa: F401 (_float64: autouse fixture)


class Softmax(nn.Module):
    def __init__(self, obs=3, n_actions=5, hidden=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs, hidden), nn.Tanh(), nn.Linear(hidden, n_actions))

    def forward(self, s):
        return self.net(s)  # logits


def softmax_kl(logits0, logits1):
    lp0, lp1 = torch.log_softmax(logits0, -1), torch.log_softmax(logits1, -1)
    return (lp0.exp() * (lp0 - lp1)).sum(-1).mean()


def _setup(kind, seed):
    torch.manual_seed(seed)
    states = torch.randn(9, 3)
    pol = Gaussian(hidden=6) if kind == "gaussian" else Softmax()
    with torch.no_grad():
        old = pol(states)
        old = tuple(o.clone() for o in old) if isinstance(old, tuple) else old.clone()
    if kind == "gaussian":
        def kl_of(out):
            return gaussian_kl(old[0], old[1], out[0], out[1])
    else:
        def kl_of(out):
            return softmax_kl(old, out)
    params = list(pol.parameters())
    names = [n for n, _ in pol.named_parameters()]
    sizes, shapes = [p.numel() for p in params], [p.shape for p in params]

    def kl_flat(theta):
        ps = [t.view(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        return kl_of(functional_call(pol, dict(zip(names, ps)), (states,)))

    return pol, params, states, kl_of, kl_flat


@pytest.mark.parametrize("kind", ["gaussian", "softmax"])
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_gauss_newton_equals_dense_kl_hessian(kind, damping):
    pol, params, states, kl_of, kl_flat = _setup(kind, 0)
    theta0 = flat_params(params)
    H = torch.autograd.functional.hessian(kl_flat, theta0)
    hvp = fisher_vector_product(kl_of, params, damping=damping, method="gauss_newton",
                                outputs_fn=lambda: pol(states))
    torch.manual_seed(1)
    V = torch.randn(3, theta0.numel())
    expected = V @ H.T + damping * V
    for i in range(3):
        torch.testing.assert_close(hvp(V[i]), expected[i], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(hvp(V), expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(hvp(V[0]), expected[0], rtol=1e-8, atol=1e-10)  # graphs retained
    ag = fisher_vector_product(lambda: kl_of(pol(states)), params, damping=damping, method="autograd")
    torch.testing.assert_close(hvp(V), ag(V), rtol=1e-9, atol=1e-12)


def test_gauss_newton_drops_only_the_vanishing_term():
    """Away from theta_k the KL Hessian has a residual term; the Gauss-Newton product differs there."""
    pol, params, states, kl_of, kl_flat = _setup("gaussian", 3)
    with torch.no_grad():
        for p in params:
            p.add_(0.3 * torch.randn_like(p))
    theta = flat_params(params)
    H = torch.autograd.functional.hessian(kl_flat, theta)
    hvp = fisher_vector_product(kl_of, params, damping=0.0, method="gauss_newton", outputs_fn=lambda: pol(states))
    v = torch.randn(theta.numel())
    assert not torch.allclose(hvp(v), H @ v, rtol=1e-3, atol=1e-6)


def test_gauss_newton_unused_parameter_and_single_output():
    torch.manual_seed(0)
    lin, unused = nn.Linear(3, 2), nn.Parameter(torch.ones(4))
    s = torch.randn(5, 3)
    with torch.no_grad():
        y0 = lin(s)
    params = list(lin.parameters()) + [unused]
    hvp = fisher_vector_product(lambda y: 0.5 * ((y - y0) ** 2).sum(-1).mean(), params, damping=0.5,
                                method="gauss_newton", outputs_fn=lambda: lin(s))
    n = sum(p.numel() for p in params)
    out = hvp(torch.ones(n))
    torch.testing.assert_close(out[-4:], torch.full((4,), 0.5))  # damping only
    # least squares: H = J^T J / N exactly; J v for v = (dW, db) is s dW^T + db
    dW, db = torch.randn(2, 3), torch.randn(2)
    v = torch.cat([dW.reshape(-1), db, torch.zeros(4)])
    jv = s @ dW.T + db
    ref_W, ref_b = jv.T @ s / 5, jv.sum(0) / 5
    torch.testing.assert_close(hvp(v)[:8], torch.cat([ref_W.reshape(-1), ref_b]) + 0.5 * v[:8])


def test_gauss_newton_validation_and_cpo_step():
    pol, params, states, kl_of, _ = _setup("softmax", 1)
    with pytest.raises(ValueError, match="outputs_fn"):
        fisher_vector_product(kl_of, params, method="gauss_newton")
    with pytest.raises(ValueError, match="scalar"):
        fisher_vector_product(lambda y: y.sum(0), params, method="gauss_newton", outputs_fn=lambda: pol(states))
    with pytest.raises(ValueError, match="tensor"):
        fisher_vector_product(kl_of, params, method="gauss_newton", outputs_fn=lambda: [1.0])
    assert CPOConfig(fvp_method="gauss_newton").fvp_method == "gauss_newton"
    # usable by the solver: same step as with the double-backprop product
    n = flat_params(params).numel()
    g, b = torch.randn(n), torch.randn(n)
    gn = fisher_vector_product(kl_of, params, method="gauss_newton", outputs_fn=lambda: pol(states))
    ag = fisher_vector_product(lambda: kl_of(pol(states)), params, method="autograd")
    s1, s2 = cpo_step(g, b, -0.01, 0.01, gn), cpo_step(g, b, -0.01, 0.01, ag)
    assert s1.case == s2.case
    torch.testing.assert_close(s1.direction, s2.direction, rtol=1e-8, atol=1e-10)
