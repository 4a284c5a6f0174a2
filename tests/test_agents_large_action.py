"""Wolpertinger and TPGR agents: registry, policy contract, resumable state, Lagrangian, and both
beat a uniformly random recommender on the synthetic data within a CI-sized run."""
import io

import numpy as np
import pytest
import torch

from fcpo.agents import AGENTS, Agent, make_agent
from fcpo.agents.lagrangian import LagrangeMultiplier
from fcpo.agents.tpgr import TPGRAgent, TPGRConfig, per_user_standardise
from fcpo.agents.wolpertinger import WolpertingerAgent, WolpertingerConfig
from fcpo.envs import EnvSpec
from fcpo.policies.base import SlateState
from fcpo.policies.knn import faiss_available


pytestmark = pytest.mark.usefixtures("synthetic_only_one_thread")


ENV = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic"})
K = 5  # the env's default slate size

# CI-sized configurations (the paper defaults are for full-length runs)
WOLP_CI = dict(actor_hidden=(64, 64), critic_hidden=(64, 64), actor_lr=1e-3, tau=0.01, num_envs=64,
               updates_per_iteration=32, batch_size=64, warmup=128, buffer_size=20_000)
TPGR_CI = dict(lr=1e-2, rollouts_per_user=2)


def run_episodes(env_spec: EnvSpec, act, seed: int = 0) -> tuple[float, float]:
    """Mean episode return and mean popular items per step of ``act(state, exclude, generator)`` over all users
    (a hand-written step loop, independent of fcpo.agents.rollout)."""
    env = env_spec.make_vector(cover_all_users=True, mode="train")
    obs, info = env.reset(seed=seed)
    g = torch.Generator().manual_seed(seed)
    ret, cost, steps = np.zeros(env.num_envs), 0.0, 0
    for _ in range(env.horizon):
        alive = ~env.episodes_done()
        if not alive.any():
            break
        exclude = torch.as_tensor(~env.item_mask())
        slate = act(SlateState.from_numpy(obs, info["history"], info["user"]), exclude, g)
        obs, r, _, _, info = env.step(slate.numpy())
        ret += r * alive
        cost += float(info["cost"][alive].sum())
        steps += int(alive.sum())
    return float(ret.mean()), cost / steps


def random_act(state, exclude, g, k=K):
    return torch.rand(exclude.shape, generator=g).masked_fill(exclude, -1.0).topk(k, 1).indices


def greedy(policy, k=K):
    return lambda state, exclude, g: policy.act(state, k, "greedy", exclude)


# --------------------------------------------------------------------------------------- lagrangian
def test_lagrange_multiplier_projected_ascent():
    lam = LagrangeMultiplier(limit=2.0, lr=0.5)
    assert lam.item() == 0.0
    assert float(lam.update(3.0)) == pytest.approx(0.5)  # 0 + 0.5 * (3 - 2)
    assert float(lam.update(4.0)) == pytest.approx(1.5)
    assert float(lam.update(0.0)) == pytest.approx(0.5)
    assert float(lam.update(0.0)) == 0.0  # projected onto lambda >= 0
    torch.testing.assert_close(lam.penalised(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])),
                               torch.tensor([1.0, 2.0]))
    vec = LagrangeMultiplier(limit=[1.0, 10.0], lr=1.0, init=[0.0, 2.0], max_value=5.0)
    torch.testing.assert_close(vec.update([4.0, 5.0]), torch.tensor([3.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(vec.update([9.0, 5.0]), torch.tensor([5.0, 0.0], dtype=torch.float64))  # capped
    torch.testing.assert_close(vec.penalty(torch.tensor([[1.0, 1.0]])), torch.tensor([5.0]))
    other = LagrangeMultiplier(limit=[0.0, 0.0])
    other.load_state_dict(vec.state_dict())
    torch.testing.assert_close(other.value, vec.value)
    with pytest.raises(ValueError, match="constraint"):
        vec.update(1.0 + torch.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        LagrangeMultiplier(1.0, init=-1.0)


def test_per_user_standardise():
    g = torch.tensor([[1.0, 3.0, 10.0, 30.0], [2.0, 2.0, 5.0, 7.0]])  # 2 users x 2 rollouts
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    adv = per_user_standardise(g, valid, groups=2)
    s = 2 ** 0.5
    torch.testing.assert_close(adv[0], torch.tensor([-1 / s, 1 / s, -1 / s, 1 / s]), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv[1], torch.tensor([0.0, 0.0, 0.0, 0.0]))  # equal returns; lone valid rollout


# ------------------------------------------------------------------------------------------ registry
def test_agents_are_registered_with_configs():
    assert AGENTS["tpgr"].config_cls is TPGRConfig
    assert AGENTS["wolpertinger"].config_cls is WolpertingerConfig
    assert WolpertingerConfig().knn_ratio == 0.1 and TPGRConfig().reward == "rating"
    with pytest.raises(ValueError, match="clustering"):
        TPGRConfig(clustering="ward")
    with pytest.raises(ValueError, match="knn_backend"):
        WolpertingerConfig(knn_backend="annoy")
    for cls in (TPGRConfig, WolpertingerConfig):  # one α' check for every agent: (0, 1]
        for bad in (0.0, -0.1, 1.5):
            with pytest.raises(ValueError, match="alpha_prime"):
                cls(alpha_prime=bad)
    agent = make_agent("tpgr", TPGRConfig(**TPGR_CI), ENV, "cpu", seed=0)
    assert isinstance(agent, Agent) and agent.env_spec.option("reward") == "rating"
    m = agent.train_iteration(0)
    assert {"reward", "cost", "cost_limit", "lambda"} <= set(m)
    assert m["cost_limit"] == pytest.approx(K * m["episode_length"])  # per-episode units


# ----------------------------------------------------------------------------------- improve on random
def test_tpgr_improves_on_random():
    agent = TPGRAgent(TPGRConfig(**TPGR_CI), ENV, seed=0)
    cfg = agent.env_spec  # reward="rating"
    rand, _ = run_episodes(cfg, random_act)
    for it in range(15):
        agent.train_iteration(it)
    learned, _ = run_episodes(cfg, greedy(agent.policy))
    assert learned > 2.0 * rand + 0.5, (learned, rand)


def test_wolpertinger_improves_on_random():
    agent = WolpertingerAgent(WolpertingerConfig(**WOLP_CI), ENV, seed=0)
    cfg = agent.env_spec  # reward="hit"
    rand, _ = run_episodes(cfg, random_act)
    for it in range(18):
        agent.train_iteration(it)
    learned, _ = run_episodes(cfg, greedy(agent.policy))
    assert learned > 1.5 * rand, (learned, rand)


def test_tpgr_lagrangian_lowers_popular_exposure():
    """alpha_prime small: lambda rises and the trained policy shows fewer popular items than unconstrained."""
    runs = {}
    for alpha in (1.0, 0.1):
        agent = TPGRAgent(TPGRConfig(**TPGR_CI, alpha_prime=alpha, lambda_lr=0.5, constraint="expected"), ENV, seed=0)
        for it in range(10):
            m = agent.train_iteration(it)
        runs[alpha] = (m["lambda"], run_episodes(agent.env_spec, greedy(agent.policy))[1])
    assert runs[1.0][0] == 0.0 and runs[0.1][0] > 0.0
    assert runs[0.1][1] < 0.5 * runs[1.0][1], runs


# ---------------------------------------------------------------------------------- contract / resume
@pytest.mark.parametrize("name", ["tpgr", "wolpertinger"])
def test_policy_contract(name):
    cfg = TPGRConfig(**TPGR_CI) if name == "tpgr" else WolpertingerConfig(**WOLP_CI)
    agent = make_agent(name, cfg, ENV, "cpu", seed=1)
    env = agent.env_spec.make_vector(16, mode="train")
    obs, info = env.reset(seed=0)
    state = SlateState.from_numpy(obs, info["history"], info["user"])
    exclude = torch.as_tensor(~env.item_mask())
    for mode in ("greedy", "sample"):
        slate = agent.policy.act(state, 5, mode, exclude, torch.Generator().manual_seed(0))
        assert slate.shape == (16, 5) and slate.dtype == torch.long
        assert not bool(torch.gather(exclude, 1, slate).any())
        assert bool((torch.sort(slate, 1).values.diff(dim=1) > 0).all())
    lp = agent.policy.log_prob(state, agent.policy.act(state, 5, "greedy", exclude), exclude=exclude)
    assert lp.shape == (16,) and bool(torch.isfinite(lp).all())
    assert isinstance(agent.policy.log_prob_kind, str)
    snap = agent.policy.snapshot()
    assert torch.equal(snap.act(state, 5, "greedy", exclude), agent.policy.act(state, 5, "greedy", exclude))
    assert not any(p.requires_grad for p in snap.parameters())


@pytest.mark.parametrize("name", ["tpgr", "wolpertinger"])
def test_state_dict_resumes_exactly(name):
    small = dict(TPGR_CI, max_users=50) if name == "tpgr" else dict(WOLP_CI, num_envs=16, warmup=16,
                                                                     updates_per_iteration=4, noise="ou")
    cfg_cls = TPGRConfig if name == "tpgr" else WolpertingerConfig
    a = make_agent(name, cfg_cls(**small, alpha_prime=0.05, constraint="expected"), ENV, "cpu", seed=3)
    a.train_iteration(0)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # a real checkpoint round trip (state_dict holds live references)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    expected = a.train_iteration(1)
    b = make_agent(name, cfg_cls(**small, alpha_prime=0.05, constraint="expected"), ENV, "cpu", seed=99)
    b.load_state_dict(saved)
    got = b.train_iteration(1)
    assert got == pytest.approx(expected, nan_ok=True)
    assert got["lambda"] > 0.0


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (optional)")
def test_wolpertinger_with_faiss_index_runs():
    agent = WolpertingerAgent(WolpertingerConfig(**dict(WOLP_CI, num_envs=16, updates_per_iteration=2, warmup=16),
                                                 knn_backend="faiss", knn_k=60), ENV, seed=0)
    m = agent.train_iteration(0)
    m = agent.train_iteration(1)
    assert np.isfinite(m["critic_loss"]) and m["k_nn"] == 60
