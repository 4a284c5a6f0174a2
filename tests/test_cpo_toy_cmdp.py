"""CPO on a toy constrained bandit with a known constrained optimum (5 seeds, seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fcpo.solvers import CPOConfig, cpo_update, fisher_vector_product, flat_grad, flat_params, set_flat_params

REWARD = torch.tensor([1.0, 0.6, 0.1])  # item 0 is the popular one: best reward ...
COST = torch.tensor([1.0, 0.0, 0.0])  # ... and cost 1
LIMIT = 0.3  # E[cost] <= 0.3
# constrained optimum: p = (0.3, 0.7, 0), reward 0.3 * 1.0 + 0.7 * 0.6 = 0.72


def train(seed: int, iterations: int = 70, batch: int = 2000):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.zeros(3, requires_grad=True)
    cfg = CPOConfig(max_kl=0.02, damping=1e-3)
    for _ in range(iterations):
        with torch.no_grad():
            old = torch.log_softmax(logits, 0).clone()
            a = torch.multinomial(old.exp(), batch, replacement=True, generator=gen)
            r = REWARD[a] + 0.1 * torch.randn(batch, generator=gen)
            c = COST[a]
        adv_r = (r - r.mean()) / (r.std() + 1e-8)
        adv_c = c - c.mean()

        def surrogates():
            ratio = torch.exp(torch.log_softmax(logits, 0)[a] - old[a])
            return (ratio * adv_r).mean(), (ratio * adv_c).mean()

        def kl():
            logp = torch.log_softmax(logits, 0)
            return (old.exp() * (old - logp)).sum()

        sr, sc = surrogates()
        g = flat_grad(sr, [logits], retain_graph=True)
        b = flat_grad(sc, [logits])
        hvp = fisher_vector_product(kl, [logits], damping=cfg.damping)

        @torch.no_grad()
        def evaluate(theta):
            set_flat_params([logits], theta)
            r_, c_ = surrogates()
            return r_, c_, kl()

        res = cpo_update(flat_params([logits]).detach(), g, b, float(c.mean()) - LIMIT, hvp, evaluate, config=cfg)
        set_flat_params([logits], res.params)
    return torch.softmax(logits.detach(), 0)


@pytest.mark.parametrize("seed", range(5))
def test_cpo_reaches_the_constrained_optimum(seed):
    p = train(seed)
    expected_cost = float(p @ COST)
    expected_reward = float(p @ REWARD)
    assert expected_cost <= LIMIT + 0.03, f"violation: E[cost] = {expected_cost:.3f} > {LIMIT}"
    assert abs(float(p[0]) - 0.3) < 0.05 and float(p[1]) > 0.6, p
    assert expected_reward > 0.72 - 0.04, expected_reward


def test_unconstrained_run_would_pick_the_popular_item():
    """Control: the same loop with the limit lifted goes to the costly best item (the test can fail)."""
    global LIMIT
    saved, LIMIT = LIMIT, 1.0
    try:
        p = train(0, iterations=60)
    finally:
        LIMIT = saved
    assert float(p[0]) > 0.8
