"""Issue 17: FCPO's policy update runs the actor network over the full batch once at θ_k plus once
per line-search trial (it ran 3 + 2 per trial before), and leaves the actor as it found it."""
from __future__ import annotations

import pytest
import torch

from fcpo.agents import make_agent
from fcpo.agents.cpo import FCPOConfig
from fcpo.policies.actor import SlateActor
from fcpo.envs import EnvSpec

pytestmark = pytest.mark.usefixtures("synthetic_only_one_thread")

ENV = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic"})


def _count_forwards(monkeypatch, size):
    calls = {"full": 0, "other": 0}
    orig = SlateActor.mean_action

    def counted(self, obs):
        calls["full" if obs.shape[0] == size[0] else "other"] += 1
        return orig(self, obs)

    monkeypatch.setattr(SlateActor, "mean_action", counted)
    return calls


@pytest.mark.parametrize("mode, constraint", [("gaussian", "per-slate"), ("softmax", "expected"),
                                              ("gaussian", "expected")])
def test_one_full_batch_forward_at_theta_k_and_one_per_trial(monkeypatch, mode, constraint):
    agent = make_agent("fcpo", FCPOConfig(alpha_prime=0.2, actor_mode=mode, constraint=constraint,
                                          users_per_iteration=0.3, max_kl=0.05), ENV, "cpu", 0)
    batch = agent.rollout()
    size = [batch.size]
    calls = _count_forwards(monkeypatch, size)
    trials = []
    import fcpo.agents.cpo as cpo_mod

    inner = cpo_mod.cpo_update

    def spy(*a, **k):
        out = inner(*a, **k)
        trials.append(len(out.line_search.trials))
        return out

    monkeypatch.setattr(cpo_mod, "cpo_update", spy)
    stats = agent._policy_update(batch)
    assert trials and stats["cpo_case"]
    assert calls["full"] == 1 + trials[0], (calls, trials)
    assert calls["other"] == 1  # the Fisher subsample's KL graph
    assert "mean_action" not in vars(agent.policy)  # the memo is gone: the class's method again


def test_the_actor_is_restored_after_an_error(monkeypatch):
    agent = make_agent("fcpo", FCPOConfig(alpha_prime=0.2, users_per_iteration=0.3), ENV, "cpu", 0)
    batch = agent.rollout()
    import fcpo.agents.cpo as cpo_mod

    def boom(*a, **k):
        raise ValueError("solver failed")

    monkeypatch.setattr(cpo_mod, "cpo_update", boom)
    with pytest.raises(ValueError, match="solver failed"):
        agent._policy_update(batch)
    assert "mean_action" not in vars(agent.policy)
    out = agent.policy.mean_action(batch.obs[:3])
    assert out.requires_grad  # a fresh forward, not a memoised tensor


def test_gaussian_fisher_products_are_the_kl_hessian_products(monkeypatch):
    """The Gaussian actor's Fisher products come from J^T M J (method="gauss_newton"); they must equal
    the double-backward products of the KL the agent used before (issue 17)."""
    import numpy as np

    import fcpo.agents.cpo as cpo_mod
    from fcpo.solvers import fisher_vector_product

    agent = make_agent("fcpo", FCPOConfig(alpha_prime=0.4, users_per_iteration=0.3), ENV, "cpu", 0)
    batch = agent.rollout()
    built = []
    inner = cpo_mod.fisher_vector_product

    def spy(*a, **k):
        hvp = inner(*a, **k)
        built.append((k.get("method"), hvp))
        return hvp

    monkeypatch.setattr(cpo_mod, "fisher_vector_product", spy)
    policy = agent.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    rng_state = agent.rng.bit_generator.state
    agent._policy_update(batch)
    assert [m for m, _ in built] == ["gauss_newton"]
    # rebuild at θ_k with the same Fisher subsample and compare against autograd's double backward
    start = 0
    with torch.no_grad():
        for p in params:
            p.copy_(theta[start:start + p.numel()].view_as(p))
            start += p.numel()
    agent.rng.bit_generator.state = rng_state
    n_sub = max(1, int(agent.config.fvp_subsample * batch.size))
    sub = torch.as_tensor(np.sort(agent.rng.choice(batch.size, n_sub, replace=False)))
    old = policy.old_stats(batch.obs[sub])
    reference = fisher_vector_product(lambda: policy.kl_from(batch.obs[sub], old), params, damping=agent.solver.damping,
                                      method="autograd")
    ours = inner(lambda out: cpo_mod.gaussian_kl(old, *out), params, damping=agent.solver.damping,
                 method="gauss_newton",
                 outputs_fn=lambda: (policy.mean_action(batch.obs[sub]), policy.log_std.expand(n_sub, -1)))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(theta.numel(), generator=g)
        a, b = reference(v), ours(v)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7 * float(a.abs().max())), float((a - b).abs().max())
