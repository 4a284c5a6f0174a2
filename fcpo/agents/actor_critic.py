"""What the slate actor-critic agents share.

* :class:`SlateActorCriticConfig`: the fields FCPO, PPO-Lagrangian and iALP share (α', actor and
  critic widths, softmax temperature, popularity feature, critic step size), defaults and validation
  written once; :class:`RolloutConfig` adds the rollout/GAE/critic-fitting fields FCPO and
  PPO-Lagrangian share.
* the ``constraint`` mode (:data:`fcpo.policies.base.CONSTRAINT_MODES`): ``per-slate`` builds the
  actor with the cap m = ⌊α'K⌋ (:func:`fcpo.evaluate.constraint.per_slate_cap`) on the env's G0,
  and the deployed policy is the greedy capped actor (``deploy_mode="greedy"``); ``expected`` keeps
  the uncapped actor, the constraint is the CMDP one, E[Σ_t c_t] ≤ α'·K·T_episode (undiscounted
  per-episode G0 count, i.e. a mean popular share ≤ α'), and the deployed policy is the stochastic
  policy that was trained (``deploy_mode="sample"``: the evaluator samples it);
* :class:`SlateActorCritic`: the training env (built from an :class:`fcpo.envs.EnvSpec`), the slate
  actor, the reward and cost critics, their Adam updates, rollouts, rollout statistics and
  checkpointed RNG states.  Subclasses add only their policy update (CPO step, or clipped PPO with
  multipliers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fcpo.agents.base import check_alpha_prime, param
from fcpo.evaluate.constraint import per_slate_cap
from fcpo.agents.checkpoint import Checkpointed
from fcpo.agents.ppo import fit_critics
from fcpo.agents.rollout import Batch, collect
from fcpo.metrics import gini_fcpo
from fcpo.policies.actor import MODES, SlateActor
from fcpo.policies.base import check_constraint_mode
from fcpo.policies.networks import ValueCritic


def _positive_int(cfg, *names) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(cfg).__name__}: {name} must be a positive integer, got {value!r}")


def _positive(cfg, *names) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{type(cfg).__name__}: {name} must be positive, got {value!r}")


def _unit_interval(cfg, *names) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{type(cfg).__name__}: {name} must lie in [0, 1], got {value!r}")


@dataclass
class SlateActorCriticConfig:
    """Fields shared by FCPO, PPO-Lagrangian and iALP (each subclass keeps its own historical defaults)."""

    alpha_prime: float = param(1.0, "α': at most α'·K items of G0 per slate (1.0 = no effective constraint)")
    constraint: str = param("per-slate", "per-slate: cap ⌊α'K⌋ G0 items in every slate inside the actor (deployed "
                                         "greedy) | expected: E[Σ_t c_t] <= α'K·T (deployed policy = the sampled one)")
    hidden: int = param(64, "width of the actor's state encoder and head")
    critic_hidden: int = param(128, "width of the reward and cost value critics")
    temperature: float = param(0.1, "softmax actor: item scores q·v / τ")
    popularity_feature: float = param(6.0, "scale of the standardised log-popularity item column (0 = no column)")
    critic_lr: float = param(3e-3, "Adam step size of the value critics")

    def __post_init__(self):
        self.alpha_prime = check_alpha_prime(self.alpha_prime, type(self).__name__)
        self.constraint = check_constraint_mode(self.constraint, type(self).__name__)
        _positive_int(self, "hidden", "critic_hidden")
        _positive(self, "temperature", "critic_lr")
        if not (math.isfinite(self.popularity_feature) and self.popularity_feature >= 0):
            raise ValueError(f"{type(self).__name__}: popularity_feature must be >= 0, got {self.popularity_feature!r}")


@dataclass
class RolloutConfig(SlateActorCriticConfig):
    """Rollout, GAE and critic-fitting fields of the :class:`SlateActorCritic` agents (FCPO, PPO-Lagrangian)."""

    actor_mode: str = param("gaussian", "gaussian (matrix reconstruction, density of W) | softmax (Plackett-Luce)")
    users_per_iteration: float = param(1.0, "fraction of training users rolled out per iteration")
    gamma_r: float = param(0.9, "discount of the reward")
    gamma_c: float = param(1.0, "discount of the cost advantages (1.0: the constraint is on the undiscounted "
                                "per-episode G0 count, the same units as its limit α'K·T)")
    lam_r: float = param(0.95, "GAE λ of the reward advantages")
    lam_c: float = param(0.95, "GAE λ of the cost advantages")
    init_std: float = param(0.3, "gaussian actor: initial σ of W, relative to the std of the item embeddings")
    slot_credit: bool = param(True, "per-slot advantages and likelihood ratios (rollout.slot_advantages)")
    critic_epochs: int = param(2, "passes of critic fitting over each rollout")
    critic_batch: int = param(2048, "critic minibatch size")

    def __post_init__(self):
        super().__post_init__()
        if self.actor_mode not in MODES:
            raise ValueError(f"{type(self).__name__}: actor_mode must be one of {MODES}, got {self.actor_mode!r}")
        if not 0.0 < self.users_per_iteration <= 1.0:
            raise ValueError(f"{type(self).__name__}: users_per_iteration must lie in (0, 1], "
                             f"got {self.users_per_iteration!r}")
        _unit_interval(self, "gamma_r", "gamma_c", "lam_r", "lam_c")
        _positive_int(self, "critic_epochs", "critic_batch")
        _positive(self, "init_std")


def configure_constraint(actor: SlateActor, constraint: str, alpha_prime: float, is_popular) -> SlateActor:
    """Give ``actor`` the constraint's view: ``alpha_prime``, ``constraint``, ``deploy_mode`` ("greedy" for
    per-slate, "sample" for expected) and, per-slate, the env's G0 (its cap was set at construction)."""
    actor.alpha_prime = float(alpha_prime)
    actor.constraint = check_constraint_mode(constraint, "constraint")
    actor.deploy_mode = "greedy" if constraint == "per-slate" else "sample"
    if actor.slate_cap is not None:
        actor.set_groups(np.asarray(is_popular, dtype=bool))
    return actor


def slate_cap_for(constraint: str, alpha_prime: float, k: int) -> int | None:
    """The actor's per-slate cap: ⌊α'K⌋ in ``per-slate`` mode, None (uncapped) in ``expected`` mode."""
    return per_slate_cap(alpha_prime, k) if check_constraint_mode(constraint, "constraint") == "per-slate" else None


def item_features(item_embeddings: np.ndarray, train_counts: np.ndarray, popularity: float = 6.0) -> np.ndarray:
    """The actor's item representation: MF embeddings, plus (if ``popularity`` > 0) log(1 + training
    count) standardised to ``popularity`` times the spread of the embedding entries."""
    if not popularity:
        return np.asarray(item_embeddings, dtype=np.float32)
    logc = np.log1p(np.asarray(train_counts, dtype=np.float64))
    col = (logc - logc.mean()) / (logc.std() + 1e-12) * float(np.std(item_embeddings)) * float(popularity)
    return np.concatenate([item_embeddings, col[:, None].astype(np.float32)], axis=1).astype(np.float32)


class SlateActorCritic(Checkpointed):
    """Base of the on-policy slate agents (config: a :class:`RolloutConfig`); ``env`` an EnvSpec."""

    _checkpointed = ("policy", "value_r", "value_c", "opt_r", "opt_c", "generator", ("numpy_rng", "rng"))

    def __init__(self, config: RolloutConfig, env, device: torch.device | str = "cpu", seed: int = 0):
        self.config = config
        self.device = torch.device(device)
        self.env_spec = env
        self.n_users = env.make_vector(1, mode="train").n_users
        self.n_rollout = (self.n_users if config.users_per_iteration >= 1.0
                          else max(1, math.ceil(config.users_per_iteration * self.n_users)))
        self.env = env.make_vector(self.n_rollout, mode="train")
        self.slate_size = self.env.slate_size
        self.cost_limit_per_step = config.alpha_prime * self.slate_size
        torch.manual_seed(seed)
        data = self.env.env_data
        features = item_features(data.item_embeddings, data.train_counts, config.popularity_feature)
        self.policy = SlateActor(torch.as_tensor(features, device=self.device), self.env.n_history, self.slate_size,
                                 config.actor_mode, config.hidden, config.init_std, config.temperature,
                                 user_dim=data.dim,
                                 slate_cap=slate_cap_for(config.constraint, config.alpha_prime, self.slate_size),
                                 ).to(self.device)
        configure_constraint(self.policy, config.constraint, config.alpha_prime, self.env.is_popular)
        obs_dim = int(self.env.single_observation_space.shape[0])
        self.value_r = ValueCritic(obs_dim, config.critic_hidden).to(self.device)
        self.value_c = ValueCritic(obs_dim, config.critic_hidden).to(self.device)
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
            cost_limit=float(batch.cost_limit),
            discounted_cost=float(batch.ep_disc_cost.mean()), discounted_cost_limit=float(batch.ep_disc_limit.mean()),
            popular_share=batch.popular_share, episode_length=float(batch.ep_length.mean()),
            gini=gini_fcpo(batch.exposure), samples=float(batch.size))
        if self.policy.mode == "gaussian":
            stats["policy_std"] = float(self.policy.log_std.detach().exp().mean())
        return stats

    def _critic_update(self, batch: Batch) -> dict[str, float]:
        """Minibatch Adam on both critics towards their GAE(λ) returns (Ge et al. eq. 21-22), same minibatches."""
        cfg = self.config
        loss_r, loss_c = fit_critics([(self.value_r, self.opt_r, batch.ret_r), (self.value_c, self.opt_c, batch.ret_c)],
                                     batch.obs, epochs=cfg.critic_epochs, minibatch_size=cfg.critic_batch,
                                     generator=self.generator)
        return {"value_loss": loss_r, "cost_value_loss": loss_c}
