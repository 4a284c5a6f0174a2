"""examples/: every script's ``main`` runs on synthetic data with a tiny budget, and the libraries drive
the env unchanged (TorchRL's GymEnv and Tianshou's collector with no wrapper, MaskablePPO's masks).
A library that is not installed skips its tests (``pip install fcpo[integrations]``)."""
from __future__ import annotations

import importlib
import math
import sys

import gymnasium as gym
import numpy as np
import pytest

from conftest import REPO

import fcpo  # noqa: F401

EXAMPLES = REPO / "examples"
KW = dict(dataset="synthetic")
TINY = dict(steps=256, dataset="synthetic", eval_episodes=4)
# torchrl 0.14 announces the move of its weight updaters on import; nothing here uses them
pytestmark = pytest.mark.filterwarnings("ignore:Creating .*WeightUpdater.*:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def _examples_on_path(synthetic_only_one_thread):
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


def needs(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install fcpo[integrations])")


def check_result(result: dict, env=None) -> None:
    for key in ("return", "cost", "random_return", "random_cost", "cost_limit"):
        assert math.isfinite(result[key]), key
    assert result["return"] >= 0 and result["cost"] >= 0
    env = env or gym.make("fcpo/MovieLensFair-v0", **KW)
    core = env.unwrapped
    assert result["cost"] <= core.slate_size * core.horizon  # at most every slot of every step is G0
    assert result["cost_limit"] == pytest.approx(np.mean(core.is_popular) * core.slate_size * core.horizon)


@pytest.mark.parametrize("name, module", [("sb3_ppo", "stable_baselines3"), ("sb3_maskable_ppo", "sb3_contrib"),
                                          ("tianshou_ppo", "tianshou"), ("torchrl_collector", "torchrl"),
                                          ("continuous_query", "stable_baselines3")])
def test_example_main_runs_with_a_tiny_budget(name, module):
    needs(module)
    result = importlib.import_module(name).main(**TINY)
    check_result(result)
    assert result["steps"] >= TINY["steps"]


def test_greedy_slate_is_distinct_and_skips_shown_items():
    from common import greedy_slate

    logits = np.array([[0.0, 5.0, 4.0, 1.0], [0.0, 5.0, 4.0, 1.0], [9.0, 0.0, 0.0, 0.0]])
    assert greedy_slate(logits, np.ones(4, bool)).tolist() == [1, 2, 0]  # slot 2 cannot repeat item 1
    assert greedy_slate(logits, np.array([True, False, True, True])).tolist() == [2, 3, 0]
    assert greedy_slate(logits, np.array([False, False, True, False])).tolist() == [2, 1, 0]  # fallback


def test_random_baseline_evaluates_the_same_users_for_every_policy():
    from common import evaluate, make_env, random_policy

    env = make_env(**KW)
    assert evaluate(env, random_policy(0), 5) == evaluate(env, random_policy(0), 5)
    # always slate [0, 0, 0, 0, 0]: item 0 pays at most once an episode; every slot costs 1 if item 0 is G0
    ret, cost = evaluate(env, lambda obs, env: np.zeros(env.unwrapped.slate_size, dtype=np.int64), 5)
    assert 0.0 <= ret <= 1.0
    if env.unwrapped.is_popular[0]:
        assert cost > 0 and cost % env.unwrapped.slate_size == 0
    else:
        assert cost == 0.0


def test_torchrl_gymenv_collects_with_no_wrapper_and_reads_the_cost():
    needs("torchrl")
    from torchrl.collectors import Collector, RandomPolicy
    from torchrl_collector import make_torchrl_env

    env = make_torchrl_env("synthetic")
    assert env.action_spec.shape == (5,)
    collector = Collector(env, RandomPolicy(env.action_spec), frames_per_batch=32, total_frames=32)
    batch = next(iter(collector))
    collector.shutdown()
    is_popular = gym.make("fcpo/MovieLensFair-v0", **KW).unwrapped.is_popular
    actions = batch["action"].numpy()
    assert batch["next", "cost"].numpy().tolist() == is_popular[actions].sum(axis=1).tolist()
    assert batch["next", "done"].any()  # episodes of T = 10 steps end and restart inside the batch


def test_tianshou_collector_works_on_the_env():
    needs("tianshou")
    import torch
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou_ppo import SlateActor, multi_categorical

    env = gym.make("fcpo/MovieLensFair-v0", **KW)
    core = env.unwrapped
    policy = ProbabilisticActorPolicy(actor=SlateActor(env.observation_space.shape[0], core.slate_size, core.n_items),
                                      dist_fn=multi_categorical, action_space=env.action_space, action_scaling=False,
                                      action_bound_method=None)
    venv = DummyVectorEnv([lambda: gym.make("fcpo/MovieLensFair-v0", **KW) for _ in range(2)])
    collector = Collector(policy, venv, VectorReplayBuffer(64, 2))
    collector.reset()
    with torch.no_grad():
        stats = collector.collect(n_step=40)
    assert stats.n_collected_steps == 40 and stats.n_collected_episodes >= 2
    buf = collector.buffer[:]
    assert buf.act.shape == (40, core.slate_size) and ((buf.act >= 0) & (buf.act < core.n_items)).all()
    assert np.asarray(buf.info["cost"]).tolist() == core.is_popular[buf.act].sum(axis=1).tolist()


def test_maskable_ppo_accepts_the_env_action_masks_unwrapped():
    needs("sb3_contrib")
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
    from stable_baselines3.common.env_util import make_vec_env

    # make_vec_env asks for render_mode="rgb_array" unless told otherwise (and retries only on TypeError)
    venv = make_vec_env("fcpo/MovieLensFair-v0", n_envs=2, env_kwargs=dict(render_mode=None, **KW))
    assert is_masking_supported(venv)
    venv.reset()
    masks = get_action_masks(venv)
    core = gym.make("fcpo/MovieLensFair-v0", **KW).unwrapped
    assert masks.shape == (2, core.slate_size * core.n_items) and masks.dtype == bool
    assert not masks.all(axis=1).any()  # the initial history is masked in every slot
