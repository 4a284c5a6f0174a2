"""The constraint that is trained is the constraint that is deployed (issue 11).

* ``per-slate``: FCPO (gaussian actor) and PPO-Lagrangian (softmax actor) never emit a slate with more
  than ⌊α'K⌋ G0 items, in training rollouts and in greedy and sampled evaluation, under static and
  dynamic groups; the stored log-probabilities of a dynamic-group rollout equal the recomputed ones
  (the batch remembers which groups each slate was drawn under); at α' = 1 both modes coincide.
* ``expected``: the deployed policy is the sampled one and the evaluator uses it without being told.
* the evaluator's ``report["constraint"]`` against hand-computed cases.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fcpo.agents import make_agent
from fcpo.agents.cpo import FCPOConfig
from fcpo.agents.ppo_lagrangian import PPOLagrangianConfig
from fcpo.envs import EnvSpec
from fcpo.evaluate import evaluate, format_report
from fcpo.evaluate.evaluator import _accuracy, _run_once
from fcpo.metrics import accuracy_by_cutoff, relevance_matrix
from fcpo.policies.base import Policy

pytestmark = pytest.mark.usefixtures("synthetic_only_one_thread")

STATIC = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic"})
DYNAMIC = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic", "grouping": "dynamic"})
ALPHA, CAP = 0.4, 2  # ⌊0.4 · 5⌋


def _agent(name: str, env: EnvSpec, constraint: str = "per-slate", alpha: float = ALPHA, **kw):
    cls = FCPOConfig if name == "fcpo" else PPOLagrangianConfig
    extra = dict(epochs=1) if name == "ppo-lagrangian" else {}
    cfg = cls(alpha_prime=alpha, constraint=constraint, users_per_iteration=0.3, **extra, **kw)
    return make_agent(name, cfg, env, "cpu", 0)


@pytest.mark.parametrize("env", [STATIC, DYNAMIC], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", ["fcpo", "ppo-lagrangian"])
def test_per_slate_never_exceeds_the_cap_in_training_and_evaluation(name, env):
    agent = _agent(name, env)
    assert agent.policy.slate_cap == CAP and agent.policy.deploy_mode == "greedy"
    assert agent.policy.alpha_prime == ALPHA and agent.config.constraint == "per-slate"
    for it in range(2):
        batch = agent.rollout()
        # slot_cost marks G0 items under the groups in force at each step
        assert int(batch.slot_cost.sum(dim=1).max()) <= CAP
        assert batch.c <= 1e-9  # J_C ≤ d follows from the cap
        stats = agent.train_iteration(it)
        assert stats["cost"] <= stats["cost_limit"] + 1e-9
    for mode in ("greedy", "sample"):
        report = evaluate(agent.policy, env, mode=mode, seeds=(0, 1))
        c = report["constraint"]
        assert c["cap"] == CAP and c["per_slate_ok"] and c["fraction_above_cap"] == 0.0
        assert c["max_slate_popular"] <= CAP and c["max_step_share"] <= ALPHA + 1e-9
    # the unconstrained control does exceed the cap (so the checks above can fail)
    free = evaluate(_agent(name, env, constraint="expected").policy, env, mode="greedy", alpha_prime=ALPHA)
    assert not free["constraint"]["per_slate_ok"] and free["constraint"]["max_slate_popular"] > CAP


def test_dynamic_group_rollout_stores_exact_capped_log_probs():
    agent = _agent("ppo-lagrangian", DYNAMIC, actor_mode="softmax")
    batch = agent.rollout()
    assert batch.groups.shape[0] > 1  # the groups changed during the rollout
    assert batch.group_index.shape == (batch.size,)
    policy = agent.policy
    exclude = batch.exclude_mask(torch.arange(batch.size), policy.n_items)
    with torch.no_grad():
        recomputed = policy.action_log_prob(batch.obs, batch.action, exclude, is_popular=batch.popular_mask())
        first_groups = policy.action_log_prob(batch.obs, batch.action, exclude, is_popular=batch.groups[0])
    torch.testing.assert_close(recomputed, batch.log_prob, rtol=1e-5, atol=1e-4)
    # the groups matter: the first step's groups alone give other log-probs on later samples
    assert not torch.allclose(first_groups, batch.log_prob, rtol=1e-5, atol=1e-4)
    # a sub-batch view returns one mask per sample, the versions of those samples
    idx = torch.tensor([0, batch.size - 1])
    masks = batch.popular_mask(idx)
    assert masks.shape == (2, policy.n_items)
    assert torch.equal(masks[1], batch.groups[batch.group_index[-1]])


def test_static_groups_store_one_version_without_copies():
    batch = _agent("fcpo", STATIC).rollout()
    assert batch.groups.shape[0] == 1 and int(batch.group_index.max()) == 0
    assert batch.popular_mask(torch.arange(3)).shape == (batch.groups.shape[1],)  # [n], not [B, n]


@pytest.mark.parametrize("name", ["fcpo", "ppo-lagrangian"])
def test_alpha_one_is_the_same_in_both_modes(name):
    stats = {}
    params = {}
    for constraint in ("per-slate", "expected"):
        agent = _agent(name, STATIC, constraint=constraint, alpha=1.0)
        assert not agent.policy.cap_active(agent.slate_size)
        stats[constraint] = [agent.train_iteration(i) for i in range(2)]
        params[constraint] = [p.detach().clone() for p in agent.policy.parameters()]
    assert stats["per-slate"] == stats["expected"]
    for a, b in zip(params["per-slate"], params["expected"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_expected_mode_deploys_the_sampled_policy():
    agent = _agent("fcpo", STATIC, constraint="expected")
    assert agent.policy.slate_cap is None and agent.policy.deploy_mode == "sample"
    report = evaluate(agent.policy, STATIC)
    assert report["mode"] == "sample" and report["seeds"] == [0, 1, 2] and "std" in report
    same = evaluate(agent.policy, STATIC, mode="sample", seeds=(0, 1, 2))
    assert same["metrics"] == report["metrics"]
    greedy = evaluate(agent.policy, STATIC, mode="greedy")
    assert greedy["mode"] == "greedy" and greedy["metrics"] != report["metrics"]
    assert evaluate(_agent("fcpo", STATIC).policy, STATIC)["mode"] == "greedy"


@pytest.mark.parametrize("cls", [FCPOConfig, PPOLagrangianConfig])
def test_bad_constraint_value_is_a_clear_error(cls):
    with pytest.raises(ValueError, match=r"constraint \(--constraint\) must be one of per-slate, expected"):
        cls(constraint="per_slate")


class _PopularFirst(Policy):
    """Ranks G0 items first (fixed scores), so every slate is all-G0 while G0 items remain."""

    def __init__(self, is_popular: np.ndarray):
        super().__init__()
        n = len(is_popular)
        self.register_buffer("s", torch.as_tensor(is_popular, dtype=torch.float32) + torch.linspace(0, 0.1, n))

    def scores(self, state):
        return self.s.expand(len(state), -1)


def test_report_matches_a_hand_computed_case():
    vec = STATIC.make_vector(1, mode="test")
    popular = np.asarray(vec.is_popular, dtype=bool)
    # G1 first: 320 G1 items, at most 20 shown + the training items excluded, so no slate holds a G0 item
    none = evaluate(_PopularFirst(~popular), STATIC, alpha_prime=ALPHA, steps=4)["constraint"]
    assert none["popular_share"] == 0.0 and none["popular_share_per_step"] == [0.0] * 4
    assert none["max_slate_popular"] == 0 and none["fraction_above_cap"] == 0.0 and none["per_slate_ok"] is True
    # G0 first: the counts by hand from the recommended lists
    policy = _PopularFirst(popular)
    report = evaluate(policy, STATIC, alpha_prime=ALPHA, steps=4)
    c = report["constraint"]
    test = STATIC.make_vector(cover_all_users=True, mode="test", horizon=4)
    test.reset(options={"users": np.arange(test.n_users)})
    rec, _, alive = _run_once(policy, test, "rollout", 5, 4, "greedy", 0, "cpu")
    counts = popular[rec].reshape(len(rec), 4, 5).sum(axis=2)  # [U, L] G0 items per slate
    assert c["slates"] == int(alive.sum())
    assert c["popular_share"] == pytest.approx(counts[alive].sum() / (5 * alive.sum()))
    assert c["popular_share"] > 0.99 and c["max_slate_popular"] == 5
    assert c["fraction_above_cap"] == pytest.approx(float((counts[alive] > CAP).mean()))
    assert c["cap"] == CAP and c["per_slate_ok"] is False
    assert c["max_step_share"] == pytest.approx(max(c["popular_share_per_step"]))
    text = format_report(report)
    assert f"mean popular share {100 * c['popular_share']:.2f} %" in text and "per_slate_ok=False" in text
    # without α' (the policy has none) the cap-based fields are left out
    plain = evaluate(policy, STATIC, steps=4)
    assert "cap" not in plain["constraint"] and "per_slate_ok" not in plain["constraint"]
    assert plain["constraint"]["popular_share"] == c["popular_share"]
    assert "per-slate cap" not in format_report(plain)


def test_one_pass_cutoff_metrics_equal_the_per_cutoff_loop():
    agent = _agent("fcpo", STATIC)
    vec = STATIC.make_vector(cover_all_users=True, mode="test")
    vec.reset(options={"users": np.arange(vec.n_users)})
    rec, counts, alive = _run_once(agent.policy, vec, "rollout", vec.slate_size, vec.horizon, "greedy", 0, "cpu")
    targets = vec.env_data.split.targets("test")
    relevant = relevance_matrix(targets.indptr, targets.values, vec.n_items)
    loop = {}
    for t in range(1, vec.horizon + 1):
        loop.update(_accuracy(rec[:, : t * vec.slate_size], relevant, t * vec.slate_size))
    fast = accuracy_by_cutoff(rec, relevant, vec.slate_size, vec.horizon)
    assert set(fast) == set(loop)
    for key in loop:
        assert fast[key] == pytest.approx(loop[key], rel=1e-12, abs=1e-12), key
    assert counts.shape == alive.shape == (vec.n_users, vec.horizon)
    report = evaluate(agent.policy, STATIC)
    for key in loop:
        assert report["metrics"][key] == pytest.approx(loop[key], rel=1e-12, abs=1e-12), key
