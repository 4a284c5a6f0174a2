"""The rollout math FCPO stands on: GAE(λ), per-slot credit, discounted sums (hand-checked cases and
brute-force loops on random ones), the shown-items mask, and ``collect`` / ``run_slate_episodes`` on a
tiny env against a hand-written step loop, on both registered envs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.agents.rollout import collect, discounted_sum, gae, run_slate_episodes, slot_advantages
from fcpo.envs import EnvSpec
from fcpo.policies.base import SlateState, masked_topk, shown_mask

ENV_IDS = ("fcpo/MovieLensFair-v0", "fcpo/MovieLensSim-v0")
TINY = {"dataset": "synthetic", "horizon": 3, "embedding_dim": 8}


# ------------------------------------------------------------------------------------ brute force
def gae_brute(rewards, values, alive, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l} over the live run starting at t, δ_t = r_t + γ V_{t+1}[t+1 live] − V_t."""
    t_max, e = rewards.shape
    adv = np.zeros_like(rewards)
    for j in range(e):
        for t in range(t_max):
            if not alive[t, j]:
                continue
            total, l = 0.0, 0
            while t + l < t_max and alive[t + l, j]:
                s = t + l
                nxt = values[s + 1, j] if s + 1 < t_max and alive[s + 1, j] else 0.0
                total += (gamma * lam) ** l * (rewards[s, j] + gamma * nxt - values[s, j])
                l += 1
            adv[t, j] = total
    return adv


def prefix_alive(lengths, t_max):
    return np.arange(t_max)[:, None] < np.asarray(lengths)[None, :]


# ------------------------------------------------------------------------------------ gae
def test_gae_hand_checked():
    r = np.array([[1.0], [2.0]])
    v = np.array([[0.5], [1.0]])
    adv, ret = gae(r, v, np.ones((2, 1), bool), gamma=0.5, lam=0.5)
    # δ_1 = 2 − 1 = 1 (no bootstrap after T); δ_0 = 1 + 0.5·1 − 0.5 = 1; A_0 = 1 + 0.25·1
    np.testing.assert_allclose(adv[:, 0], [1.25, 1.0])
    np.testing.assert_allclose(ret[:, 0], [1.75, 2.0])
    # a finished episode: nothing after its last live step counts, dead steps get 0
    adv, _ = gae(np.array([[1.0], [5.0]]), np.array([[0.0], [9.0]]), np.array([[True], [False]]), 0.9, 0.9)
    np.testing.assert_allclose(adv[:, 0], [1.0, 0.0])


@settings(max_examples=60, deadline=None)
@given(t_max=st.integers(1, 6), e=st.integers(1, 4), gamma=st.floats(0.0, 1.0), lam=st.floats(0.0, 1.0),
       seed=st.integers(0, 2 ** 31 - 1))
def test_gae_matches_brute_force(t_max, e, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    r, v = rng.normal(size=(t_max, e)), rng.normal(size=(t_max, e))
    alive = prefix_alive(rng.integers(0, t_max + 1, e), t_max)
    adv, ret = gae(r, v, alive, gamma, lam)
    np.testing.assert_allclose(adv, gae_brute(r, v, alive, gamma, lam), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret, adv + v)
    if lam == 1.0:  # GAE(1) = Monte-Carlo return − V
        mc = np.array([[sum(gamma ** (s - t) * r[s, j] for s in range(t, t_max) if alive[s, j])
                        for j in range(e)] for t in range(t_max)])
        np.testing.assert_allclose(adv[alive], (mc - v)[alive], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------ slot credit, sums
def test_slot_advantages_hand_checked():
    got = slot_advantages(torch.tensor([3.0]), torch.tensor([[1.0, 0.0, 0.0]]))
    # x_j − Σx / K + A / K = [1 − 1/3 + 1, −1/3 + 1, −1/3 + 1]
    torch.testing.assert_close(got, torch.tensor([[5 / 3, 2 / 3, 2 / 3]]))


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 2 ** 31 - 1))
def test_slot_advantages_brute_force(b, k, seed):
    g = torch.Generator().manual_seed(seed)
    adv, x = torch.randn(b, generator=g, dtype=torch.float64), torch.randn(b, k, generator=g, dtype=torch.float64)
    got = slot_advantages(adv, x)
    ref = torch.tensor([[x[i, j].item() - sum(x[i].tolist()) / k + adv[i].item() / k for j in range(k)]
                        for i in range(b)], dtype=torch.float64)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got.sum(dim=1), adv)  # the slots add back to the step advantage


def test_discounted_sum_hand_checked_and_brute_force():
    got = discounted_sum(np.array([[1.0], [2.0], [3.0]]), np.array([[True], [True], [False]]), 0.5)
    np.testing.assert_allclose(got, [1.0 + 0.5 * 2.0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        t_max, e = rng.integers(1, 7), rng.integers(1, 5)
        x, gamma = rng.normal(size=(t_max, e)), float(rng.random())
        alive = prefix_alive(rng.integers(0, t_max + 1, e), t_max)
        ref = [sum(gamma ** t * x[t, j] for t in range(t_max) if alive[t, j]) for j in range(e)]
        np.testing.assert_allclose(discounted_sum(x, alive, gamma), ref, rtol=1e-12, atol=1e-12)


def test_shown_mask():
    got = shown_mask(torch.tensor([[2, -1, 0], [-1, -1, -1]]), 4)
    assert got.tolist() == [[True, False, True, False], [False, False, False, False]]


# ------------------------------------------------------------------------------------ collect vs a manual loop
class ZeroCritic(torch.nn.Module):
    def forward(self, obs):
        return torch.zeros(obs.shape[0])


def scored_slates(obs: torch.Tensor, exclude: torch.Tensor, k: int, n_items: int) -> torch.Tensor:
    """A deterministic policy: a fixed pseudo-random score per (observation, item), exclusion honoured."""
    w = torch.sin(torch.arange(obs.shape[1] * n_items, dtype=torch.float32).reshape(obs.shape[1], n_items))
    return masked_topk(obs @ w, k, exclude)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("FCPO_CACHE_DIR", str(tmp_path_factory.mktemp("fcpo_cache")))
    mp.delenv("FCPO_DATA_DIR", raising=False)
    yield
    mp.undo()


@pytest.mark.usefixtures("synthetic")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_collect_equals_a_manual_step_loop(env_id):
    spec = EnvSpec(env_id, TINY)
    env_a, env_b = spec.make_vector(8), spec.make_vector(8)
    env_a.reset(seed=5)  # same generator state in both (the simulator draws clicks from it)
    env_b.reset(seed=5)
    users = np.arange(3, 11)
    k, n_items, n_hist, horizon = env_a.slate_size, env_a.n_items, env_a.n_history, env_a.horizon

    def sample(obs, exclude):
        items = scored_slates(obs, exclude, k, n_items)
        return items, items.float(), torch.zeros(items.shape[0])

    batch = collect(env_a, None, ZeroCritic(), ZeroCritic(), users, torch.device("cpu"), 0.9, 0.95, 0.8, 0.9, 0.4,
                    sample_fn=sample)

    # the same episodes by hand
    obs, _ = env_b.reset(options={"users": users})
    rows = {key: [] for key in ("obs", "items", "reward", "cost", "exclude", "slot_cost")}
    rew, cst, alive = np.zeros((horizon, 8)), np.zeros((horizon, 8)), np.zeros((horizon, 8), bool)
    done = np.zeros(8, bool)
    for t in range(horizon):
        alive[t] = ~done
        exclude = ~env_b.item_mask()
        items = scored_slates(torch.as_tensor(obs), torch.as_tensor(exclude), k, n_items).numpy()
        popular = env_b.is_popular[items]
        obs_next, r, term, trunc, info = env_b.step(items)
        for e in np.flatnonzero(alive[t]):
            rows["obs"].append(obs[e])
            rows["items"].append(items[e])
            rows["reward"].append(r[e])
            rows["cost"].append(info["cost"][e])
            rows["exclude"].append(exclude[e])
            rows["slot_cost"].append(popular[e])
        rew[t], cst[t] = r, info["cost"]
        obs, done = obs_next, done | term | trunc
        if done.all():
            break
    # the batch is time-major: all live users of step 0, then step 1, ...
    np.testing.assert_array_equal(batch.obs.numpy(), np.array(rows["obs"]))
    np.testing.assert_array_equal(batch.items.numpy(), np.array(rows["items"]))
    np.testing.assert_allclose(batch.reward.numpy(), rows["reward"])
    np.testing.assert_allclose(batch.cost.numpy(), rows["cost"])
    np.testing.assert_array_equal(batch.slot_cost.numpy(), np.array(rows["slot_cost"], dtype=np.float32))
    np.testing.assert_array_equal(batch.exclude_mask(torch.arange(batch.size), n_items).numpy(),
                                  np.array(rows["exclude"]))
    np.testing.assert_allclose(batch.ep_reward, (rew * alive).sum(0))
    np.testing.assert_allclose(batch.ep_cost, (cst * alive).sum(0))
    np.testing.assert_array_equal(batch.ep_length, alive.sum(0))
    assert batch.n_episodes == 8 and batch.size == int(alive.sum())
    # with V = 0, GAE(λ_c) advantages are the λ-discounted cost-to-go; the limit is α'K per live step
    adv_c = gae_brute(cst, np.zeros_like(cst), alive, 0.8, 0.9)
    np.testing.assert_allclose(batch.adv_c.numpy(), adv_c[alive], rtol=1e-6)
    np.testing.assert_allclose(batch.ep_disc_limit, discounted_sum(np.full_like(cst, 0.4 * k), alive, 0.8))


@pytest.mark.usefixtures("synthetic")
def test_run_slate_episodes_state_and_extra_exclusion():
    env = EnvSpec("fcpo/MovieLensFair-v0", TINY).make_vector(4)
    extra = torch.zeros(4, env.n_items, dtype=torch.bool)
    extra[:, :3] = True
    seen = []

    def act(state: SlateState, exclude, t):
        assert bool(exclude[:, :3].all())  # the extra exclusion is applied
        assert torch.equal(state.history, torch.as_tensor(env.history))  # the state of this step
        return masked_topk(torch.zeros(4, env.n_items), env.slate_size, exclude)

    steps = run_slate_episodes(env, np.array([0, 1, 2, 3]), act, steps=2, extra_exclude=extra, until_done=False,
                               on_step=lambda s: seen.append((s.t, s.slate.clone(), s.state.history.clone())))
    assert steps == 2 and [t for t, _, _ in seen] == [0, 1]
    # the recorded state is the one the slate was chosen in (the initial history), not the env's after the step
    fresh = EnvSpec("fcpo/MovieLensFair-v0", TINY).make_vector(4)
    fresh.reset(options={"users": np.array([0, 1, 2, 3])})
    assert torch.equal(seen[0][2], torch.as_tensor(fresh.history))
    assert set(seen[0][1].flatten().tolist()).isdisjoint({0, 1, 2})


# ------------------------------------------------------------------------------------ the evaluator's loop
@pytest.mark.usefixtures("synthetic")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_evaluate_rollout_equals_a_manual_loop(env_id):
    from fcpo.evaluate import evaluate
    from fcpo.policies.rankers import PopularityRanker

    spec = EnvSpec(env_id, TINY)
    env = spec.make_vector(cover_all_users=True, mode="test", slate_size=3, horizon=2)
    policy = PopularityRanker(env.env_data.train_counts)
    report = evaluate(policy, spec, protocol="rollout", k=3, steps=2, split="test")
    assert (report["env"], report["dataset"], report["k"], report["steps"]) == (env_id, "synthetic", 3, 2)
    assert report["users"] == env.n_users
    rows = np.arange(env.n_users)
    obs, _ = env.reset(seed=0, options={"users": rows})
    train = env.env_data.split.train_items().to_mask(env.n_items, rows)
    recs = []
    for _ in range(2):  # by hand: training items and earlier recommendations excluded
        exclude = torch.as_tensor(train | ~env.item_mask())
        items = policy.act(SlateState.from_numpy(obs, env.history, env.user_rows), 3, exclude=exclude).numpy()
        assert not (train[rows[:, None], items]).any()
        recs.append(items)
        obs, *_ = env.step(items)
    rec = np.concatenate(recs, axis=1)
    assert report["exposure_counts"] == np.bincount(rec.ravel(), minlength=env.n_items).tolist()
    assert all(len(set(r)) == 6 for r in rec.tolist())  # no item twice for a user over the rollout
    ranking = evaluate(policy, spec, protocol="ranking", k=3)
    assert ranking["steps"] == 1 and 0.0 <= ranking["metrics"]["precision@3"] <= 1.0
