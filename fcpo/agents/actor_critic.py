"""What FCPO/TRPO and PPO-Lagrangian share: the training env, the slate actor, the reward and
cost critics, their Adam updates, rollouts, rollout statistics and checkpointed RNG states.
Subclasses add only their policy update (CPO step, or clipped PPO with multipliers)."""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch

from fcpo.agents.checkpoint import numpy_rng_state, restore_numpy_rng_state
from fcpo.agents.rollout import Batch, collect
from fcpo.envs.config import FairEnvConfig
from fcpo.envs.vector import MovieLensFairVectorEnv
from fcpo.metrics import gini_fcpo
from fcpo.policies.actor import SlateActor
from fcpo.policies.networks import ValueCritic


def item_features(item_embeddings: np.ndarray, train_counts: np.ndarray, popularity: float = 6.0) -> np.ndarray:
    """The actor's item representation: MF embeddings, plus (if ``popularity`` > 0) log(1 + training
    count) standardised to ``popularity`` times the spread of the embedding entries."""
    if not popularity:
        return np.asarray(item_embeddings, dtype=np.float32)
    logc = np.log1p(np.asarray(train_counts, dtype=np.float64))
    col = (logc - logc.mean()) / (logc.std() + 1e-12) * float(np.std(item_embeddings)) * float(popularity)
    return np.concatenate([item_embeddings, col[:, None].astype(np.float32)], axis=1).astype(np.float32)


class SlateActorCritic:
    """Base of the on-policy slate agents; ``config`` needs the actor, critic and rollout fields of
    :class:`fcpo.agents.cpo.FCPOConfig`."""

    def __init__(self, config, env_config: FairEnvConfig, device: torch.device | str = "cpu", seed: int = 0):
        self.config = config
        self.device = torch.device(device)
        self.env_config = env_config
        probe = MovieLensFairVectorEnv(num_envs=1, autoreset_mode="Disabled", **asdict(env_config))
        self.n_users = probe.n_users
        self.n_rollout = (self.n_users if config.users_per_iteration >= 1.0
                          else max(1, math.ceil(config.users_per_iteration * self.n_users)))
        self.env = MovieLensFairVectorEnv(num_envs=self.n_rollout, autoreset_mode="Disabled", **asdict(env_config))
        self.slate_size = env_config.slate_size
        self.cost_limit_per_step = config.alpha_prime * self.slate_size
        torch.manual_seed(seed)
        core = self.env.core
        features = item_features(core.data.item_embeddings, core.data.train_counts, config.popularity_feature)
        self.policy = SlateActor(torch.as_tensor(features, device=self.device), core.n_hist, core.k,
                                 config.actor_mode, config.hidden, config.init_std, config.temperature,
                                 user_dim=core.dim).to(self.device)
        self.value_r = ValueCritic(core.obs_dim, config.critic_hidden).to(self.device)
        self.value_c = ValueCritic(core.obs_dim, config.critic_hidden).to(self.device)
        self.opt_r = torch.optim.Adam(self.value_r.parameters(), lr=config.critic_lr)
        self.opt_c = torch.optim.Adam(self.value_c.parameters(), lr=config.critic_lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def rollout(self) -> Batch:
        """Roll out all training users, or a fresh sample of ``users_per_iteration`` of them."""
        cfg = self.config
        users = (np.arange(self.n_users) if self.n_rollout == self.n_users
                 else np.sort(self.rng.choice(self.n_users, self.n_rollout, replace=False)))
        self.policy.eval()
        return collect(self.env, self.policy, self.value_r, self.value_c, users, self.device, cfg.gamma_r, cfg.lam_r,
                       cfg.gamma_c, cfg.lam_c, cfg.alpha_prime, self.generator)

    def rollout_stats(self, batch: Batch) -> dict[str, float]:
        stats = dict(
            reward=float(batch.ep_reward.mean()), cost=float(batch.ep_cost.mean()),
            cost_limit=float(self.cost_limit_per_step * batch.ep_length.mean()),
            discounted_cost=float(batch.ep_disc_cost.mean()), discounted_cost_limit=float(batch.ep_disc_limit.mean()),
            popular_share=batch.popular_share, episode_length=float(batch.ep_length.mean()),
            gini=gini_fcpo(batch.exposure), samples=float(batch.size))
        if self.policy.mode == "gaussian":
            stats["policy_std"] = float(self.policy.log_std.detach().exp().mean())
        return stats

    def _critic_update(self, batch: Batch) -> dict[str, float]:
        """Minibatch Adam on both critics towards their GAE(λ) returns (Ge et al. eq. 21-22), same minibatches."""
        cfg = self.config
        totals, count = [0.0, 0.0], 0
        pairs = ((self.value_r, self.opt_r, batch.ret_r), (self.value_c, self.opt_c, batch.ret_c))
        for _ in range(cfg.critic_epochs):
            perm = torch.randperm(batch.size, device=self.device, generator=self.generator)
            for start in range(0, batch.size, cfg.critic_batch):
                idx = perm[start:start + cfg.critic_batch]
                obs = batch.obs[idx]
                for j, (critic, opt, target) in enumerate(pairs):
                    loss = torch.mean((critic(obs) - target[idx]) ** 2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    totals[j] += float(loss.detach())
                count += 1
        return {"value_loss": totals[0] / max(count, 1), "cost_value_loss": totals[1] / max(count, 1)}

    def state_dict(self) -> dict:
        """Networks, critic optimisers and RNG states: tensors and plain values only."""
        return {"policy": self.policy.state_dict(), "value_r": self.value_r.state_dict(),
                "value_c": self.value_c.state_dict(), "opt_r": self.opt_r.state_dict(), "opt_c": self.opt_c.state_dict(),
                "generator": self.generator.get_state(), "numpy_rng": numpy_rng_state(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value_r.load_state_dict(state["value_r"])
        self.value_c.load_state_dict(state["value_c"])
        self.opt_r.load_state_dict(state["opt_r"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.generator.set_state(state["generator"].cpu())
        self.rng.bit_generator.state = restore_numpy_rng_state(state["numpy_rng"])
