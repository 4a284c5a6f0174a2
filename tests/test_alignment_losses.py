"""Tests for fcpo.alignment.losses: SFT NLL, DPO (Rafailov et al. eq. 7) and S-DPO (Chen et al. 2024)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.alignment.losses import dpo_loss, implicit_rewards, sdpo_loss, sft_nll

FAST = settings(max_examples=60, deadline=None)
finite = st.floats(-30, 30, allow_nan=False, allow_infinity=False)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_sft_nll_hand_value():
    assert float(sft_nll(torch.tensor([-1.0, -3.0]))) == pytest.approx(2.0)
    assert sft_nll(torch.tensor([-1.0, -3.0]), reduction="none").tolist() == [1.0, 3.0]
    assert float(sft_nll(torch.tensor([-1.0, -3.0]), reduction="sum")) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="reduction"):
        sft_nll(torch.tensor([0.0]), reduction="max")


def test_dpo_hand_value():
    # r_w = -1 - (-2) = 1, r_l = -3 - (-2.5) = -0.5, beta = 0.5 -> margin 0.75
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]), beta=0.5)
    assert float(loss) == pytest.approx(-math.log(_sigmoid(0.75)), rel=1e-6)
    # equal policy and reference: log 2
    z = torch.zeros(3)
    assert float(dpo_loss(z, z, z, z, beta=0.1)) == pytest.approx(math.log(2.0))


def test_sdpo_hand_value():
    # r_w = 0.5; r_l = (1.0, -1.0); beta = 2 -> z = (1, -3); loss = -log sigmoid(-log(e^1 + e^-3))
    lw, rw = torch.tensor([0.5]), torch.tensor([0.0])
    ll, rl = torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2)
    expected = -math.log(_sigmoid(-math.log(math.exp(1.0) + math.exp(-3.0))))
    assert float(sdpo_loss(lw, ll, rw, rl, beta=2.0)) == pytest.approx(expected, rel=1e-6)
    # the same via the implicit-reward helper
    assert implicit_rewards(ll, rl, 2.0).tolist() == [[2.0, -2.0]]


@FAST
@given(st.lists(st.tuples(finite, finite, finite, finite), min_size=1, max_size=8), st.floats(0.01, 50))
def test_sdpo_with_one_negative_equals_dpo(rows, beta):
    t = torch.tensor(rows, dtype=torch.float64)
    lw, ll, rw, rl = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    a = sdpo_loss(lw, ll[:, None], rw, rl[:, None], beta=beta, reduction="none")
    b = dpo_loss(lw, ll, rw, rl, beta=beta, reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@FAST
@given(st.integers(1, 6), st.integers(1, 6), st.floats(0.01, 10), st.integers(0, 10_000))
def test_sdpo_matches_direct_formula_and_is_positive(b, m, beta, seed):
    g = torch.Generator().manual_seed(seed)
    lw, rw = torch.randn(b, generator=g, dtype=torch.float64), torch.randn(b, generator=g, dtype=torch.float64)
    ll, rl = torch.randn(b, m, generator=g, dtype=torch.float64), torch.randn(b, m, generator=g, dtype=torch.float64)
    got = sdpo_loss(lw, ll, rw, rl, beta=beta, reduction="none")
    # the authors' form: -log sigmoid(-log sum_j exp(beta (r_j - r_w)))
    s = torch.exp(beta * ((ll - rl) - (lw - rw)[:, None])).sum(1)
    expected = -torch.log(torch.sigmoid(-torch.log(s)))
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
    assert bool((got > 0).all())


@FAST
@given(st.integers(2, 6), st.integers(0, 10_000))
def test_sdpo_increases_with_more_negatives(m, seed):
    """Adding a negative adds a positive term inside the log-sum-exp: the loss can only grow."""
    g = torch.Generator().manual_seed(seed)
    lw, rw = torch.randn(4, generator=g), torch.randn(4, generator=g)
    ll, rl = torch.randn(4, m, generator=g), torch.randn(4, m, generator=g)
    fewer = sdpo_loss(lw, ll[:, :-1], rw, rl[:, :-1], reduction="none")
    more = sdpo_loss(lw, ll, rw, rl, reduction="none")
    assert bool((more >= fewer - 1e-6).all())


def test_sdpo_mask_equals_dropping_columns():
    g = torch.Generator().manual_seed(0)
    lw, rw = torch.randn(3, generator=g), torch.randn(3, generator=g)
    ll, rl = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    mask = torch.tensor([[True, True, False, False]] * 3)
    torch.testing.assert_close(sdpo_loss(lw, ll, rw, rl, mask=mask), sdpo_loss(lw, ll[:, :2], rw, rl[:, :2]))
    with pytest.raises(ValueError, match="at least one negative"):
        sdpo_loss(lw, ll, rw, rl, mask=torch.zeros(3, 4, dtype=torch.bool))


@pytest.mark.parametrize("beta", [1e4, 1e6])
def test_large_beta_gives_finite_loss_and_gradients(beta):
    lw = torch.tensor([-1.0, -5.0], requires_grad=True)
    ll = torch.tensor([[-0.5, -2.0, -9.0], [-1.0, -4.0, -6.0]], requires_grad=True)
    rw, rl = torch.tensor([-2.0, -2.0]), torch.full((2, 3), -2.0)
    loss = sdpo_loss(lw, ll, rw, rl, beta=beta)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 1e3  # the badly ordered pair dominates
    assert torch.isfinite(lw.grad).all() and torch.isfinite(ll.grad).all()
    # the naive exp-sum of the authors' code overflows here
    with torch.no_grad():
        naive = -torch.log(torch.sigmoid(-torch.log(torch.exp(beta * ((ll - rl) - (lw - rw)[:, None])).sum(1))))
    assert not torch.isfinite(naive).all()
    lw2, ll2 = lw.detach().clone().requires_grad_(), ll[:, 0].detach().clone().requires_grad_()
    d = dpo_loss(lw2, ll2, rw, rl[:, 0], beta=beta)
    d.backward()
    assert math.isfinite(d.item()) and torch.isfinite(lw2.grad).all() and torch.isfinite(ll2.grad).all()


def test_gradient_direction_raises_chosen_lowers_rejected():
    lw = torch.zeros(1, requires_grad=True)
    ll = torch.zeros(1, 3, requires_grad=True)
    sdpo_loss(lw, ll, torch.zeros(1), torch.zeros(1, 3), beta=1.0).backward()
    assert float(lw.grad) < 0  # descending the loss raises log pi(y_w)
    assert bool((ll.grad > 0).all())  # and lowers every log pi(y_l)
    # S-DPO gradient (Chen et al. §3.3): the chosen weight is beta * sigma(lse) = sigmoid(log 3) = 0.75
    assert float(lw.grad) == pytest.approx(-0.75, rel=1e-6)
    np.testing.assert_allclose(ll.grad.numpy(), np.full((1, 3), 0.25), rtol=1e-6)


def test_shape_and_beta_validation():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(z, torch.zeros(3), z, z)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="logp_l"):
        sdpo_loss(z, z, z, z)
    with pytest.raises(ValueError, match="beta"):
        sdpo_loss(z, torch.zeros(2, 1), z, torch.zeros(2, 1), beta=float("nan"))
