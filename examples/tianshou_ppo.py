"""Tianshou 2.x ``PPO`` on ``fcpo/MovieLensFair-v0`` through Tianshou's own ``DummyVectorEnv``, with a
Lagrangian penalty on the cost read from ``info["cost"]``.

Two settings Tianshou needs for this action space (``MultiDiscrete([n_items] * K)``):

* a multi-categorical distribution: the actor outputs K rows of n_items logits and ``dist_fn`` makes
  ``Independent(Categorical(logits), 1)``, one item per slot, log-probabilities summed over slots
  (Tianshou's default ``Categorical`` assumes a single ``Discrete`` choice);
* ``action_scaling=False`` and ``action_bound_method=None`` on the policy (the defaults rescale and
  clip actions as if they were continuous).

The collected ``info`` is stored in the buffer, so ``batch.info["cost"]`` is the per-step cost; before
each update the rewards become r - lambda * cost, and lambda rises (dual ascent) while the mean cost
per step exceeds ``cost_limit / horizon``.

    python examples/tianshou_ppo.py --steps 16384 --dataset ml-100k   # 2.75 vs random 1.36
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import default_cost_limit, evaluate, greedy_slate, make_env, parse_args, print_result, report  # noqa: E402


class SlateActor(nn.Module):
    """obs [B, D] -> logits [B, K, n_items] (Tianshou's actor protocol: ``forward(obs, state, info)``)."""

    def __init__(self, obs_dim: int, slate_size: int, n_items: int, hidden: int = 128):
        super().__init__()
        self.slate_size, self.n_items = slate_size, n_items
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, slate_size * n_items))

    def forward(self, obs, state=None, info=None):
        logits = self.net(torch.as_tensor(obs, dtype=torch.float32))
        return logits.view(-1, self.slate_size, self.n_items), state


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, obs, state=None, info=None):
        return self.net(torch.as_tensor(obs, dtype=torch.float32))


def multi_categorical(logits: torch.Tensor) -> torch.distributions.Distribution:
    """One categorical per slate slot, independent: log p(slate) = sum over slots."""
    return torch.distributions.Independent(torch.distributions.Categorical(logits=logits), 1)


def lagrangian_ppo_class():
    """``PPO`` whose rewards are penalised by lambda * info["cost"] before returns are computed."""
    from tianshou.algorithm import PPO

    class LagrangianPPO(PPO):
        def __init__(self, *, step_cost_limit: float, lambda_lr: float = 0.05, **kwargs):
            super().__init__(**kwargs)
            self.step_cost_limit, self.lambda_lr, self.lagrange = step_cost_limit, lambda_lr, 0.0

        def _preprocess_batch(self, batch, buffer, indices):
            cost = np.asarray(batch.info["cost"], dtype=np.float64)
            self.lagrange = max(0.0, self.lagrange + self.lambda_lr * (float(cost.mean()) - self.step_cost_limit))
            batch.rew = batch.rew - self.lagrange * cost
            return super()._preprocess_batch(batch, buffer, indices)

    return LagrangianPPO


def main(steps: int = 16384, dataset: str = "ml-100k", data_dir: str | None = None, seed: int = 0,
         eval_episodes: int = 200, num_envs: int = 4, collect_steps: int = 1024, learning_rate: float = 3e-3,
         cost_limit: float | None = None) -> dict:
    """Train Lagrangian PPO for ``steps`` env steps; the mean return/cost of its greedy slates
    (:func:`common.greedy_slate` over the unshown items)."""
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.utils.torch_utils import policy_within_training_step

    torch.manual_seed(seed)
    env = make_env(dataset, data_dir)
    cost_limit = default_cost_limit(env) if cost_limit is None else cost_limit
    core = env.unwrapped
    obs_dim = env.observation_space.shape[0]
    train_envs = DummyVectorEnv([lambda: make_env(dataset, data_dir) for _ in range(num_envs)])
    train_envs.seed(seed)
    actor = SlateActor(obs_dim, core.slate_size, core.n_items)
    policy = ProbabilisticActorPolicy(actor=actor, dist_fn=multi_categorical, action_space=env.action_space,
                                      observation_space=env.observation_space, action_scaling=False,
                                      action_bound_method=None)
    algorithm = lagrangian_ppo_class()(policy=policy, critic=Critic(obs_dim),
                                       optim=AdamOptimizerFactory(lr=learning_rate),
                                       step_cost_limit=cost_limit / core.horizon, ent_coef=0.0)
    collect_steps = min(collect_steps, steps)
    collector = Collector(algorithm, train_envs, VectorReplayBuffer(collect_steps, num_envs))
    collector.reset()
    done_steps = 0
    while done_steps < steps:
        with policy_within_training_step(policy):  # sample slates, allow update()
            stats = collector.collect(n_step=collect_steps)
            algorithm.update(buffer=collector.buffer, batch_size=256, repeat=4)
        done_steps += stats.n_collected_steps
        collector.reset_buffer(keep_statistics=True)

    def act(obs, env):
        with torch.no_grad():
            return greedy_slate(actor(obs[None])[0][0].numpy(), env.unwrapped.item_mask())

    result = {"steps": done_steps, "cost_limit": cost_limit, "lagrange": algorithm.lagrange}
    return report(result, evaluate(env, act, eval_episodes), env, eval_episodes, seed)


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], steps=16384)
    print_result("Tianshou PPO", main(args.steps, args.dataset, args.data_dir, args.seed, args.eval_episodes))
