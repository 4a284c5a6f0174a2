"""A toy slate CMDP where the per-slate cap and the expected constraint have known, different optima.

Four items, G0 = {0, 1} (popular), K = 2 items per slate, T = 2 steps, α' = 0.5.
Rewards per slot: a popular item pays 1.0 at step 0 and 0.7 at step 1; an
unpopular item pays 0.5 at both steps.  Cost per step = number of G0 items.

* expected constraint (CMDP, Σ_t cost_t ≤ α'·K·T = 2): spend both popular slots
  where they gain most, at step 0: J_R = 2·1.0 + 2·0.5 = 3.0, but the first slate
  is 100 % popular;
* per-slate cap (at most ⌊α'K⌋ = 1 G0 item per slate): 1.0 + 0.5 + 0.7 + 0.5 = 2.7,
  and no slate ever holds two popular items.

Both are trained with the project's CPO update on *exact* expectations (every
ordered slate enumerated), so the test checks the decoding, its log-probability
and the solver together, without sampling noise.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from fcpo.policies.base import plackett_luce_log_prob
from fcpo.policies.capped import capped_plackett_luce_log_prob
from fcpo.solvers import CPOConfig, cpo_update, fisher_vector_product, flat_grad, flat_params, set_flat_params

N_ITEMS, K, T, ALPHA = 4, 2, 2, 0.5
POPULAR = torch.tensor([True, True, False, False])
SLOT_REWARD = torch.tensor([[1.0, 1.0, 0.5, 0.5],   # step 0
                            [0.7, 0.7, 0.5, 0.5]])  # step 1
LIMIT = ALPHA * K * T  # per-episode limit of the expected constraint
CAP = int(ALPHA * K + 1e-9)
SLATES = torch.tensor(list(itertools.permutations(range(N_ITEMS), K)))  # 12 ordered slates


def slate_log_probs(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """log P(slate) for every enumerated slate, per step: [T, 12]."""
    out = []
    for t in range(T):
        scores = logits[t].expand(len(SLATES), N_ITEMS)
        if mode == "per-slate":
            lp = capped_plackett_luce_log_prob(scores, SLATES, CAP, POPULAR, None)
        else:
            lp = plackett_luce_log_prob(scores, SLATES)
        out.append(lp)
    return torch.stack(out)


def objectives(logits: torch.Tensor, mode: str):
    p = slate_log_probs(logits, mode).exp()  # [T, 12]
    r = SLOT_REWARD[:, SLATES].sum(dim=2)  # [T, 12]
    c = POPULAR[SLATES].sum(dim=1).float().expand(T, -1)
    return (p * r).sum(), (p * c).sum(), p


def train(mode: str, iterations: int = 150):
    logits = torch.zeros(T, N_ITEMS, requires_grad=True)
    cfg = CPOConfig(max_kl=0.05, damping=1e-4)
    for _ in range(iterations):
        with torch.no_grad():
            old_lp = slate_log_probs(logits, mode)
        j_r, j_c, _ = objectives(logits, mode)
        g = flat_grad(j_r, [logits], retain_graph=True)
        b = flat_grad(j_c, [logits])

        def kl():
            lp = slate_log_probs(logits, mode)
            finite = torch.isfinite(old_lp)
            return (old_lp.exp() * torch.where(finite, old_lp - lp, torch.zeros_like(lp))).sum()

        hvp = fisher_vector_product(kl, [logits], damping=cfg.damping)

        @torch.no_grad()
        def evaluate(theta):
            set_flat_params([logits], theta)
            r_, c_, _ = objectives(logits, mode)
            return r_, c_, kl()

        res = cpo_update(flat_params([logits]).detach(), g.detach(), b.detach(), float(j_c) - LIMIT, hvp, evaluate,
                         config=cfg)
        set_flat_params([logits], res.params)
    with torch.no_grad():
        return objectives(logits, mode)


def test_enumeration_is_a_distribution():
    logits = torch.randn(T, N_ITEMS, generator=torch.Generator().manual_seed(0))
    for mode in ("expected", "per-slate"):
        p = slate_log_probs(logits, mode).exp()
        assert torch.allclose(p.sum(dim=1), torch.ones(T), atol=1e-6), mode
    two_popular = POPULAR[SLATES].sum(dim=1) == 2
    assert float(slate_log_probs(logits, "per-slate").exp()[:, two_popular].sum()) == 0.0


def test_expected_constraint_reaches_its_optimum():
    j_r, j_c, p = train("expected")
    assert float(j_c) <= LIMIT + 0.02
    assert float(j_r) == pytest.approx(3.0, abs=0.05)
    two_popular = POPULAR[SLATES].sum(dim=1) == 2
    assert float(p[0, two_popular].sum()) > 0.9, "the budget should be spent on the first slate"


def test_per_slate_cap_reaches_its_optimum_and_never_breaks_the_cap():
    j_r, j_c, p = train("per-slate")
    assert float(j_r) == pytest.approx(2.7, abs=0.05)
    two_popular = POPULAR[SLATES].sum(dim=1) == 2
    assert float(p[:, two_popular].sum()) == 0.0
    one_popular = POPULAR[SLATES].sum(dim=1) == 1
    assert float(p[1, one_popular].sum()) > 0.9, "step 1 should still use its one popular slot"
