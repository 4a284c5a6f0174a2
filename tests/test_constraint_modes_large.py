"""The two constraint modes (``per-slate`` | ``expected``) of the large-action-space agents.

per-slate: no slate above the cap floor(α'K) in training rollouts, greedy and sampled acting, static
and dynamic groups; the capped tree policy's log-probabilities are exact (brute-force enumeration on a
tiny tree, sampling frequencies); α' = 1 is bit-identical to the unconstrained agents.
expected: the multiplier moves by exactly lr · (deployed cost − limit).
"""
import itertools
import math

import numpy as np
import pytest
import torch

from fcpo.agents import make_agent
from fcpo.agents.tpgr import TPGRAgent, TPGRConfig
from fcpo.agents.wolpertinger import WolpertingerAgent, WolpertingerConfig
from fcpo.envs import EnvSpec
from fcpo.evaluate.constraint import per_slate_cap
from fcpo.policies.base import SlateState
from fcpo.policies.tree import TreePolicy, build_balanced_tree

pytestmark = pytest.mark.usefixtures("synthetic_only_one_thread")

ENV = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic"})
DYNAMIC = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic", "grouping": "dynamic"})
K = 5
WOLP_CI = dict(actor_hidden=(32, 32), critic_hidden=(32, 32), num_envs=32, updates_per_iteration=4, batch_size=32,
               warmup=64, buffer_size=5_000)
TPGR_CI = dict(lr=1e-2, rollouts_per_user=2, max_users=40)
AGENTS = {"wolpertinger": (WolpertingerAgent, WolpertingerConfig, WOLP_CI), "tpgr": (TPGRAgent, TPGRConfig, TPGR_CI)}


def _state(b: int, obs_dim: int, seed: int = 0) -> SlateState:
    g = torch.Generator().manual_seed(seed)
    return SlateState(torch.randn(b, obs_dim, generator=g), torch.zeros(b, 1, dtype=torch.long), torch.arange(b))


def _tiny_tree_policy(n: int = 7, alpha: float = 0.34, seed: int = 0) -> TreePolicy:
    torch.manual_seed(seed)
    tree = build_balanced_tree(torch.randn(n, 3), depth=2)
    pol = TreePolicy(tree, 4, hidden=6, alpha_prime=alpha, constraint="per-slate")
    with torch.no_grad():
        for p in list(pol.weights) + list(pol.biases):
            p.normal_(0, 1.0)
    return pol


# ------------------------------------------------------------------------------------ capped tree policy
@pytest.mark.parametrize("excluded", [(), (2,)])
def test_capped_tree_log_prob_is_a_distribution_at_every_slot(excluded):
    """Given any reachable prefix, exp(per-slot log-prob) sums to 1 over the next item; the slate
    probabilities sum to 1 and are 0 exactly for slates over the cap (while G1 items remain)."""
    pol = _tiny_tree_policy()
    n, k = pol.tree.n_items, 3
    cap = per_slate_cap(pol.alpha_prime, k)
    assert cap == 1
    pop = torch.tensor([True, True, True, False, False, True, False])  # 4 G0, 3 G1
    pol.set_groups(pop)
    state = _state(1, 4)
    exclude = torch.zeros(1, n, dtype=torch.bool)
    exclude[0, list(excluded)] = True
    h = pol.encoder(state.obs)
    slates = [s for s in itertools.permutations(range(n), k) if not set(s) & set(excluded)]
    items = torch.tensor(slates)
    per_slot = pol._capped_log_prob(h.expand(len(slates), -1), items, exclude.expand(len(slates), n), cap,
                                    pop.expand(len(slates), n))
    total = pol.log_prob(SlateState(state.obs.expand(len(slates), -1), state.history.expand(len(slates), -1),
                                    state.user.expand(len(slates))), items, exclude=exclude.expand(len(slates), n))
    torch.testing.assert_close(per_slot.sum(1), total)
    assert math.isclose(float(total.detach().exp().sum()), 1.0, rel_tol=1e-5)
    over = pop[items].sum(1) > cap
    assert bool(torch.isneginf(total[over]).all()) and bool(torch.isfinite(total[~over]).all())
    for j in range(k):  # every prefix of length j: the next-slot probabilities sum to 1
        by_prefix: dict[tuple, float] = {}
        for s, lp in zip(slates, per_slot[:, j].exp().tolist()):
            if all(math.isfinite(v) for v in per_slot[slates.index(s), :j].tolist()):
                by_prefix.setdefault(s[:j], {})[s[j]] = lp  # one value per (prefix, next item)
        for prefix, nxt in by_prefix.items():
            assert math.isclose(sum(nxt.values()), 1.0, rel_tol=1e-5), (prefix, nxt)


def test_capped_tree_sampling_matches_log_prob():
    """Empirical frequencies of sampled capped slates match exp(log_prob) (total variation < 0.03)."""
    pol = _tiny_tree_policy(n=6, alpha=0.5, seed=1)  # k = 2, cap 1
    pop = torch.tensor([True, False, True, True, False, False])
    pol.set_groups(pop)
    n_draws, k = 40_000, 2
    state = _state(1, 4, seed=3)
    big = SlateState(state.obs.expand(n_draws, -1), state.history.expand(n_draws, -1), state.user.expand(n_draws))
    draws = pol.act(big, k, "sample", generator=torch.Generator().manual_seed(0))
    assert int(pop[draws].sum(1).max()) <= 1
    slates = torch.tensor(list(itertools.permutations(range(6), k)))
    exact = pol.log_prob(SlateState(state.obs.expand(len(slates), -1), state.history.expand(len(slates), -1),
                                    state.user.expand(len(slates))), slates).exp()
    codes = draws[:, 0] * 6 + draws[:, 1]
    freq = torch.bincount(codes, minlength=36).float() / n_draws
    tv = 0.5 * float((freq[slates[:, 0] * 6 + slates[:, 1]] - exact.detach()).abs().sum())
    assert tv < 0.03
    assert math.isclose(float(exact.detach().sum()), 1.0, rel_tol=1e-5)


def test_capped_tree_greedy_respects_cap_and_falls_back_without_g1():
    pol = _tiny_tree_policy(n=9, alpha=0.4, seed=2)  # k = 5, cap 2
    n = pol.tree.n_items
    g = torch.Generator().manual_seed(0)
    pop = torch.rand(16, n, generator=g) < 0.6  # per-row groups
    pop[:, :3] = False  # at least 3 G1 items per row: 2 G0 + 3 G1 always possible
    for mode in ("greedy", "sample"):
        slates = pol.act(_state(16, 4), K, mode, generator=g, is_popular=pop)
        assert int(pop.gather(1, slates).sum(1).max()) <= 2
        assert all(len(set(r)) == K for r in slates.tolist())
    few_g1 = torch.ones(n, dtype=torch.bool)
    few_g1[0] = False  # one G1 item: the slate takes it and fills with G0
    slates = pol.act(_state(4, 4), K, "greedy", is_popular=few_g1)
    assert int(few_g1[slates].sum(1).min()) == K - 1 and bool((slates == 0).any(1).all())


# ------------------------------------------------------------------------------------ agents, per-slate
def _check_cap_wrapper(agent, env, cap, seen):
    """Wrap agent.policy.act: every slate (any mode) must hold <= cap G0 items under the env's groups now."""
    original = agent.policy.act

    def act(state, k, mode="greedy", exclude=None, generator=None, *args, **kwargs):
        slate = original(state, k, mode, exclude, generator, *args, **kwargs)
        popular = np.asarray(env.is_popular, dtype=bool)
        counts = popular[slate.numpy()].sum(1)
        seen.append((mode, popular.tobytes(), int(counts.max())))
        assert counts.max() <= cap, (mode, counts.max(), cap)
        return slate

    agent.policy.act = act


@pytest.mark.parametrize("name", ["wolpertinger", "tpgr"])
@pytest.mark.parametrize("spec", [ENV, DYNAMIC], ids=["static", "dynamic"])
def test_per_slate_slates_never_exceed_the_cap(name, spec):
    cls, cfg_cls, small = AGENTS[name]
    agent = cls(cfg_cls(**small, alpha_prime=0.4, constraint="per-slate"), spec, seed=0)
    cap = per_slate_cap(0.4, K)
    seen = []
    _check_cap_wrapper(agent, agent.env, cap, seen)
    for it in range(3):
        m = agent.train_iteration(it)
        assert m["lambda"] == 0.0  # no multiplier in per-slate mode
    del agent.policy.act  # back to the class's act
    assert seen and {s[0] for s in seen} == {"sample"}
    if spec is DYNAMIC:
        assert len({s[1] for s in seen}) > 1  # the groups did change during training
    if name == "wolpertinger":  # replayed slates: what training acted with
        slates = agent.buffer.slate[:agent.buffer.size]
        assert agent.buffer.size > 0
        if spec is ENV:
            assert int(agent.env.is_popular[slates.numpy()].sum(1).max()) <= cap
    # evaluation-style acting: greedy and sampled on fresh episodes, groups set per step
    env = spec.make_vector(cover_all_users=True, mode="test")
    obs, info = env.reset(seed=0)
    g = torch.Generator().manual_seed(0)
    for t in range(env.horizon):
        popular = np.asarray(env.is_popular, dtype=bool)
        agent.policy.set_groups(popular)
        state = SlateState.from_numpy(obs, info["history"], info["user"])
        exclude = torch.as_tensor(~env.item_mask())
        for mode in ("greedy", "sample"):
            slate = agent.policy.act(state, K, mode, exclude, g)
            assert popular[slate.numpy()].sum(1).max() <= cap
        obs, _, _, _, info = env.step(slate.numpy())


@pytest.mark.parametrize("name", ["wolpertinger", "tpgr"])
def test_alpha_one_per_slate_is_bit_identical_to_unconstrained(name):
    """At α' = 1 the cap (K) never binds: per-slate training equals the expected-mode (uncapped) path."""
    cls, cfg_cls, small = AGENTS[name]
    runs = []
    for constraint in ("per-slate", "expected"):
        extra = {"deploy": "sample"} if name == "wolpertinger" else {}
        agent = cls(cfg_cls(**small, alpha_prime=1.0, constraint=constraint, **extra), ENV, seed=4)
        metrics = [agent.train_iteration(it) for it in range(2)]
        runs.append((metrics, {k: v.clone() for k, v in agent.policy.state_dict().items()}))
    (m1, s1), (m2, s2) = runs
    for a, b in zip(m1, m2):
        assert a == pytest.approx(b, nan_ok=True, rel=0, abs=0)
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_tree_alpha_one_act_and_log_prob_unchanged():
    pol = _tiny_tree_policy(n=9, alpha=1.0)
    ref = TreePolicy(pol.tree, 4, hidden=6, constraint="expected")
    ref.load_state_dict(pol.state_dict())
    pol.set_groups(torch.ones(9, dtype=torch.bool))
    state = _state(8, 4)
    for mode in ("greedy", "sample"):
        a = pol.act(state, K, mode, generator=torch.Generator().manual_seed(1))
        b = ref.act(state, K, mode, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
    assert torch.equal(pol.log_prob(state, a), ref.log_prob(state, a))


# ------------------------------------------------------------------------------------ options and expected
@pytest.mark.parametrize("cfg_cls", [WolpertingerConfig, TPGRConfig])
def test_bad_constraint_or_deploy_is_a_clear_error(cfg_cls):
    with pytest.raises(ValueError, match=r"constraint \(--constraint\) must be one of per-slate, expected"):
        cfg_cls(constraint="hard")
    with pytest.raises(ValueError, match="deploy must be"):
        cfg_cls(deploy="argmax")


@pytest.mark.parametrize("name,deploy", [("tpgr", "greedy"), ("tpgr", "sample"), ("wolpertinger", "greedy")])
def test_expected_multiplier_moves_on_the_deployed_cost(name, deploy):
    """λ_1 = max(0, lr · (deployed cost per step − α'K)): the deployed policy's cost, not the training one's."""
    cls, cfg_cls, small = AGENTS[name]
    lr = 0.5
    agent = cls(cfg_cls(**small, alpha_prime=0.02, constraint="expected", deploy=deploy, lambda_lr=lr), ENV, seed=0)
    assert agent.policy.deploy_mode == deploy and agent.policy.alpha_prime == 0.02
    m = agent.train_iteration(0)
    deployed = m["deployed_popular_share"] * K
    assert deployed > 0.02 * K  # synthetic data: the untrained policy is above the limit
    assert m["lambda"] == pytest.approx(lr * (deployed - 0.02 * K), rel=1e-6)
    if deploy == "sample":
        assert m["deployed_popular_share"] == m["popular_share"]
    assert float(agent.policy.multiplier if name == "wolpertinger" else agent.lagrange.item()) > 0


def test_deploy_mode_attributes():
    for constraint, deploy, expect in [("per-slate", "sample", "greedy"), ("expected", "sample", "sample"),
                                       ("expected", "greedy", "greedy")]:
        agent = make_agent("tpgr", TPGRConfig(**TPGR_CI, alpha_prime=0.4, constraint=constraint, deploy=deploy),
                           ENV, "cpu", 0)
        assert agent.policy.deploy_mode == expect and agent.policy.constraint == constraint


def test_wolpertinger_per_slate_adds_g1_candidates_when_the_neighbourhood_is_popular():
    """k-NN candidates all in G0: the K nearest G1 items join the candidates, so the cap still holds."""
    agent = WolpertingerAgent(WolpertingerConfig(**WOLP_CI, knn_k=K, alpha_prime=0.4), ENV, seed=0)
    env = agent.env_spec.make_vector(cover_all_users=True, mode="test")
    obs, info = env.reset(seed=0)
    state = SlateState.from_numpy(obs, info["history"], info["user"])
    exclude = torch.as_tensor(~env.item_mask())
    cand = agent.policy.candidates(state.obs, exclude)
    popular = torch.ones(env.n_items, dtype=torch.bool)
    g1 = torch.randperm(env.n_items, generator=torch.Generator().manual_seed(0))[:8]
    popular[g1] = False
    assert float(popular[cand].float().mean()) > 0.9  # the plain neighbourhoods are (nearly) all G0
    for mode in ("greedy", "sample"):
        slate = agent.policy.act(state, K, mode, exclude, torch.Generator().manual_seed(1), is_popular=popular)
        assert int(popular[slate].sum(1).max()) <= per_slate_cap(0.4, K)
        assert bool((~exclude.gather(1, slate)).all())
    items = agent.policy.act(state, K, "greedy", exclude, is_popular=popular)
    logp = agent.policy.log_prob(state, items, exclude=exclude, is_popular=popular)
    assert bool(torch.isfinite(logp).all())
