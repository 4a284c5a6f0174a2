"""TPGR: Tree-structured Policy Gradient Recommendation (Chen et al., AAAI 2019; seed §7.2).

Reads top to bottom:

1. a balanced hierarchical clustering tree over the item embeddings
   (``env.env_data.item_embeddings``), c = ceil(|I|^(1/d)) children per node (eq. 7-12);
2. a :class:`~fcpo.policies.tree.TreePolicy`: one softmax over the c children per
   non-leaf node; an item is a root -> leaf path, a K-item slate K paths drawn
   without replacement (exhausted subtrees masked), log pi(slate | s) exact;
3. every iteration rolls out ``rollouts_per_user`` episodes for every training user
   (native vector env, autoreset disabled), with the env's ``rating`` reward
   (eq. 7-14: normalised rating + alpha (c_p - c_n));
4. REINFORCE (eq. 7-15): discounted returns G_t of the penalised reward r - μ c (μ the multiplier)
   (eq. 7-13), standardised per user (for each user and step t, over that user's
   rollouts: a per-user baseline that removes the between-user spread of returns),
   loss = -mean(A_t log pi(a_t | s_t));
5. the popular-exposure constraint, in one of two modes (``constraint``):
   ``per-slate`` -- at most floor(α'K) G0 items in every slate, enforced inside the tree policy
   (G0 leaves masked once the cap is reached, log-probabilities exact, :mod:`fcpo.policies.tree`;
   the groups in force at each step are recorded and reused by the update; no multiplier);
   ``expected`` -- J_C <= d with d = alpha_prime * K per step through a Lagrange multiplier
   (projected dual ascent, :mod:`fcpo.agents.lagrangian`) whose cost is that of the DEPLOYED
   policy: ``deploy="sample"`` (default) deploys the trained stochastic policy, whose cost is the
   training rollout's; ``deploy="greedy"`` deploys the greedy walk and measures its cost with a
   greedy rollout of the same users every iteration (a separate env, so training is unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fcpo.agents.base import check_alpha_prime, param, register_agent
from fcpo.policies.base import check_constraint_mode
from fcpo.agents.checkpoint import Checkpointed
from fcpo.agents.lagrangian import LagrangeMultiplier
from fcpo.agents.rollout import SlateStep, greedy_cost_per_step, run_slate_episodes, with_reward_option
from fcpo.envs.contract import EnvSpec
from fcpo.policies.base import SlateState, shown_mask
from fcpo.policies.tree import TREE_METHODS, TreePolicy, build_balanced_tree


@dataclass
class TPGRConfig:
    """TPGR hyper-parameters (defaults: the paper / its reference code where it states them)."""

    depth: int = param(2, "tree depth d (the paper's MovieLens runs use d = 2)", low=1)
    branching: int | None = param(None, "children per node c; None = ceil(|I|^(1/d)) (eq. 7-12)")
    clustering: str = param("pca", "pca (sort on the first principal component) | kmeans (balanced k-means)")
    hidden: int = param(64, "width of the state encoder shared by the node softmaxes (reference code: 64)", low=1)
    lr: float = param(1e-3, "Adam step size (reference code: 1e-3)", low=0, low_open=True)
    gamma: float = param(0.9, "discount of the returns (eq. 7-13)")
    rollouts_per_user: int = param(4, "episodes per user and iteration (per-user standardisation needs >= 2)")
    max_users: int | None = param(None, "users rolled out per iteration (None = all training users)")
    updates_per_iteration: int = param(1, "gradient steps on each batch of rollouts (1 = plain REINFORCE)")
    minibatch: int = param(4096, "transitions per gradient chunk (gradients accumulate; bounds memory only)")
    max_grad_norm: float | None = param(1.0, "gradient-norm clipping (None = off)")
    reward: str | None = param("rating", "env reward option used for training (rating as in the paper; None = env's)")
    alpha_prime: float = param(1.0, "α': cost limit d = α'·K G0 items per step (1.0 = unconstrained)")
    lambda_lr: float = param(0.05, "step size of the Lagrange multiplier")
    lambda_init: float = param(0.0, "initial Lagrange multiplier")
    constraint: str = param("per-slate", "per-slate (cap floor(α'K) G0 items in every slate, in the tree walk) | "
                                         "expected (Lagrange multiplier on the deployed policy's expected cost)")
    deploy: str = param("sample", "expected mode: the deployed policy, sample (the trained stochastic one) | greedy "
                                  "(its cost is measured by a greedy rollout each iteration); per-slate deploys greedy")

    def __post_init__(self):
        self.constraint = check_constraint_mode(self.constraint, "TPGRConfig")
        if self.deploy not in ("sample", "greedy"):
            raise ValueError(f"TPGRConfig: deploy must be 'sample' or 'greedy', got {self.deploy!r}")
        if self.clustering not in TREE_METHODS:
            raise ValueError(f"clustering must be one of {TREE_METHODS}, got {self.clustering!r}")
        if self.rollouts_per_user < 1 or self.updates_per_iteration < 1 or self.minibatch < 1:
            raise ValueError("rollouts_per_user, updates_per_iteration and minibatch must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        self.alpha_prime = check_alpha_prime(self.alpha_prime, "TPGRConfig")


def per_user_standardise(returns: torch.Tensor, valid: torch.Tensor, groups: int, eps: float = 1e-8) -> torch.Tensor:
    """Standardise returns [T, U*R] per (step, user) over the R rollouts of each user (valid entries only);
    with R = 1, per step over all users."""
    t_len, e = returns.shape
    r = e // groups
    g = returns.reshape(t_len, groups, r) if r > 1 else returns.reshape(t_len, 1, e)
    v = valid.reshape(g.shape).to(returns.dtype)
    n = v.sum(-1, keepdim=True)
    mean = (g * v).sum(-1, keepdim=True) / n.clamp(min=1)
    var = (((g - mean) * v) ** 2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
    adv = (g - mean) / (var.sqrt() + eps) * v
    return adv.reshape(t_len, e)


class TPGRAgent(Checkpointed):
    """REINFORCE over a balanced clustering tree (see the module docstring)."""

    _checkpointed = ("policy", "optimizer", "lagrange", "generator", "iteration")

    def __init__(self, config: TPGRConfig, env: EnvSpec, device: torch.device | str = "cpu", seed: int = 0):
        self.config = config
        self.device = torch.device(device)
        self.env_spec = with_reward_option(env, config.reward)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        n_users = self.env_spec.make_vector(1, mode="train").n_users
        self.n_users_batch = n_users if config.max_users is None else min(config.max_users, n_users)
        self.env = self.env_spec.make_vector(self.n_users_batch * config.rollouts_per_user, mode="train")
        env = self.env
        self.n_items, self.k, self.horizon, self.n_history = env.n_items, env.slate_size, env.horizon, env.n_history
        items = torch.as_tensor(env.env_data.item_embeddings, dtype=torch.float32, device=self.device)
        tree = build_balanced_tree(items, config.depth, config.branching, config.clustering)
        deploy_mode = config.deploy if config.constraint == "expected" else "greedy"
        self.policy = TreePolicy(tree, int(env.single_observation_space.shape[0]), config.hidden,
                                 alpha_prime=config.alpha_prime, constraint=config.constraint,
                                 deploy_mode=deploy_mode).to(self.device)
        self.policy.set_groups(np.asarray(env.is_popular, dtype=bool))
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.cost_limit_per_step = config.alpha_prime * self.k
        self.lagrange = LagrangeMultiplier(self.cost_limit_per_step, config.lambda_lr, config.lambda_init,
                                           device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.iteration = 0
        self._deploy_env = None  # expected mode with deploy="greedy": env of the deployed-cost rollout
        self._deploy_generator = torch.Generator(device=self.device)
        self._deploy_generator.manual_seed(self.seed + 1)

    def _after_load(self) -> None:
        self.policy.set_groups(np.asarray(self.env.is_popular, dtype=bool))

    # ----------------------------------------------------------------------------------- rollout
    def _users(self) -> np.ndarray:
        n = self.env.n_users
        if self.n_users_batch == n:
            users = torch.arange(n)
        else:
            users = torch.randperm(n, generator=self.generator, device=self.device)[: self.n_users_batch].cpu()
        return np.repeat(users.numpy(), self.config.rollouts_per_user)

    @torch.no_grad()
    def rollout(self, users: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        env, dev = self.env, self.device
        e, t_len = env.num_envs, self.horizon
        obs_buf = torch.zeros(t_len, e, int(env.single_observation_space.shape[0]), device=dev)
        slates = torch.zeros(t_len, e, self.k, dtype=torch.long, device=dev)
        rewards = torch.zeros(t_len, e, device=dev)
        costs = torch.zeros(t_len, e, device=dev)
        valid = torch.zeros(t_len, e, dtype=torch.bool, device=dev)
        popular = torch.zeros(t_len, self.n_items, dtype=torch.bool, device=dev)  # G0 in force at each step
        start: dict[str, torch.Tensor] = {}

        def act(state: SlateState, exclude: torch.Tensor, t: int) -> torch.Tensor:
            popular[t] = torch.as_tensor(np.asarray(env.is_popular, dtype=bool), device=dev)
            return self.policy.act(state, self.k, "sample", exclude, self.generator, is_popular=popular[t])

        def record(step: SlateStep) -> None:
            t, state = step.t, step.state
            if t == 0:
                start.update(initial=state.history, user=state.user)
            alive = torch.as_tensor(step.alive, device=dev)
            obs_buf[t], slates[t], valid[t] = state.obs, step.slate, alive
            rewards[t] = torch.as_tensor(step.reward, dtype=torch.float32, device=dev) * alive
            costs[t] = torch.as_tensor(step.info["cost"], dtype=torch.float32, device=dev) * alive

        run_slate_episodes(env, self._users() if users is None else users, act, dev, on_step=record)
        return dict(obs=obs_buf, slates=slates, rewards=rewards, costs=costs, valid=valid, popular=popular, **start)

    def deployed_cost_per_step(self, users: np.ndarray) -> float:
        """G0 items per step of the greedy (deployed) policy on ``users``, from its own rollout."""
        if self._deploy_env is None:
            self._deploy_env = self.env_spec.make_vector(self.env.num_envs, mode="train")
        return greedy_cost_per_step(self._deploy_env, self.policy, users, self.k, self.device, self._deploy_generator)

    # ------------------------------------------------------------------------------------ update
    def _returns(self, rewards: torch.Tensor) -> torch.Tensor:
        g = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[0])
        for t in range(rewards.shape[0] - 1, -1, -1):  # eq. 7-13, backwards over the horizon
            running = rewards[t] + self.config.gamma * running
            g[t] = running
        return g

    def train_iteration(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        users = self._users()
        batch = self.rollout(users)
        valid = batch["valid"]
        penalised = self.lagrange.penalised(batch["rewards"], batch["costs"])
        adv = per_user_standardise(self._returns(penalised), valid, self.n_users_batch)
        t_idx, e_idx = torch.nonzero(valid, as_tuple=True)
        n = t_idx.numel()
        # exclusion at (t, e): the initial history plus the slates of steps < t (exactly the env's shown set)
        all_shown = torch.cat([batch["initial"], batch["slates"].permute(1, 0, 2).reshape(valid.shape[1], -1)], 1)
        cols = torch.arange(all_shown.shape[1], device=self.device)
        losses = []
        for _ in range(cfg.updates_per_iteration):
            self.optimizer.zero_grad()
            total = 0.0
            for start in range(0, n, cfg.minibatch):  # gradient accumulation over transition chunks
                ti, ei = t_idx[start:start + cfg.minibatch], e_idx[start:start + cfg.minibatch]
                keep = cols[None, :] < (self.n_history + ti * self.k)[:, None]
                exclude = shown_mask(torch.where(keep, all_shown[ei], torch.full_like(all_shown[ei], -1)), self.n_items)
                state = SlateState(batch["obs"][ti, ei], batch["initial"][ei], batch["user"][ei])
                logp = self.policy.log_prob(state, batch["slates"][ti, ei], exclude=exclude,
                                            is_popular=batch["popular"][ti])  # the groups the slate was drawn under
                loss = -(adv[ti, ei] * logp).sum() / max(n, 1)  # eq. 7-15
                loss.backward()
                total += float(loss.detach())
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            losses.append(total)
        steps = valid.sum().clamp(min=1)
        cost_per_step = float(batch["costs"].sum() / steps)
        deployed_cost = cost_per_step  # deploy="sample": the training rollout is the deployed policy's
        if cfg.constraint == "expected":
            if self.policy.deploy_mode == "greedy":
                deployed_cost = self.deployed_cost_per_step(users)
            self.lagrange.update(deployed_cost)  # per-step units: J_C / step vs d = alpha' K
        self.iteration = iteration + 1
        e = valid.shape[1]
        ep_len = float(valid.sum() / e)
        return {
            "reward": float(batch["rewards"].sum() / e),  # mean undiscounted episode return
            "cost": float(batch["costs"].sum() / e),  # mean episode cost (popular items shown)
            "cost_limit": float(self.cost_limit_per_step * ep_len),  # alpha' K per step, over the mean episode length
            "cost_per_step": cost_per_step,
            "popular_share": cost_per_step / self.k,
            "deployed_popular_share": deployed_cost / self.k,
            "lambda": self.lagrange.item(),
            "episode_length": ep_len,
            "loss": float(np.mean(losses)),
        }


@register_agent("tpgr", TPGRConfig,
                description="TPGR (Chen et al. AAAI 2019): REINFORCE over a balanced clustering tree; "
                            "Lagrangian exposure constraint")
def make_tpgr(config: TPGRConfig, env: EnvSpec, device, seed: int) -> TPGRAgent:
    return TPGRAgent(config, env, device, seed)
