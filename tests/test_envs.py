"""MovieLensFair-v0: semantics on hand-checked cases, conformance, vector env equivalence, bad input."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fcpo  # noqa: F401  (registers the ids)
from fcpo.envs import MovieLensFairEnv, MovieLensFairVectorEnv, SafetyStepWrapper

ENV_ID = "fcpo/MovieLensFair-v0"
KW = dict(dataset="synthetic", embedding_dim=8)


def _targets(env, mode="train"):
    core = env.unwrapped.core
    return core.split.targets(mode).row(int(core.rows[0]))


def test_registered_and_spaces():
    env = gym.make(ENV_ID, **KW)
    assert ENV_ID in gym.registry and gym.registry[ENV_ID].vector_entry_point is not None
    n_items = env.unwrapped.env_data.n_items
    assert env.action_space == gym.spaces.MultiDiscrete([n_items] * 5)
    assert env.observation_space.shape == (5 * 8 + 8 + 1,) and env.observation_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    core = env.unwrapped.core
    emb = env.unwrapped.env_data.item_embeddings
    # layout: history embeddings | user embedding | t/T
    np.testing.assert_allclose(obs[:40].reshape(5, 8), emb[info["history"]])
    np.testing.assert_allclose(obs[40:48], env.unwrapped.env_data.user_embeddings[info["user"]])
    assert obs[-1] == 0.0
    assert info["history"].tolist() == core.split.train_initial[info["user_row"]].tolist()


def test_hit_reward_cost_history_and_repeats():
    env = gym.make(ENV_ID, **KW).unwrapped
    env.reset(seed=1, options={"user": 3})
    targets = _targets(env)
    hist0 = env.core.history[0].tolist()
    popular = env.grouping.is_popular
    non_target = [i for i in np.flatnonzero(env.item_mask()) if i not in set(targets)]
    slate = np.array([targets[0], non_target[0], targets[1], targets[0], non_target[1]])
    _, reward, term, trunc, info = env.step(slate)
    # two distinct held-out positives; the repeated target pays once
    assert reward == 2.0 and info["hits"].tolist() == [True, False, True, False, False]
    assert info["cost"] == float(popular[slate].sum()) and info["costs"] == {"popular_exposure": info["cost"]}
    assert isinstance(info["cost"], float)
    # FIFO: the two hits enter the window in slate order
    assert info["history"].tolist() == hist0[2:] + [targets[0], targets[1]]
    assert not env.item_mask()[slate].any()
    _, reward, *_ = env.step(slate)  # everything already recommended: no reward
    assert reward == 0.0
    assert info["remaining_positives"] == len(targets) - 2


def test_terminates_when_positives_run_out_and_truncates_at_horizon():
    env = gym.make(ENV_ID, **KW, slate_size=2, horizon=50).unwrapped
    env.reset(seed=0, options={"user": 0})
    targets = list(_targets(env))
    filler = [i for i in np.flatnonzero(env.item_mask()) if i not in set(targets)]
    pairs = [targets[i:i + 2] for i in range(0, len(targets), 2)]
    for j, pair in enumerate(pairs):
        pair = pair + filler[j:j + 1] if len(pair) == 1 else pair
        _, _, term, trunc, _ = env.step(np.array(pair))
    assert term and not trunc
    env = gym.make(ENV_ID, **KW, horizon=3).unwrapped
    env.reset(seed=0)
    flags = [env.step(np.arange(5) + 5 * t)[2:4] for t in range(3)]
    assert flags[-1] == (False, True) and flags[0] == (False, False)


def test_rating_reward_matches_hand_computation():
    env = gym.make(ENV_ID, **KW, reward="rating", rating_alpha=0.5, slate_size=3).unwrapped
    env.reset(seed=0, options={"user": 2})
    ratings = env.core.rating_rows[0]
    shown = env.core.shown[0]
    rated = [i for i in np.flatnonzero(ratings) if not shown[i]]
    hi = [i for i in rated if ratings[i] >= 4][:2]
    lo = [i for i in rated if ratings[i] <= 2][:1]
    unrated = [i for i in np.flatnonzero(ratings == 0) if not shown[i]][:1]
    if len(hi) < 2 or not lo:
        pytest.skip("user lacks the ratings this hand-check needs")
    _, reward, *_ = env.step(np.array([hi[0], hi[1], lo[0]]))
    m = lambda r: (r - 3) / 2  # noqa: E731
    expected = (m(ratings[hi[0]]) + 0.5 * 1) + (m(ratings[hi[1]]) + 0.5 * 2) + (m(ratings[lo[0]]) - 0.5 * 1)
    assert reward == pytest.approx(expected)
    _, reward, *_ = env.step(np.array([unrated[0], hi[0], hi[1]]))  # unrated 0, repeats pay 0, streaks reset
    assert reward == 0.0


def test_test_mode_uses_test_targets_and_initial_state():
    env = gym.make(ENV_ID, **KW, mode="test").unwrapped
    _, info = env.reset(seed=0, options={"user": 5})
    split = env.core.split
    assert info["history"].tolist() == split.test_initial[5].tolist()
    assert info["remaining_positives"] == len(split.test_targets.row(5))


def test_render_ansi_marks_hits_and_popular():
    env = gym.make(ENV_ID, **KW, render_mode="ansi").unwrapped
    env.reset(seed=0, options={"user": 1})
    t = _targets(env)
    pop = np.flatnonzero(env.grouping.is_popular & env.item_mask() & ~np.isin(np.arange(env.core.n_items), t))
    env.step(np.array([t[0], pop[0], pop[1], pop[2], pop[3]]))
    text = env.render()
    assert text.splitlines()[1].startswith(" 1. [HIT]") and "[G0]" in text.splitlines()[2]
    assert env.env_data.data.item_titles[t[0]] in text


def test_conformance_gymnasium_and_sb3_no_warnings():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(ENV_ID, **KW).unwrapped)
        sb3_check_env(gym.make(ENV_ID, **KW))


def test_sb3_ppo_trains_on_the_env():
    from stable_baselines3 import PPO

    env = gym.make(ENV_ID, **KW)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, verbose=0, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)


def test_safety_wrapper_six_tuple():
    env = SafetyStepWrapper(gym.make(ENV_ID, **KW))
    env.reset(seed=0)
    out = env.step(env.action_space.sample())
    assert len(out) == 6 and out[2] == out[5]["cost"]
    named = SafetyStepWrapper(gym.make(ENV_ID, **KW), cost_name="popular_exposure")
    named.reset(seed=0)
    assert named.step(np.arange(5))[2] == float(named.unwrapped.grouping.is_popular[np.arange(5)].sum())
    wrong = SafetyStepWrapper(gym.make(ENV_ID, **KW), cost_name="nope")
    wrong.reset(seed=0)
    with pytest.raises(KeyError, match="nope"):
        wrong.step(np.arange(5))


@pytest.mark.parametrize("reward,grouping", [("hit", "static"), ("rating", "static")])
def test_vector_env_equals_sync_vector_env(reward, grouping):
    kw = dict(KW, reward=reward, grouping=grouping, horizon=4)
    native = gym.make_vec(ENV_ID, num_envs=5, vectorization_mode="vector_entry_point", **kw)
    sync = gym.make_vec(ENV_ID, num_envs=5, vectorization_mode="sync", **kw)
    assert isinstance(native, MovieLensFairVectorEnv)
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"]
    o1, i1 = native.reset(seed=11)
    o2, i2 = sync.reset(seed=11)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(i1["user"], i2["user"])
    rng = np.random.default_rng(0)
    total_hits = 0
    for _ in range(30):
        a = rng.integers(0, native.core.n_items, (5, 5))
        for e in range(5):  # put one target in each slate so rewards are not all zero
            row = native.core.split.targets("train").row(int(native.core.rows[e]))
            a[e, 0] = row[rng.integers(len(row))]
        r1, r2 = native.step(a), sync.step(a)
        for x, y in zip(r1[:4], r2[:4]):
            np.testing.assert_allclose(x, y)
        if "cost" in r2[4]:
            np.testing.assert_allclose(r1[4]["cost"][r2[4]["_cost"]], r2[4]["cost"][r2[4]["_cost"]])
        total_hits += (r1[1] > 0).sum()
    assert total_hits > 10


def test_vector_env_covers_all_users_once():
    v = MovieLensFairVectorEnv(cover_all_users=True, **KW, horizon=3)
    obs, info = v.reset(seed=0)
    assert v.num_envs == v.n_users and sorted(info["user_row"].tolist()) == list(range(v.n_users))
    done = np.zeros(v.num_envs, bool)
    for _ in range(5):  # past the horizon: finished episodes stay finished, pay nothing
        _, r, te, tr, info = v.step(np.tile(np.arange(5), (v.num_envs, 1)))
        assert (r[done] == 0).all() and (info["cost"][done] == 0).all()
        done |= te | tr
    assert done.all()


def test_dynamic_grouping_moves_items_into_g0():
    v = MovieLensFairVectorEnv(num_envs=50, **KW, grouping="dynamic", regroup_every=1)
    v.reset(seed=0)
    tail = np.flatnonzero(~v.grouping.is_popular)[:5]
    for _ in range(3):
        v.step(np.tile(tail, (50, 1)))
    assert v.grouping.is_popular[tail].all()
    _, _, _, _, info = v.step(np.tile(tail, (50, 1)))
    assert (info["cost"][info["_cost"]] == 5).all()


@pytest.mark.parametrize("action,msg", [
    (np.arange(4), r"shape \(5,\)"),
    (np.array([0, 1, 2, 3, 10**6]), "out of range"),
    (np.array([0.5, 1, 2, 3, 4]), "integer"),
    (np.array([-1, 1, 2, 3, 4]), "out of range"),
])
def test_invalid_actions(action, msg):
    env = gym.make(ENV_ID, **KW).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=msg):
        env.step(action)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(dataset="netflix"), "unknown dataset"),
    (dict(train_ratio=1.2), "train_ratio"),
    (dict(slate_size=10**6), "exceeds the number of items"),
    (dict(reward="clicks"), "reward must be"),
    (dict(mode="valid"), "mode must be"),
    (dict(popular_ratio=0.0), "popular_ratio"),
    (dict(grouping="weekly"), "grouping must be"),
])
def test_bad_construction(kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        gym.make(ENV_ID, **{**KW, **kwargs})


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'slate'"):
        MovieLensFairEnv(dataset="synthetic", slate=3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), k=st.integers(1, 6), target_share=st.floats(0.0, 1.0))
def test_vector_step_matches_a_per_user_reference(seed, k, target_share):
    """Hits, rewards, FIFO history, shown mask and observation against a plain per-user loop."""
    env = MovieLensFairVectorEnv(num_envs=6, autoreset_mode="Disabled", **KW, slate_size=k, horizon=4)
    env.reset(seed=seed)
    core, rng = env.core, np.random.default_rng(seed)
    n_hist = env.n_history
    history = [list(h) for h in env.history]
    shown = [set(h) for h in env.history]
    remaining = [set(core.split.targets("train").row(int(r))) for r in env.user_rows]
    emb, uemb = env.env_data.item_embeddings, env.env_data.user_embeddings
    done, steps = [False] * 6, [0] * 6
    for t in range(4):
        slates = rng.integers(0, env.n_items, (6, k))
        for e in range(6):  # some slots hold targets (sometimes repeated) so that hits happen
            pool = sorted(remaining[e])
            for j in range(k):
                if pool and rng.random() < target_share:
                    slates[e, j] = pool[rng.integers(len(pool))]
        _, reward, term, _, info = env.step(slates)
        for e in range(6):
            if done[e]:  # a finished episode is frozen (autoreset disabled)
                assert reward[e] == 0 and term[e]
                continue
            steps[e] += 1
            hits = []
            for j, item in enumerate(slates[e]):
                fresh = item not in shown[e] and item not in slates[e, :j]
                hits.append(fresh and item in remaining[e])
            for j, item in enumerate(slates[e]):
                if hits[j]:
                    remaining[e].discard(item)
                    history[e] = (history[e] + [int(item)])[-n_hist:]
            shown[e] |= set(slates[e].tolist())
            assert reward[e] == sum(hits) and info["hits"][e].tolist() == hits
            assert env.history[e].tolist() == history[e]
            assert set(np.flatnonzero(~env.item_mask()[e])) == shown[e]
            done[e] = not remaining[e]
            assert term[e] == done[e]
        obs = env.core.observe()
        np.testing.assert_array_equal(obs[:, :n_hist * 8], emb[env.history].reshape(6, -1))
        np.testing.assert_array_equal(obs[:, n_hist * 8:-1], uemb[core.split.user_ids[env.user_rows]])
        np.testing.assert_allclose(obs[:, -1], np.array(steps) / 4)
