"""iALP / A-iALP: states, pairwise reward model, Plackett-Luce helpers, mixture policy, agents, checkpoints, CLI."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fcpo.agents import AGENTS, make_agent
from fcpo.agents.ialp import IALPAgent, IALPConfig, simulator_spec
from fcpo.envs import EnvSpec
from fcpo.llm.ialp import (PreferenceRewardModel, preference_pairs, sample_states, state_observations,
                           train_reward_model)
from fcpo.policies.actor import SlateActor
from fcpo.policies.base import SlateState, gumbel_topk, plackett_luce_log_prob
from fcpo.policies.mixture import MixturePolicy, item_logits

ENV = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic", "embedding_dim": 8, "horizon": 4})
SIM = EnvSpec("fcpo/MovieLensSim-v0", {"dataset": "synthetic", "embedding_dim": 8, "horizon": 4})
TINY = IALPConfig(oracle_states=96, pretrain_iterations=2, pretrain_users=24, online_users=24, reward_epochs=5,
                  ppo_epochs=2, ppo_batch=64)


@pytest.fixture(autouse=True)
def _setup(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fcpo-cache-ialp"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_states_are_windows_of_training_positives():
    data = _env_data()
    split = data.split
    rows, hist = sample_states(split, 200, np.random.default_rng(0))
    assert hist.shape == (200, split.n_initial)
    for r, h in zip(rows[:50], hist[:50]):
        seq = np.concatenate([split.train_initial[r], split.train_targets.row(r)]).tolist()
        starts = [i for i in range(len(seq) - len(h) + 1) if seq[i:i + len(h)] == h.tolist()]
        assert starts, (r, h, seq)
    obs = state_observations(data, rows, hist)
    d, n = data.dim, split.n_initial
    np.testing.assert_allclose(obs[0, :n * d].reshape(n, d), data.item_embeddings[hist[0]])
    assert (obs[:, -1] == 0).all()


def _env_data():
    return ENV.make_vector(1).env_data


def test_cumsum_plackett_luce_matches_the_sequential_one():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(32, 50, generator=g, dtype=torch.float64) * 2
    exclude = torch.rand(32, 50, generator=g) < 0.2
    items = gumbel_topk(scores, 5, exclude, g)
    exact = plackett_luce_log_prob(scores, items, exclude, per_slot=True)
    fast = plackett_luce_log_prob(scores, items, exclude, per_slot=True, method="cumsum")
    torch.testing.assert_close(fast, exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(plackett_luce_log_prob(scores, items, exclude, method="cumsum"), exact.sum(1))
    # hand-checked: scores log(1, 2, 3, 4), slate (3, 1): 4/10 * 2/6
    hand = plackett_luce_log_prob(torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)),
                                  torch.tensor([[3, 1]]), method="cumsum")
    assert float(hand) == pytest.approx(math.log(0.4 * 2 / 6))
    with pytest.raises(ValueError, match="method"):
        plackett_luce_log_prob(scores, items, method="fast")
    s = scores.clone().requires_grad_(True)
    plackett_luce_log_prob(s, items, exclude, method="cumsum").sum().backward()
    s2 = scores.clone().requires_grad_(True)
    plackett_luce_log_prob(s2, items, exclude).sum().backward()
    torch.testing.assert_close(s.grad, s2.grad)


def _actor(seed, n_items=30, dim=4):
    torch.manual_seed(seed)
    return SlateActor(torch.randn(n_items, dim), 3, 2, "softmax", 16, 0.1, 0.5, residual_user=False)


def test_mixture_policy_is_a_normalised_mixture():
    a, b = _actor(0), _actor(1)
    mix = MixturePolicy(a, b, w_init=0.25)
    obs = torch.randn(6, 3 * 4 + 4 + 1)
    p = torch.exp(mix.log_mixture(obs))
    ref = 0.25 * torch.softmax(item_logits(b, obs), 1) + 0.75 * torch.softmax(item_logits(a, obs), 1)
    torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-7)
    assert not any(q.requires_grad for q in mix.anchor.parameters())
    items, _, logp = mix.sample(obs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logp, mix.action_log_prob(obs, items))
    state = SlateState(obs, torch.zeros(6, 3, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    assert mix.act(state, 2).shape == (6, 2)
    same = MixturePolicy(a, _actor(0), 0.5)
    torch.testing.assert_close(same.log_mixture(obs), torch.log_softmax(item_logits(a, obs), 1), rtol=1e-5,
                               atol=1e-5)


def test_reward_model_ranks_oracle_preferred_items_above_random_ones():
    from fcpo.llm.oracle import ItemCatalogue, TfidfOracle, query_preferences

    data = _env_data()
    rng = np.random.default_rng(0)
    oracle = TfidfOracle(ItemCatalogue.from_ratings(data.data))
    rows, hist = sample_states(data.split, 600, rng)
    fb = query_preferences(oracle, hist, 40, 4, rng, weights=data.train_counts + 1.0)
    obs = state_observations(data, rows, hist)
    feats = torch.as_tensor(np.concatenate([data.item_embeddings, np.log1p(data.train_counts)[:, None]], 1),
                            dtype=torch.float32)
    torch.manual_seed(0)
    model = PreferenceRewardModel(feats, torch.as_tensor(data.data.item_genres), data.split.n_initial, data.dim)
    model.set_text_features(oracle.item_features(32))
    stats = train_reward_model(model, obs[:500], _subset(fb, slice(0, 500)), rng, torch.Generator().manual_seed(0))
    assert stats["reward_val_vs_random"] > 0.7, stats  # chance: 0.5
    # fresh states never seen in training: preferred items vs uniformly random catalogue items
    test = _subset(fb, slice(500, 600))
    with torch.no_grad():
        o, h = torch.as_tensor(obs[500:]), torch.as_tensor(test.histories)
        r_pref = model(o, h, torch.as_tensor(test.preferred))
        r_rand = model(o, h, torch.as_tensor(rng.integers(0, data.n_items, test.preferred.shape)))
    assert float((r_pref > r_rand).float().mean()) > 0.7
    state, pos, neg = preference_pairs(fb, 3, rng, "candidates")
    assert len(state) == 600 * 4 * 3 and not (pos == neg).any()
    assert all(n not in fb.preferred[s] and n in fb.candidates[s] for s, n in zip(state[:200], neg[:200]))


def _subset(fb, sl):
    from fcpo.llm.oracle import PreferenceFeedback

    return PreferenceFeedback(fb.histories[sl], fb.candidates[sl], fb.preferred[sl], fb.scores[sl], fb.oracle,
                              fb.is_llm)


@pytest.mark.parametrize("env", [ENV, SIM], ids=["replay-spec", "sim-spec"])
def test_agents_are_registered_and_train(env):
    assert {"ialp", "ialp-ft", "ialp-ap"} <= set(AGENTS)
    for name in ("ialp", "ialp-ft", "ialp-ap"):
        agent = make_agent(name, TINY, env, "cpu", seed=0)
        assert agent.env_spec.id == "fcpo/MovieLensSim-v0" and agent.env_spec.option("preset") == "noisy"
        stats = [agent.train_iteration(i) for i in range(2)]
        for s in stats:
            assert math.isfinite(s["reward"]) and math.isfinite(s["cost"]) and s["reward"] >= 0
            assert s["reward_val_vs_random"] > 0.5
        assert stats[1]["interactions"] > stats[0]["interactions"]
        if name == "ialp":
            assert "offline_reward" in stats[0] and agent.pretrain_done == 2
        if name == "ialp-ap":
            assert 0 < stats[1]["mix_weight"] < 1 and isinstance(agent.policy, MixturePolicy)


def test_no_pretraining_skips_the_oracle():
    agent = IALPAgent(replace(TINY, pretrain_iterations=0, oracle="minilm"), ENV, seed=0, variant="ialp-ft")
    stats = agent.train_iteration(0)  # the MiniLM oracle would be needed if anything were pre-trained
    assert agent.stage == 2 and agent.pretrain_done == 0 and math.isfinite(stats["reward"])


@pytest.mark.parametrize("variant", ["ialp", "ialp-ap"])
def test_checkpoint_is_weights_only_and_resume_is_exact(tmp_path, variant):
    a = IALPAgent(TINY, ENV, seed=3, variant=variant)
    a.train_iteration(0)
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    expected = a.train_iteration(1)
    b = IALPAgent(TINY, ENV, seed=3, variant=variant)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    got = b.train_iteration(1)
    for key in ("reward", "cost", "interactions"):
        assert got[key] == pytest.approx(expected[key], rel=1e-9), key


def test_pretraining_is_shared_through_pretrained_state():
    a = IALPAgent(TINY, ENV, seed=0, variant="ialp-ft")
    a.pretrain()
    state = a.pretrained_state()
    b = IALPAgent(replace(TINY, sim_preset="impatient"), ENV, seed=0, variant="ialp-ap")
    b.load_pretrained(state)
    for k, v in a.actor.state_dict().items():
        torch.testing.assert_close(b.policy.anchor.state_dict()[k], v)
    assert b.stage == 2 and b.online_iteration()["reward"] >= 0


def test_simulator_spec():
    assert simulator_spec(EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic", "reward": "rating",
                                                             "horizon": 4}), "popular") == \
        EnvSpec("fcpo/MovieLensSim-v0", {"dataset": "synthetic", "horizon": 4, "preset": "popular"})
    assert simulator_spec(SIM, "impatient").kwargs["preset"] == "impatient"
    with pytest.raises(ValueError, match="preset"):
        simulator_spec(SIM.with_options(preset="popular"), "noisy")


def test_config_validation():
    with pytest.raises(ValueError, match="preset"):  # checked by the simulator when the agent builds it
        IALPAgent(IALPConfig(sim_preset="nope"), ENV)
    with pytest.raises(ValueError, match="alpha_prime"):
        IALPConfig(alpha_prime=0.0)
    with pytest.raises(ValueError, match="oracle"):
        IALPConfig(oracle="gpt4")
    with pytest.raises(ValueError, match="n_preferred"):
        IALPConfig(n_preferred=50, oracle_candidates=50)
    with pytest.raises(ValueError, match="variant"):
        IALPAgent(TINY, ENV, variant="ialp-xx")


def test_fcpo_train_cli_run_folder(tmp_path):
    from fcpo.cli import train as train_cli

    argv = ["--agent", "ialp-ap", "--dataset", "synthetic", "--horizon", "4", "--iterations", "2", "--no-progress",
            "--run-dir", str(tmp_path), "--name", "ap", "--eval-protocol", "ranking"]
    for key, value in (("oracle_states", 64), ("pretrain_iterations", 1), ("pretrain_users", 16),
                       ("online_users", 16), ("reward_epochs", 2), ("ppo_epochs", 1), ("sim_preset", "popular")):
        argv += ["--set", f"{key}={value}"]
    assert train_cli.main(argv) == 0
    run = tmp_path / "ap"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [0, 1] and {"reward", "cost", "mix_weight"} <= set(log[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["agent"] == "ialp-ap" and metrics["test"]["protocol"] == "ranking"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 1 and ckpt["agent"]["stage"] == 2


@pytest.mark.parametrize("variant", ["ialp-ft", "ialp-ap"])
def test_per_slate_ialp_never_exceeds_the_cap(variant):
    """constraint="per-slate" (default) at α' = 0.4: online rollouts (capped Plackett-Luce over the actor's or
    the mixture's scores) and the deployed greedy policy hold at most ⌊0.4 · 5⌋ = 2 G0 items per slate."""
    from fcpo.evaluate import evaluate

    cfg = dataclasses.replace(TINY, alpha_prime=0.4, pretrain_iterations=1)
    agent = IALPAgent(cfg, ENV, variant=variant)
    assert agent.policy.deploy_mode == "greedy" and agent.policy.slate_cap == 2
    agent.train_iteration(0)
    batch = agent._collect(agent.sim_env, agent.policy, np.arange(agent.n_online))
    assert int(batch.slot_cost.sum(dim=1).max()) <= 2
    with torch.no_grad():  # the stored log-probs are those of the capped process
        scores = agent.policy.log_mixture(batch.obs) if variant == "ialp-ap" else item_logits(agent.actor, batch.obs)
        from fcpo.policies.capped import capped_plackett_luce_log_prob
        again = capped_plackett_luce_log_prob(scores, batch.items, 2, batch.popular_mask(),
                                              batch.exclude_mask(torch.arange(batch.size), agent.actor.n_items))
    torch.testing.assert_close(again, batch.log_prob, rtol=1e-5, atol=1e-4)
    report = evaluate(agent.policy, agent.env_spec, mode="sample", seeds=(0,))
    assert report["constraint"]["per_slate_ok"] and report["constraint"]["cap"] == 2
    expected = IALPAgent(dataclasses.replace(cfg, constraint="expected"), ENV, variant=variant)
    assert expected.policy.deploy_mode == "sample" and expected.actor.slate_cap is None
