"""Shared by the examples: build the env, run a policy for whole episodes, the random baseline, the CLI.

Every example's ``main(steps, dataset, data_dir, seed, eval_episodes)`` returns a dict with the mean
episode ``return`` and ``cost`` of the trained policy and of a uniformly random policy
(``random_return``, ``random_cost``) over the same evaluation users, plus the ``cost_limit``.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

import gymnasium as gym
import numpy as np

import fcpo  # noqa: F401  (registers the fcpo/... env ids)

ENV_ID = "fcpo/MovieLensFair-v0"


def env_kwargs(dataset: str = "ml-100k", data_dir: str | None = None, **options) -> dict:
    """Keyword options of ``gym.make(ENV_ID, ...)``; ``data_dir`` defaults to ``$FCPO_DATA_DIR``."""
    if data_dir is None and dataset != "synthetic":
        data_dir = os.environ.get("FCPO_DATA_DIR")
    return dict(dataset=dataset, data_dir=data_dir, **options)


def make_env(dataset: str = "ml-100k", data_dir: str | None = None, **options) -> gym.Env:
    """``gym.make("fcpo/MovieLensFair-v0", ...)`` with no wrapper added."""
    return gym.make(ENV_ID, **env_kwargs(dataset, data_dir, **options))


def default_cost_limit(env: gym.Env) -> float:
    """Per-episode exposure budget: G0's share of the catalogue times the K * T slots of an episode
    (the popular items get no more than their proportional share of the slots)."""
    core = env.unwrapped
    share = float(np.mean(core.is_popular))
    return share * core.slate_size * core.horizon


def evaluate(env: gym.Env, act: Callable[[np.ndarray, gym.Env], np.ndarray], episodes: int,
             seed: int = 1234) -> tuple[float, float]:
    """Mean episode return and mean episode cost (sum of ``info["cost"]``) of ``act(obs, env)`` over
    ``episodes`` episodes; the users are drawn by ``reset(seed=seed)`` so two policies meet the same users."""
    returns, costs = np.zeros(episodes), np.zeros(episodes)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs, env))
            returns[ep] += reward
            costs[ep] += info["cost"]
            done = terminated or truncated
    return float(returns.mean()), float(costs.mean())


def random_policy(seed: int = 0) -> Callable[[np.ndarray, gym.Env], np.ndarray]:
    """Uniform slates (K items drawn independently), the baseline every example is compared with."""
    rng = np.random.default_rng(seed)

    def act(obs, env):
        return rng.integers(env.action_space.nvec)
    return act


def greedy_slate(logits: np.ndarray, item_mask: np.ndarray) -> np.ndarray:
    """Deterministic slate from per-slot logits [K, n_items]: slot by slot, the highest-logit item that is
    still unshown (``item_mask``) and not already in the slate (falls back to any item once none is left).
    The argmax of each slot alone would often repeat an item across slots, which pays once."""
    logits = np.array(logits, dtype=np.float64)
    allowed = np.array(item_mask, dtype=bool)
    slate = np.empty(logits.shape[0], dtype=np.int64)
    for slot in range(logits.shape[0]):  # K slots (5), each a vectorised argmax over the items
        scores = np.where(allowed, logits[slot], -np.inf) if allowed.any() else logits[slot]
        slate[slot] = int(np.argmax(scores))
        allowed[slate[slot]] = False
    return slate


def report(result: dict, trained: tuple[float, float], env: gym.Env, episodes: int, seed: int) -> dict:
    """``result`` plus the trained and random returns/costs over the same evaluation users."""
    result["return"], result["cost"] = trained
    result["random_return"], result["random_cost"] = evaluate(env, random_policy(seed), episodes)
    result.setdefault("cost_limit", default_cost_limit(env))
    return result


def parse_args(description: str, steps: int, eval_episodes: int = 200) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="environment steps of training")
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k | ml-1m | synthetic")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set (default $FCPO_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=eval_episodes)
    return parser.parse_args()


def print_result(name: str, result: dict) -> None:
    print(f"{name}: return {result['return']:.3f} (random {result['random_return']:.3f}), "
          f"cost {result['cost']:.3f} (random {result['random_cost']:.3f}, limit {result['cost_limit']:.3f})"
          + (f", lambda {result['lagrange']:.3f}" if "lagrange" in result else ""))
