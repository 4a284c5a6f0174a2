"""Every registered ``fcpo/`` env id through the same contract: spaces, checkers, contract attributes,
info keys and dtypes, the three autoreset modes against ``SyncVectorEnv``, max_episode_steps, reset
options and the error cases."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fcpo  # noqa: F401  (registers the ids)
from fcpo.envs import EnvSpec, SlateVectorEnv
from fcpo.envs.registration import register_envs

register_envs()
ENV_IDS = sorted(i for i in gym.registry if i.startswith("fcpo/"))
KW = dict(dataset="synthetic", embedding_dim=8)
#: options that make episodes end early, so that autoreset is exercised within a few steps
SHORT = {"fcpo/MovieLensFair-v0": dict(horizon=3),
         "fcpo/MovieLensSim-v0": dict(horizon=4, patience=3, rating_center=3.0)}
STATE_KEYS = {"user", "user_row", "history", "history_raw_ids", "group_sizes", "action_mask"}
STEP_KEYS = {"cost", "costs", "hits", "slot_rewards"}


def test_both_envs_are_registered():
    assert {"fcpo/MovieLensFair-v0", "fcpo/MovieLensSim-v0"} <= set(ENV_IDS)


def _slates(env, rng, n=None):
    """Valid slates of fresh items, with one still-paying target per slate for the replay env."""
    core = env.core
    mask = core.item_mask()
    keys = rng.random(mask.shape)
    keys[~mask] = -1
    slates = np.argsort(-keys, axis=1)[:, :core.k]
    if hasattr(core, "remaining"):
        for e in range(core.num_envs):
            left = np.flatnonzero(core.remaining[e] & mask[e])
            if len(left):
                slates[e, 0] = left[rng.integers(len(left))]
                slates[e, 1:] = [i for i in slates[e] if i != slates[e, 0]][:core.k - 1] \
                    if slates[e, 0] in slates[e, 1:] else slates[e, 1:]
    return slates


def _assert_info_equal(a: dict, b: dict, where: str = "info"):
    """Same keys, same masks, same dtypes and same values under the masks (Gymnasium's vector infos)."""
    assert set(a) == set(b), f"{where}: keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        if key.startswith("_"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{where}[{key!r}]")
            continue
        mask = a["_" + key]
        if isinstance(a[key], dict):
            _assert_info_equal(a[key], b[key], f"{where}[{key!r}]")
        elif key == "final_obs":
            for i in np.flatnonzero(mask):
                np.testing.assert_array_equal(a[key][i], b[key][i], err_msg=f"{where}[final_obs][{i}]")
        else:
            assert a[key].dtype == b[key].dtype, f"{where}[{key!r}]: {a[key].dtype} != {b[key].dtype}"
            np.testing.assert_array_equal(a[key][mask], b[key][mask], err_msg=f"{where}[{key!r}]")


def _leaves(info: dict):
    for key, value in info.items():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield key, value


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_and_contract_attributes(env_id):
    env = gym.make(env_id, **KW)
    single = env.unwrapped
    n_items = single.env_data.n_items
    assert env.action_space == gym.spaces.MultiDiscrete([n_items] * 5)
    assert env.observation_space.shape == (5 * 8 + 8 + 1,) and env.observation_space.dtype == np.float32
    vec = EnvSpec(env_id, KW).make_vector(4, autoreset_mode="NextStep")
    assert isinstance(vec, SlateVectorEnv) and vec.num_envs == 4
    for e in (single, vec):
        assert (e.slate_size, e.horizon, e.n_items, e.n_history) == (5, 10, n_items, 5)
        assert e.n_users == e.env_data.split.n_episode_users
        assert e.is_popular.dtype == bool and e.is_popular.shape == (n_items,)
        assert e.is_popular.sum() == round(0.2 * n_items) or e.is_popular.any()
    vec.reset(seed=0)
    assert vec.history.shape == (4, 5) and vec.history.dtype == np.int64
    assert vec.user_rows.shape == (4,) and vec.user_rows.dtype == np.int64
    slates = _slates(vec, np.random.default_rng(0))
    vec.step(slates)
    items = vec.item_mask()
    assert items.shape == (4, n_items) and items.dtype == bool
    assert not items[np.arange(4)[:, None], slates].any()  # shown items can no longer pay
    assert not items[np.arange(4)[:, None], vec.history].any()
    masks = vec.action_masks()
    assert masks.shape == (4, 5 * n_items)
    np.testing.assert_array_equal(masks.reshape(4, 5, n_items), np.repeat(items[:, None], 5, axis=1))
    assert not vec.episodes_done().any()
    single.reset(seed=0)
    single.step(np.arange(5))
    assert single.item_mask().shape == (n_items,) and not single.item_mask()[:5].any()
    np.testing.assert_array_equal(single.action_masks(), np.tile(single.item_mask(), 5))
    assert single.history.shape == (5,) and single.user_rows.shape == (1,)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, **KW).unwrapped, skip_render_check=False)
        sb3_check_env(gym.make(env_id, **KW))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_info_keys_and_numpy_dtypes(env_id):
    env = gym.make(env_id, **KW).unwrapped
    _, info = env.reset(seed=3)
    assert STATE_KEYS <= set(info) and not STEP_KEYS & set(info)
    state_keys = set(info)
    _, reward, term, trunc, info = env.step(np.arange(5))
    assert set(info) >= state_keys | STEP_KEYS
    assert type(info["cost"]) is np.float64 and type(info["costs"]["popular_exposure"]) is np.float64
    assert info["cost"] == env.is_popular[np.arange(5)].sum()
    assert type(info["user"]) is np.int64 and type(info["user_row"]) is np.int64
    assert info["action_mask"].shape == (env.n_items,) and info["action_mask"].dtype == bool
    assert info["hits"].dtype == bool and info["slot_rewards"].dtype == np.float64
    assert reward == info["slot_rewards"].sum()
    np.testing.assert_array_equal(info["history_raw_ids"], env.env_data.data.item_raw_ids[info["history"]])
    for key, value in _leaves(info):
        # numbers are NumPy scalars or arrays; only flags may be Python bools
        assert isinstance(value, (np.ndarray, np.generic, bool)), f"info[{key!r}] is {type(value).__name__}"
        assert type(value) not in (int, float), f"info[{key!r}] is a Python {type(value).__name__}"


def _pair(env_id, mode, num_envs=4, **extra):
    kw = {**KW, **SHORT[env_id], **extra}
    native = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                          **kw)
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode(mode)}, **kw)
    return native, sync


@pytest.mark.parametrize("mode", ["NextStep", "SameStep", "Disabled"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_autoreset_mode_equals_sync_vector_env(env_id, mode):
    native, sync = _pair(env_id, mode)
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == AutoresetMode(mode)
    o1, i1 = native.reset(seed=11)
    o2, i2 = sync.reset(seed=11)
    np.testing.assert_array_equal(o1, o2)
    _assert_info_equal(i1, i2, "reset info")
    rng = np.random.default_rng(0)
    ended = reward_steps = 0
    for t in range(14):
        if mode == "Disabled" and native.episodes_done().any():  # Gymnasium's way: reset the finished ones
            mask = native.episodes_done()
            o1, i1 = native.reset(options={"reset_mask": mask})
            o2, i2 = sync.reset(options={"reset_mask": mask.copy()})
            np.testing.assert_array_equal(o1, o2)
            _assert_info_equal(i1, i2, f"reset_mask info at {t}")
        a = _slates(native, rng)
        r1, r2 = native.step(a), sync.step(a)
        for name, x, y in zip(("obs", "reward", "terminated", "truncated"), r1[:4], r2[:4]):
            np.testing.assert_array_equal(x, y, err_msg=f"{name} at step {t}")
        _assert_info_equal(r1[4], r2[4], f"step {t} info")
        ended += int((r1[2] | r1[3]).sum())
        reward_steps += int((r1[1] > 0).sum())
    assert ended >= 4 and reward_steps >= 4  # the modes were exercised, rewards were not all zero
    if mode == "SameStep":
        assert not native.episodes_done().any()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_disabled_mode_freezes_finished_sub_envs(env_id):
    vec = EnvSpec(env_id, KW).make_vector(3, autoreset_mode="Disabled", horizon=2)
    vec.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(2):
        obs, reward, term, trunc, info = vec.step(_slates(vec, rng))
    assert vec.episodes_done().all()
    before = (obs.copy(), vec.history.copy(), vec.item_mask().copy())
    obs, reward, term2, trunc2, info = vec.step(_slates(vec, rng))
    # frozen: nothing moves, nothing pays, the ending flags are repeated, the step keys are unset
    np.testing.assert_array_equal(obs, before[0])
    np.testing.assert_array_equal(vec.history, before[1])
    np.testing.assert_array_equal(vec.item_mask(), before[2])
    assert (reward == 0).all() and (info["cost"] == 0).all() and not info["_cost"].any()
    np.testing.assert_array_equal(term2, term)
    np.testing.assert_array_equal(trunc2, trunc)
    np.testing.assert_array_equal(term2 | trunc2, vec.episodes_done())
    assert info["_user"].all()  # the state keys describe every sub-env


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_max_episode_steps_truncates_both_envs(env_id):
    kw = {**KW, "horizon": 5}
    single = gym.make(env_id, max_episode_steps=2, **kw)
    single.reset(seed=0)
    flags = [single.step(np.arange(5) + 5 * t)[2:4] for t in range(2)]
    assert flags[0] == (False, False) and flags[1][1]
    never_leave = {"patience": 0} if "Sim" in env_id else {}
    native, sync = _pair(env_id, "NextStep", max_episode_steps=2, horizon=5, **never_leave)
    assert native.core.time_limit == 2 and native.horizon == 5
    np.testing.assert_array_equal(native.reset(seed=4)[0], sync.reset(seed=4)[0])
    rng = np.random.default_rng(2)
    for t in range(5):
        a = _slates(native, rng)
        r1, r2 = native.step(a), sync.step(a)
        for x, y in zip(r1[:4], r2[:4]):
            np.testing.assert_array_equal(x, y)
        _assert_info_equal(r1[4], r2[4], f"step {t}")
        if t == 1:
            assert (r1[2] | r1[3]).all()  # everyone ends at min(T, max_episode_steps) = 2
    vec = EnvSpec(env_id, KW).make_vector(2, autoreset_mode="Disabled", max_episode_steps=3, horizon=10)
    vec.reset(seed=0)
    for t in range(3):
        _, _, term, trunc, _ = vec.step(_slates(vec, rng))
    assert (term | trunc).all() and vec.episodes_done().all()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_single_env_reset_options(env_id):
    env = gym.make(env_id, **KW).unwrapped
    _, info = env.reset(seed=0, options={"user": 3})
    assert info["user_row"] == 3 and env.user_rows[0] == 3
    _, info = env.reset(options={"user": np.int64(4)})
    assert info["user_row"] == 4
    with pytest.raises(TypeError, match="reset options must be a dict"):
        env.reset(options=[3])
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['usr'\]; valid: user"):
        env.reset(options={"usr": 1})
    for bad in (2.7, 3.0, "3", True):
        with pytest.raises(ValueError, match="'user' must be an integer"):
            env.reset(options={"user": bad})
    with pytest.raises(ValueError, match="user rows must lie in"):
        env.reset(options={"user": env.n_users})
    fresh = gym.make(env_id, **KW).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(np.arange(5))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_vector_env_reset_options_and_errors(env_id):
    vec = EnvSpec(env_id, KW).make_vector(4, autoreset_mode="Disabled")
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        vec.step(np.tile(np.arange(5), (4, 1)))
    _, info = vec.reset(seed=0, options={"users": np.array([5, 6, 7, 8])})
    assert vec.user_rows.tolist() == [5, 6, 7, 8] and info["_user"].all()
    mask = np.array([False, True, False, True])
    _, info = vec.reset(options={"reset_mask": mask, "users": np.array([1, 2])})
    assert vec.user_rows.tolist() == [5, 1, 7, 2]
    np.testing.assert_array_equal(info["_user"], mask)
    _, info = vec.reset(options={"user": 9})
    assert (vec.user_rows == 9).all()
    with pytest.raises(ValueError, match=r"reset_mask'\] must have shape \(4,\)"):
        vec.reset(options={"reset_mask": np.ones(3, dtype=bool)})
    with pytest.raises(TypeError, match="reset_mask'] must be a bool array"):
        vec.reset(options={"reset_mask": np.array([1, 0, 1, 0])})
    with pytest.raises(ValueError, match=r"users'\] must have shape \(4,\)"):
        vec.reset(options={"users": np.array([1, 2])})
    with pytest.raises(ValueError, match="integer rows"):
        vec.reset(options={"users": np.array([1.5, 2, 3, 4])})
    with pytest.raises(ValueError, match="unknown reset option"):
        vec.reset(options={"seed": 3})
    with pytest.raises(TypeError, match="must be a dict"):
        vec.reset(options="all")
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        EnvSpec(env_id, KW).make_vector(0)
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        EnvSpec(env_id, KW).make_vector(2, autoreset_mode="sometimes")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_unknown_option_uses_pythons_wording(env_id):
    # TorchRL retries without ``frameskip`` when the message says exactly this
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'frameskip'"):
        gym.make(env_id, frameskip=4, **KW)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'frameskip'"):
        EnvSpec(env_id, KW).make_vector(2, frameskip=4)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("option", ["popular_ratio", "threshold", "train_ratio"])
def test_non_finite_numeric_options_are_rejected(env_id, option):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"{option} must be finite"):
            gym.make(env_id, **{**KW, option: bad})
    with pytest.raises(ValueError, match="horizon must be an integer"):
        gym.make(env_id, **{**KW, "horizon": 2.5})


def test_env_specific_non_finite_options_are_rejected():
    with pytest.raises(ValueError, match="rating_alpha must be finite"):
        gym.make("fcpo/MovieLensFair-v0", rating_alpha=float("nan"), **KW)
    for name in ("click_temperature", "rating_center", "popularity_sensitivity", "drift_rate", "drift_noise"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            gym.make("fcpo/MovieLensSim-v0", **{name: float("nan")}, **KW)


def test_old_import_paths_still_work():
    from fcpo.envs.config import FairEnvConfig, SimEnvConfig
    from fcpo.envs.core import COST_NAME, SlateReplayCore, validate_slates
    from fcpo.envs.movielens_fair import COST_NAME as cost_name, MovieLensFairEnv
    from fcpo.envs.simulator import (SIM_PRESETS, MovieLensSimEnv, MovieLensSimVectorEnv, SimData,  # noqa: F401
                                     SimParams, calibrate_line, get_sim_data)
    from fcpo.envs.vector import MovieLensFairVectorEnv

    assert COST_NAME == cost_name == "popular_exposure"
    assert issubclass(SimEnvConfig, FairEnvConfig.__mro__[1]) and FairEnvConfig.__mro__[1].__name__ == "SlateDataConfig"
    assert calibrate_line(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])) == pytest.approx((1.0, 2.0))
    assert validate_slates([1, 2], 0, 2, 5).tolist() == [[1, 2]]
    assert MovieLensFairEnv.config_cls is MovieLensFairVectorEnv.config_cls
    assert SlateReplayCore.__module__ == "fcpo.envs.replay"


def test_maskable_ppo_runs_unchanged_on_gym_make():
    sb3_contrib = pytest.importorskip("sb3_contrib", reason="sb3-contrib is not installed (pip install sb3-contrib)")
    env = gym.make("fcpo/MovieLensFair-v0", dataset="synthetic")
    model = sb3_contrib.MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    obs, _ = env.reset(seed=0)
    env.step(np.arange(5))
    masks = env.unwrapped.action_masks()
    action, _ = model.predict(env.unwrapped.core.observe()[0], action_masks=masks, deterministic=True)
    assert env.action_space.contains(action)
    assert env.unwrapped.item_mask()[action].all()  # the mask keeps every slot off shown items


def test_sb3_make_vec_env_on_the_string_id():
    """SB3's ``make_vec_env`` asks for ``render_mode="rgb_array"`` and retries without it only on a TypeError."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = make_vec_env("fcpo/MovieLensFair-v0", n_envs=2, env_kwargs=dict(dataset="synthetic", embedding_dim=8))
    obs = venv.reset()
    assert obs.shape[0] == 2
    with pytest.raises(ValueError, match="render_mode"):
        gym.make("fcpo/MovieLensFair-v0", dataset="synthetic", render_mode="rgb_array")
