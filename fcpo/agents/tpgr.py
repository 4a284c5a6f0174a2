"""TPGR: Tree-structured Policy Gradient Recommendation (Chen et al., AAAI 2019; seed §7.2).

Reads top to bottom:

1. a balanced hierarchical clustering tree over the item embeddings
   (``env.core.data.item_embeddings``), c = ceil(|I|^(1/d)) children per node (eq. 7-12);
2. a :class:`~fcpo.policies.tree.TreePolicy`: one softmax over the c children per
   non-leaf node; an item is a root -> leaf path, a K-item slate K paths drawn
   without replacement (exhausted subtrees masked), log pi(slate | s) exact;
3. every iteration rolls out ``rollouts_per_user`` episodes for every training user
   (native vector env, autoreset disabled), with the env's ``rating`` reward
   (eq. 7-14: normalised rating + alpha (c_p - c_n));
4. REINFORCE (eq. 7-15): discounted returns G_t of the penalised reward r - lambda c
   (eq. 7-13), standardised per user (for each user and step t, over that user's
   rollouts: a per-user baseline that removes the between-user spread of returns),
   loss = -mean(A_t log pi(a_t | s_t));
5. the popular-exposure constraint J_C <= d with d = alpha_prime * K per step,
   through a Lagrange multiplier (projected dual ascent, :mod:`fcpo.agents.lagrangian`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from fcpo.agents.base import register_agent
from fcpo.agents.lagrangian import LagrangeMultiplier
from fcpo.envs import FairEnvConfig, MovieLensFairVectorEnv
from fcpo.policies.base import SlateState
from fcpo.policies.tree import TREE_METHODS, TreePolicy, build_balanced_tree


@dataclass
class TPGRConfig:
    """TPGR hyper-parameters (defaults: the paper / its reference code where it states them).

    depth: tree depth d (the paper's MovieLens runs use d = 2); branching: children per node c,
        None = ceil(|I|^(1/d)) (eq. 7-12);
    clustering: "pca" (sort on the first principal component, cut into c balanced chunks) or
        "kmeans" (balanced k-means); both appear in the paper;
    hidden: width of the state encoder shared by the node softmaxes (reference code: 64);
    lr: Adam learning rate (reference code: 1e-3); gamma: discount of eq. 7-13;
    rollouts_per_user: episodes per user and iteration (the per-user standardisation needs >= 2;
        with 1 it falls back to standardising each step across users);
    max_users: users rolled out per iteration (None = all training users);
    updates_per_iteration: gradient steps on each batch of rollouts (1 = plain REINFORCE);
    minibatch: transitions per gradient chunk (gradients accumulate; bounds memory only);
    max_grad_norm: gradient clipping (None = off);
    reward: env reward used for training ("rating" as in the paper; None = the env config's);
    alpha_prime: cost limit d = alpha_prime * K popular items per step (1.0 = unconstrained);
    lambda_lr, lambda_init: Lagrange multiplier step size and start value.
    """

    depth: int = 2
    branching: int | None = None
    clustering: str = "pca"
    hidden: int = 64
    lr: float = 1e-3
    gamma: float = 0.9
    rollouts_per_user: int = 4
    max_users: int | None = None
    updates_per_iteration: int = 1
    minibatch: int = 4096
    max_grad_norm: float | None = 1.0
    reward: str | None = "rating"
    alpha_prime: float = 1.0
    lambda_lr: float = 0.05
    lambda_init: float = 0.0

    def __post_init__(self):
        if self.clustering not in TREE_METHODS:
            raise ValueError(f"clustering must be one of {TREE_METHODS}, got {self.clustering!r}")
        if self.rollouts_per_user < 1 or self.updates_per_iteration < 1 or self.minibatch < 1:
            raise ValueError("rollouts_per_user, updates_per_iteration and minibatch must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.alpha_prime < 0:
            raise ValueError(f"alpha_prime must be >= 0, got {self.alpha_prime}")


def shown_mask(shown: torch.Tensor, n_items: int) -> torch.Tensor:
    """Dense bool [B, n_items] from padded item lists [B, S] (-1 = padding)."""
    dense = torch.zeros(shown.shape[0], n_items + 1, dtype=torch.bool, device=shown.device)
    dense.scatter_(1, torch.where(shown < 0, torch.full_like(shown, n_items), shown), True)
    return dense[:, :n_items]


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


class TPGRAgent:
    """REINFORCE over a balanced clustering tree (see the module docstring)."""

    def __init__(self, config: TPGRConfig, env_config: FairEnvConfig, device: torch.device | str = "cpu", seed: int = 0):
        self.config = config
        self.device = torch.device(device)
        if config.reward is not None:
            env_config = dataclasses.replace(env_config, reward=config.reward)
        self.env_config = env_config
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        probe = env_config.load()
        n_users = probe.split.n_episode_users
        self.n_users_batch = n_users if config.max_users is None else min(config.max_users, n_users)
        self.env = MovieLensFairVectorEnv(num_envs=self.n_users_batch * config.rollouts_per_user,
                                          autoreset_mode=AutoresetMode.DISABLED, **dataclasses.asdict(env_config))
        core = self.env.core
        self.n_items, self.k, self.horizon, self.n_hist = core.n_items, core.k, core.horizon, core.n_hist
        items = torch.as_tensor(core.data.item_embeddings, dtype=torch.float32, device=self.device)
        tree = build_balanced_tree(items, config.depth, config.branching, config.clustering)
        self.policy = TreePolicy(tree, core.obs_dim, config.hidden).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.cost_limit = config.alpha_prime * self.k
        self.lagrange = LagrangeMultiplier(self.cost_limit, config.lambda_lr, config.lambda_init, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.iteration = 0

    # ----------------------------------------------------------------------------------- rollout
    def _users(self) -> np.ndarray:
        n = self.env.n_users
        if self.n_users_batch == n:
            users = torch.arange(n)
        else:
            users = torch.randperm(n, generator=self.generator, device=self.device)[: self.n_users_batch].cpu()
        return np.repeat(users.numpy(), self.config.rollouts_per_user)

    @torch.no_grad()
    def rollout(self) -> dict[str, torch.Tensor]:
        env, dev = self.env, self.device
        obs, info = env.reset(options={"users": self._users()})
        e, t_len = env.num_envs, self.horizon
        obs_buf = torch.zeros(t_len, e, obs.shape[1], device=dev)
        slates = torch.zeros(t_len, e, self.k, dtype=torch.long, device=dev)
        rewards = torch.zeros(t_len, e, device=dev)
        costs = torch.zeros(t_len, e, device=dev)
        valid = torch.zeros(t_len, e, dtype=torch.bool, device=dev)
        initial = torch.as_tensor(info["history"], dtype=torch.long, device=dev)
        user = torch.as_tensor(info["user"], dtype=torch.long, device=dev)
        for t in range(t_len):  # env steps, vectorised over all users and rollouts
            alive = torch.as_tensor(~env.episodes_done(), device=dev)
            if not bool(alive.any()):
                break
            exclude = torch.as_tensor(~env.action_masks(), device=dev)
            state = SlateState(torch.as_tensor(obs, device=dev), torch.as_tensor(info["history"], device=dev), user)
            slate = self.policy.act(state, self.k, "sample", exclude, self.generator)
            obs_buf[t], slates[t], valid[t] = state.obs, slate, alive
            obs, r, _, _, info = env.step(slate.cpu().numpy())
            rewards[t] = torch.as_tensor(r, dtype=torch.float32, device=dev) * alive
            costs[t] = torch.as_tensor(info["cost"], dtype=torch.float32, device=dev) * alive
        return dict(obs=obs_buf, slates=slates, rewards=rewards, costs=costs, valid=valid, initial=initial, user=user)

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
        batch = self.rollout()
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
                keep = cols[None, :] < (self.n_hist + ti * self.k)[:, None]
                exclude = shown_mask(torch.where(keep, all_shown[ei], torch.full_like(all_shown[ei], -1)), self.n_items)
                state = SlateState(batch["obs"][ti, ei], batch["initial"][ei], batch["user"][ei])
                logp = self.policy.log_prob(state, batch["slates"][ti, ei], exclude=exclude)
                loss = -(adv[ti, ei] * logp).sum() / max(n, 1)  # eq. 7-15
                loss.backward()
                total += float(loss.detach())
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            losses.append(total)
        steps = valid.sum().clamp(min=1)
        cost_per_step = float(batch["costs"].sum() / steps)
        self.lagrange.update(cost_per_step)  # per-step units: J_C / step vs d = alpha' K
        self.iteration = iteration + 1
        e = valid.shape[1]
        ep_len = float(valid.sum() / e)
        return {
            "reward": float(batch["rewards"].sum() / e),  # mean undiscounted episode return
            "cost": float(batch["costs"].sum() / e),  # mean episode cost (popular items shown)
            "cost_limit": float(self.cost_limit * ep_len),  # alpha' K per step, over the mean episode length
            "cost_per_step": cost_per_step,
            "popular_share": cost_per_step / self.k,
            "lambda": self.lagrange.item(),
            "episode_length": ep_len,
            "loss": float(np.mean(losses)),
        }

    # -------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lagrange": self.lagrange.state_dict(), "generator": self.generator.get_state(),
                "iteration": self.iteration, "config": dataclasses.asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lagrange.load_state_dict(state["lagrange"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])


def make_tpgr(config: TPGRConfig, env_config: FairEnvConfig, device, seed: int) -> TPGRAgent:
    return TPGRAgent(config, env_config, device, seed)


register_agent("tpgr", TPGRConfig, make_tpgr,
               "TPGR (Chen et al. AAAI 2019): REINFORCE over a balanced clustering tree; Lagrangian exposure constraint")
