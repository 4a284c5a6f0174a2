"""MovieLensSim-v0: spaces and layout, check_env, seeding, clicks / leaving / drift / cost semantics, vector env."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import fcpo  # noqa: F401  (registers the ids)
from fcpo.envs.registration import ENV_IDS
from fcpo.envs.simulator import SIM_PRESETS, MovieLensSimEnv, MovieLensSimVectorEnv, SimEnvConfig

ENV_ID = "fcpo/MovieLensSim-v0"
KW = dict(dataset="synthetic", embedding_dim=8)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fcpo-cache-sim"))


def _rollout(env, seed, steps=6, user=None):
    obs, info = env.reset(seed=seed, options=None if user is None else {"user": user})
    out = [obs.copy()]
    rng = np.random.default_rng(123)
    for _ in range(steps):
        free = np.flatnonzero(env.unwrapped.item_mask())
        action = rng.choice(free, env.unwrapped.config.slate_size, replace=False)
        obs, r, term, trunc, info = env.step(action)
        out += [obs.copy(), r, term, trunc, info["cost"], info["clicks"].tolist()]
        if term or trunc:
            break
    return out


def test_registered_with_the_replay_env_layout():
    assert ENV_ID in ENV_IDS and ENV_ID in gym.registry and gym.registry[ENV_ID].vector_entry_point
    env = gym.make(ENV_ID, **KW)
    data = env.unwrapped.env_data
    assert env.action_space == gym.spaces.MultiDiscrete([data.n_items] * 5)
    assert env.observation_space.shape == (5 * 8 + 8 + 1,) and env.observation_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs[:40].reshape(5, 8), data.item_embeddings[info["history"]])
    np.testing.assert_allclose(obs[40:48], data.user_embeddings[info["user"]])
    assert obs[-1] == 0.0
    assert info["history"].tolist() == data.split.train_initial[info["user_row"]].tolist()


@pytest.mark.parametrize("preset", list(SIM_PRESETS))
def test_check_env_passes(preset):
    env = gym.make(ENV_ID, preset=preset, **KW).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env, skip_render_check=False)


def test_deterministic_under_a_seed_and_seed_dependent():
    a = _rollout(gym.make(ENV_ID, preset="popular", **KW), seed=7)
    b = _rollout(gym.make(ENV_ID, preset="popular", **KW), seed=7)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    runs = {str(_rollout(gym.make(ENV_ID, preset="noisy", **KW), seed=s, user=0)) for s in range(6)}
    assert len(runs) > 1  # clicks are stochastic: different seeds, different sessions


def test_cost_is_the_replay_cost_and_repeats_are_never_clicked():
    env = gym.make(ENV_ID, **KW, click_temperature=0.05, rating_center=0.0, patience=0).unwrapped  # clicks ~ sure
    env.reset(seed=0, options={"user": 2})
    hist = env.core.history[0].copy()
    fresh = np.flatnonzero(env.item_mask())
    slate = np.array([hist[0], fresh[0], fresh[0], fresh[1], fresh[2]])
    _, reward, term, trunc, info = env.step(slate)
    assert info["clicks"].tolist() == [False, True, False, True, True] and reward == 3.0
    assert info["cost"] == float(env.grouping.is_popular[slate].sum()) and isinstance(info["cost"], float)
    assert info["costs"] == {"popular_exposure": info["cost"]}
    assert info["history"].tolist() == hist[3:].tolist() + [fresh[0], fresh[1], fresh[2]]  # FIFO of clicks
    assert not env.item_mask()[slate].any()
    _, reward, *_ = env.step(slate)
    assert reward == 0.0  # everything was shown before


def test_leave_model_and_patience_zero():
    env = gym.make(ENV_ID, **KW, rating_center=50.0, click_temperature=0.1, patience=3).unwrapped  # never clicks
    env.reset(seed=0)
    _, reward, term, trunc, info = env.step(np.flatnonzero(env.item_mask())[:5])
    assert term and not trunc and info["left"] and reward == 0.0  # 3 disliked items in a row: gone mid-slate
    env = gym.make(ENV_ID, **KW, rating_center=50.0, click_temperature=0.1, patience=0, horizon=4).unwrapped
    env.reset(seed=0)
    for t in range(4):
        _, _, term, trunc, _ = env.step(np.flatnonzero(env.item_mask())[:5])
        assert not term
    assert trunc


def test_clicks_reset_the_miss_counter():
    env = gym.make(ENV_ID, **KW, rating_center=-50.0, click_temperature=0.1, patience=1, drift_rate=0.0,
                   drift_noise=0.0, horizon=3).unwrapped  # always clicks fresh items
    env.reset(seed=0)
    for _ in range(3):
        _, reward, term, trunc, info = env.step(np.flatnonzero(env.item_mask())[:5])
        assert reward == 5.0 and not term and info["misses"] == 0
    assert trunc


def test_drift_moves_the_hidden_user_state_only_when_enabled():
    still = gym.make(ENV_ID, **KW, drift_rate=0.0, drift_noise=0.0).unwrapped
    still.reset(seed=0)
    still.step(np.flatnonzero(still.item_mask())[:5])
    np.testing.assert_array_equal(still.core.p, still.core.p0)
    moving = gym.make(ENV_ID, **KW, drift_rate=0.2, drift_noise=0.1).unwrapped
    moving.reset(seed=0)
    moving.step(np.flatnonzero(moving.item_mask())[:5])
    assert np.abs(moving.core.p - moving.core.p0).max() > 0


def test_completed_ratings_keep_observations_and_calibration_is_reported():
    sim = SimEnvConfig(**KW).load()
    users = np.arange(5)
    full = sim.completed_ratings(users)
    assert full.shape == (5, sim.env.n_items) and full.min() >= 1.0 and full.max() <= 5.0
    obs = sim.observed[users].tocoo()
    np.testing.assert_array_equal(full[obs.row, obs.col], obs.data)
    cal = sim.calibration
    assert cal["n_fit"] > 0 and np.isfinite([cal["rmse_calibrated"], cal["rmse_constant"], cal["b"]]).all()


def test_presets_differ_and_bad_options_fail_with_a_message():
    assert set(SIM_PRESETS) == {"noisy", "impatient", "popular"}
    probs = {}
    for preset in SIM_PRESETS:
        env = gym.make(ENV_ID, preset=preset, **KW).unwrapped
        env.reset(seed=0, options={"user": 1})
        slate = np.flatnonzero(env.item_mask())[:5][None]
        probs[preset] = env.core.click_probabilities(np.zeros(1, dtype=np.int64), slate)
    assert not np.allclose(probs["noisy"], probs["impatient"])
    with pytest.raises(ValueError, match="preset"):
        gym.make(ENV_ID, preset="nope", **KW)
    with pytest.raises(ValueError, match="patience"):
        gym.make(ENV_ID, patience=-1, **KW)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'reward'"):
        gym.make(ENV_ID, reward="hit", **KW)
    env = gym.make(ENV_ID, **KW)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, dtype=np.int64))


def test_vector_env_covers_users_and_is_seeded():
    def run(seed):
        env = MovieLensSimVectorEnv(cover_all_users=True, preset="impatient", **KW)
        obs, info = env.reset(seed=seed)
        assert obs.shape == (env.num_envs, 49) and (info["user_row"] == np.arange(env.num_envs)).all()
        rng = np.random.default_rng(0)
        total, lengths = np.zeros(env.num_envs), np.zeros(env.num_envs)
        done = np.zeros(env.num_envs, dtype=bool)
        for _ in range(10):
            keys = rng.random((env.num_envs, env.env_data.n_items))
            keys[~env.item_mask()] = -1
            obs, r, term, trunc, info = env.step(np.argsort(-keys, axis=1)[:, :5])
            total += r * ~done
            lengths += ~done
            assert np.all(r[done] == 0)
            done |= term | trunc
        assert done.all() and info["cost"].dtype == np.float64
        return total, lengths
    a, b = run(3), run(3)
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1] < 10).any()  # impatient users leave before the horizon


def test_make_vec_autoresets():
    env = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", preset="impatient", **KW)
    assert isinstance(env, MovieLensSimVectorEnv)
    env.reset(seed=0)
    ended = 0
    for _ in range(25):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        ended += int((term | trunc).sum())
    assert ended > 4  # episodes ended and were restarted


def test_single_and_vector_env_share_the_dynamics():
    single = MovieLensSimEnv(**KW, rating_center=-50.0, click_temperature=0.1, drift_rate=0.0, drift_noise=0.0)
    vec = MovieLensSimVectorEnv(num_envs=2, autoreset_mode="Disabled", **KW, rating_center=-50.0,
                                click_temperature=0.1, drift_rate=0.0, drift_noise=0.0)
    obs_s, _ = single.reset(seed=0, options={"user": 4})
    obs_v, _ = vec.reset(seed=0, options={"users": np.array([4, 4])})
    np.testing.assert_array_equal(obs_s, obs_v[0])
    slate = np.flatnonzero(single.item_mask())[:5]
    obs_s, r_s, *_ = single.step(slate)
    obs_v, r_v, *_ = vec.step(np.stack([slate, slate]))
    np.testing.assert_array_equal(obs_s, obs_v[1])
    assert r_s == r_v[0] == 5.0


def test_click_model_replaces_the_rating_logits_in_the_vector_env():
    calls = []

    def click_model(obs, history, slates):  # slot 0 always clicked, the others never
        calls.append((obs.shape, history.shape, slates.shape))
        logits = np.full(slates.shape, -50.0)
        logits[:, 0] = 50.0
        return logits

    env = MovieLensSimVectorEnv(num_envs=3, autoreset_mode="Disabled", click_model=click_model, patience=0,
                                drift_rate=0.0, drift_noise=0.0, **KW)
    obs, _ = env.reset(seed=0)
    slates = np.argsort(~env.item_mask(), axis=1, kind="stable")[:, :5]  # fresh items
    _, reward, _, _, info = env.step(slates)
    assert calls == [((3, 49), (3, 5), (3, 5))]
    assert reward.tolist() == [1.0, 1.0, 1.0] and info["clicks"][:, 0].all() and not info["clicks"][:, 1:].any()
    assert env.core.base is None  # no completed ratings are built when a click model answers
    with pytest.raises(TypeError, match="click_model must be callable"):
        MovieLensSimVectorEnv(num_envs=2, click_model=3, **KW)
