"""Wolpertinger: DDPG + k-NN over item embeddings (Dulac-Arnold et al., "Deep Reinforcement Learning in
Large Discrete Action Spaces", 2015; seed §7.1.1, table 7-1).

Reads top to bottom:

1. actor f(s) = a_hat, a proto-action in item-embedding space (eq. 7-2), squashed by tanh into the
   per-dimension range of the item embeddings (``env.env_data.item_embeddings``);
2. g_k(a_hat): the k items nearest to a_hat (eq. 7-3: argmin of L2 distance by default), exact top-k
   or an approximate faiss index, with k = ceil(knn_ratio * |I|) (paper/seed: ~10 % of the catalogue);
   in per-slate mode the K nearest G1 items are added, so a capped slate never lacks G1 items;
3. the critic re-ranks the candidates, Q(s, a) = Q_r(s, a) - μ Q_c(s, a) (eq. 7-4; μ the Lagrange
   multiplier), and the K
   best distinct admissible candidates form the slate;
4. the critic is additive over the slate, Q(s, A) = sum_{a in A} Q(s, a) (each slate item's share of
   the slate value, which makes "K best candidates" the greedy slate for Q); TD target
   y = r + gamma (1 - done) Q'(s', pi'(s')) with the full Wolpertinger policy of the *target*
   networks (table 7-1 line 10), reward and cost heads trained alike.  The max over k candidates
   in pi' overestimates, and the additive slate multiplies the bias by K; by default two critics
   give a clipped double-Q target (TD3; ``twin_critic=False`` is the paper's single critic);
5. the actor ascends grad_a Q(s, a)|_{a = f(s)} grad_theta f(s) with the proto-action (line 12);
6. soft target updates theta' <- tau theta + (1 - tau) theta' (line 13); Gaussian or
   Ornstein-Uhlenbeck exploration noise on the proto-action; a uniform replay buffer;
7. the popular-exposure constraint, in one of two modes (``constraint``):
   ``per-slate`` -- the K items are chosen from the candidates under the cap floor(α'K) on G0 items
   (:func:`fcpo.policies.capped.capped_greedy_slate` on the critic values, with the groups in force
   at that step), when acting (exploration included), evaluating and forming the target slate at
   s' (the groups of s' are kept in the replay buffer); no multiplier;
   ``expected`` -- J_C <= d = alpha_prime * K per step via a Lagrange multiplier whose cost is that
   of the DEPLOYED policy: ``deploy="greedy"`` (default; the noiseless policy) measures it with a
   greedy rollout of ``num_envs`` users every iteration (its own env and generator, so training
   draws are unchanged); ``deploy="sample"`` deploys the exploring policy (Gaussian proto-action
   noise), whose cost is the training rollout's.

``done`` includes truncation at the horizon: t / T is part of the observation, so the horizon
is part of the MDP and nothing is bootstrapped past it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fcpo.agents.base import check_alpha_prime, param, register_agent
from fcpo.agents.checkpoint import Checkpointed
from fcpo.agents.lagrangian import LagrangeMultiplier
from fcpo.agents.rollout import SlateStep, greedy_cost_per_step, run_slate_episodes, with_reward_option
from fcpo.envs.contract import EnvSpec
from fcpo.evaluate.constraint import per_slate_cap
from fcpo.policies.base import Policy, SlateState, check_constraint_mode, shown_mask
from fcpo.policies.capped import cap_binds, capped_greedy_slate, capped_plackett_luce_log_prob
from fcpo.policies.knn import BACKENDS, METRICS, KNNIndex

NOISES = ("gaussian", "ou")


@dataclass
class WolpertingerConfig:
    """Wolpertinger hyper-parameters (defaults: DDPG, Lillicrap et al. 2016, and Dulac-Arnold et al. 2015
    where they apply; buffer and hidden sizes scaled to MovieLens-sized runs)."""

    knn_ratio: float = param(0.1, "k = ceil(knn_ratio * |I|) neighbours re-ranked by the critic (paper: 10 %)")
    knn_k: int | None = param(None, "a fixed k instead of the ratio (None = use the ratio); never below K")
    knn_backend: str = param("exact", "exact (torch top-k) | faiss (IVF-Flat, optional dependency)")
    knn_metric: str = param("l2", "l2 (eq. 7-3) | ip")
    faiss_nprobe: int = param(8, "faiss: IVF cells visited per query")
    actor_hidden: tuple[int, ...] = param((256, 256), "actor layer widths (DDPG: 400, 300)")
    critic_hidden: tuple[int, int] = param((256, 256), "critic widths: state layer, joint layer (action enters the 2nd)")
    twin_critic: bool = param(True, "clipped double-Q targets (TD3) against the max-over-candidates bias; False = DDPG")
    actor_lr: float = param(1e-4, "actor Adam step size (DDPG: 1e-4)", low=0, low_open=True)
    critic_lr: float = param(1e-3, "critic Adam step size (DDPG: 1e-3)", low=0, low_open=True)
    critic_weight_decay: float = param(0.0, "critic L2 weight decay (DDPG: 1e-2)")
    gamma: float = param(0.9, "discount (0.9: episodes of T = 10 steps; DDPG used 0.99)")
    tau: float = param(1e-3, "soft target update rate (DDPG: 1e-3)")
    batch_size: int = param(64, "replay minibatch size (DDPG: 64)")
    buffer_size: int = param(100_000, "replay capacity in transitions (DDPG: 1e6)")
    num_envs: int = param(64, "users rolled out in parallel per iteration (one episode each)")
    updates_per_iteration: int = param(64, "gradient steps per iteration")
    warmup: int = param(256, "transitions in the buffer before updating", low=0)
    noise: str = param("gaussian", "exploration noise on the proto-action: gaussian | ou")
    noise_sigma: float = param(0.2, "noise scale relative to the per-dimension std of the item embeddings", low=0)
    ou_theta: float = param(0.15, "Ornstein-Uhlenbeck mean reversion (DDPG: 0.15)")
    reward: str | None = param("hit", "env reward option used for training (None = the env's own)")
    alpha_prime: float = param(1.0, "α': cost limit d = α'·K G0 items per step")
    lambda_lr: float = param(0.05, "step size of the Lagrange multiplier")
    lambda_init: float = param(0.0, "initial Lagrange multiplier")
    act_chunk: int = param(256, "rows per batched decision (bounds memory of the candidate re-ranking)")
    constraint: str = param("per-slate", "per-slate (cap floor(α'K) G0 items in every slate, in the candidate "
                                         "re-ranking) | expected (Lagrange multiplier on the deployed policy's cost)")
    deploy: str = param("greedy", "expected mode: the deployed policy, greedy (noiseless; cost measured by a greedy "
                                  "rollout each iteration) | sample (proto-action noise); per-slate deploys greedy")

    def __post_init__(self):
        self.constraint = check_constraint_mode(self.constraint, "WolpertingerConfig")
        if self.deploy not in ("sample", "greedy"):
            raise ValueError(f"WolpertingerConfig: deploy must be 'sample' or 'greedy', got {self.deploy!r}")
        self.actor_hidden = tuple(self.actor_hidden)
        self.critic_hidden = tuple(self.critic_hidden)
        if self.knn_backend not in BACKENDS:
            raise ValueError(f"knn_backend must be one of {BACKENDS}, got {self.knn_backend!r}")
        if self.knn_metric not in METRICS:
            raise ValueError(f"knn_metric must be one of {METRICS}, got {self.knn_metric!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if not 0.0 < self.knn_ratio <= 1.0:
            raise ValueError(f"knn_ratio must lie in (0, 1], got {self.knn_ratio}")
        if len(self.critic_hidden) != 2:
            raise ValueError(f"critic_hidden must have two widths (state layer, joint layer), got {self.critic_hidden}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"need 0 < tau <= 1 and 0 <= gamma <= 1, got tau={self.tau}, gamma={self.gamma}")
        if min(self.batch_size, self.buffer_size, self.num_envs, self.act_chunk) < 1 or self.updates_per_iteration < 0:
            raise ValueError("batch_size, buffer_size, num_envs, act_chunk must be >= 1 and updates_per_iteration >= 0")
        self.alpha_prime = check_alpha_prime(self.alpha_prime, "WolpertingerConfig")


def _mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """f(s) = bound * tanh(MLP(s)): a proto-action inside the box spanned by the item embeddings."""

    def __init__(self, obs_dim: int, dim: int, hidden: tuple[int, ...], bound: torch.Tensor):
        super().__init__()
        self.net = _mlp([obs_dim, *hidden, dim], nn.Tanh())
        self.register_buffer("bound", bound.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.bound


class QNet(nn.Module):
    """DDPG critic with the action entering the 2nd layer and two heads (reward, cost):
    Q(s, a) = W3 relu(W2s relu(W1 s) + W2a a + b2) + b3.  The state part is computed once per
    state, so each candidate item costs one H2-wide add + dot product."""

    def __init__(self, obs_dim: int, dim: int, hidden: tuple[int, int]):
        super().__init__()
        h1, h2 = hidden
        self.state = nn.Sequential(nn.Linear(obs_dim, h1), nn.ReLU(), nn.Linear(h1, h2))
        self.action = nn.Linear(dim, h2, bias=False)
        self.out = nn.Linear(h2, 2)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim], actions [B, M, dim] -> Q [B, M, 2] (reward, cost)."""
        return self.out(torch.relu(self.state(obs)[:, None, :] + self.action(actions)))


class Critic(nn.Module):
    """One :class:`QNet` (DDPG) or two (``twin=True``, clipped double Q of TD3, Fujimoto et al. 2018).

    ``forward`` is the first network (used to re-rank candidates and for the actor's gradient);
    ``target_value`` the pessimistic estimate for TD targets: min over the twins of the reward
    head, max of the cost head (a single network returns itself).
    """

    def __init__(self, obs_dim: int, dim: int, hidden: tuple[int, int], twin: bool = False):
        super().__init__()
        self.nets = nn.ModuleList([QNet(obs_dim, dim, hidden) for _ in range(2 if twin else 1)])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.nets[0](obs, actions)

    def all(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[n_nets, B, M, 2]."""
        return torch.stack([net(obs, actions) for net in self.nets])

    def target_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q = self.all(obs, actions)
        return torch.stack([q[..., 0].amin(0), q[..., 1].amax(0)], -1)


class WolpertingerPolicy(Policy):
    """Actor + k-NN + critic re-ranking (eq. 7-4); deterministic.

    ``log_prob`` is a surrogate: Plackett-Luce over softmax of the penalised critic values
    Q_r - μ Q_c (μ = ``multiplier``, the Lagrange multiplier) on the k-NN candidate set of the proto-action (items outside it: -inf);
    the acting policy is its greedy (zero-temperature) limit.  ``act(mode="sample")`` adds
    Gaussian noise of scale ``noise_sigma`` (relative to the item-embedding std) to the proto-action.
    """

    log_prob_kind = "surrogate: Plackett-Luce over critic values on the k-NN candidates of the proto-action"

    def __init__(self, actor: Actor, critic: Critic, items: torch.Tensor, index: KNNIndex, k_nn: int,
                 noise_sigma: float = 0.2, act_chunk: int = 256, alpha_prime: float = 1.0,
                 constraint: str = "per-slate", deploy_mode: str = "greedy"):
        super().__init__()
        self.alpha_prime = check_alpha_prime(alpha_prime, "WolpertingerPolicy")
        self.constraint = check_constraint_mode(constraint, "WolpertingerPolicy")
        if deploy_mode not in ("greedy", "sample"):
            raise ValueError(f"WolpertingerPolicy: deploy_mode must be 'greedy' or 'sample', got {deploy_mode!r}")
        self.deploy_mode = deploy_mode  # how the evaluator acts with this policy by default
        self.register_buffer("is_popular", torch.zeros(items.shape[0], dtype=torch.bool), persistent=False)
        self.has_groups = False
        self.actor, self.critic = actor, critic
        self.register_buffer("items", items.clone())
        self.register_buffer("item_std", items.std(0).clamp(min=1e-6))
        self.register_buffer("multiplier", torch.zeros(1))
        self.index = index
        self.k_nn = int(k_nn)
        self.noise_sigma = float(noise_sigma)
        self.act_chunk = int(act_chunk)

    def __deepcopy__(self, memo):
        memo[id(self.index)] = self.index  # the k-NN index is read-only: share it between copies
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, copy.deepcopy(value, memo))
        return new

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "lam" in state_dict and prefix + "multiplier" not in state_dict:  # checkpoints before the rename
            state_dict[prefix + "multiplier"] = state_dict.pop(prefix + "lam")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_groups(self, is_popular) -> None:
        """Set G0 (bool [n_items]); dynamic groupings call this whenever G0 changes."""
        mask = torch.as_tensor(is_popular, device=self.is_popular.device)
        if mask.dtype != torch.bool or mask.shape != self.is_popular.shape:
            raise ValueError(f"is_popular must be a bool mask of shape [{self.is_popular.shape[0]}], "
                             f"got dtype {mask.dtype} shape {list(mask.shape)}")
        self.is_popular.copy_(mask)
        self.has_groups = True

    def cap_for(self, k: int) -> int | None:
        """m = floor(α'k) G0 items per k-item slate in per-slate mode; None (no cap) in expected mode."""
        return per_slate_cap(self.alpha_prime, k) if self.constraint == "per-slate" else None

    def _groups(self, is_popular: torch.Tensor | None) -> torch.Tensor:
        """G0 for one call: the override ([n] or [B, n]) or the policy's own groups."""
        if is_popular is not None:
            return torch.as_tensor(is_popular, device=self.items.device)
        if not self.has_groups:
            raise RuntimeError("WolpertingerPolicy in per-slate mode needs the popular group: call set_groups() "
                               "or pass is_popular=")
        return self.is_popular

    def select(self, values: torch.Tensor, cand: torch.Tensor, k: int, cap: int | None,
               popular: torch.Tensor | None) -> torch.Tensor:
        """The K items of the candidates ``cand`` [B, M] (-1 = missing) with the best ``values``: a
        top-k, or under a binding ``cap`` the capped greedy slate (``popular``: G0 [n] or [B, n])."""
        if not cap_binds(cap, k):
            return torch.gather(cand, 1, torch.topk(values, k, dim=1).indices)
        missing = cand < 0
        pop = popular[cand.clamp(min=0)] if popular.dim() == 1 else torch.gather(popular, 1, cand.clamp(min=0))
        pos = capped_greedy_slate(values.masked_fill(missing, 0.0), k, cap, pop & ~missing, exclude=missing)
        return torch.gather(cand, 1, pos)

    def candidates(self, obs: torch.Tensor, exclude: torch.Tensor | None, noise: torch.Tensor | None = None,
                   k_nn: int | None = None, popular: torch.Tensor | None = None, k_g1: int = 0) -> torch.Tensor:
        """k-NN candidate ids [B, k_nn] of the (noisy) proto-action; -1 marks missing ones (approximate index).

        Per-slate mode passes ``popular`` (G0, [n] or [B, n]) and ``k_g1`` = K: the k_g1 nearest
        admissible G1 items are appended (those already among the k-NN marked -1), so the capped
        choice can always fill the slate with G1 items instead of falling back to G0 ones when the
        proto-action's neighbourhood is all popular."""
        proto = self.actor(obs)
        if noise is not None:
            proto = proto + noise
        scores, ids = self.index.search(proto.detach(), k_nn or self.k_nn, exclude)
        ids = ids.masked_fill(torch.isneginf(scores), -1)  # rows with fewer admissible items than k_nn
        if popular is None or k_g1 <= 0:
            return ids
        blocked = popular.expand(obs.shape[0], -1)
        blocked = blocked if exclude is None else blocked | exclude
        s1, i1 = self.index.search(proto.detach(), min(int(k_g1), self.items.shape[0]), blocked)
        dup = (i1[:, :, None] == ids[:, None, :]).any(-1)
        return torch.cat([ids, i1.masked_fill(torch.isneginf(s1) | dup, -1)], 1)

    def candidate_values(self, obs: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Penalised Q_r - μ Q_c of candidates [B, M] (-inf where cand < 0)."""
        q = self.critic(obs, self.items[cand.clamp(min=0)])
        v = q[..., 0] - self.multiplier * q[..., 1]
        return v.masked_fill(cand < 0, float("-inf"))

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude: torch.Tensor | None = None,
            generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
            is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """K best distinct admissible candidates by critic value (eq. 7-4), chunked over rows; in
        per-slate mode at most floor(α'K) of them in G0 (groups ``is_popular`` or the policy's own)."""
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        n = self.items.shape[0]
        if exclude is not None and exclude.shape != (len(state), n):
            raise ValueError(f"exclude must be a bool mask [B, n_items] = [{len(state)}, {n}], got {tuple(exclude.shape)}")
        if mode == "sample" and noise is None:
            noise = torch.randn(len(state), self.items.shape[1], device=self.items.device, generator=generator)
            noise = noise * self.noise_sigma * self.item_std
        k_nn = max(self.k_nn, k)
        cap = self.cap_for(k)
        popular = self._groups(is_popular) if cap_binds(cap, k) else None
        out = []
        for start in range(0, len(state), self.act_chunk):  # bounded-memory row chunks
            sl = slice(start, start + self.act_chunk)
            obs = state.obs[sl]
            pop = popular if popular is None or popular.dim() == 1 else popular[sl]
            cand = self.candidates(obs, None if exclude is None else exclude[sl], None if noise is None else noise[sl],
                                   k_nn, pop, k)
            out.append(self.select(self.candidate_values(obs, cand), cand, k, cap, pop))
        slate = torch.cat(out, 0)
        if bool((slate < 0).any()):
            raise ValueError("fewer admissible k-NN candidates than slate positions; raise knn_k / knn_ratio or nprobe")
        return slate

    def scores(self, state: SlateState) -> torch.Tensor:
        """Critic values on the k-NN candidates of the proto-action, -inf elsewhere; [B, n_items]."""
        cand = self.candidates(state.obs, None)
        v = self.candidate_values(state.obs, cand)
        full = torch.full((len(state), self.items.shape[0] + 1), float("-inf"), device=v.device, dtype=v.dtype)
        full.scatter_(1, torch.where(cand < 0, torch.full_like(cand, self.items.shape[0]), cand), v)
        return full[:, :-1]

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None, is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """The surrogate (class docstring); in per-slate mode the capped Plackett-Luce process over the
        k-NN candidates (:func:`fcpo.policies.capped.capped_plackett_luce_log_prob`)."""
        cap = self.cap_for(items.shape[1])
        if candidates is not None or not cap_binds(cap, items.shape[1]):
            return super().log_prob(state, items, candidates, exclude)
        popular = self._groups(is_popular)
        cand = self.candidates(state.obs, exclude, popular=popular, k_g1=items.shape[1])  # as act (no noise)
        v = self.candidate_values(state.obs, cand)
        s = torch.full((len(state), self.items.shape[0] + 1), float("-inf"), device=v.device, dtype=v.dtype)
        s = s.scatter(1, torch.where(cand < 0, torch.full_like(cand, self.items.shape[0]), cand), v)[:, :-1]
        off = torch.isneginf(s) if exclude is None else torch.isneginf(s) | exclude
        return capped_plackett_luce_log_prob(s.masked_fill(off, 0.0), items, cap, popular, off)


class ReplayBuffer:
    """Uniform replay of (s, slate, r, c, s', done, shown-at-s', G0-at-s'); a ring buffer of tensors on ``device``.

    G0 at s' (needed for the capped target slate) is stored as an index into a table of the
    distinct group masks seen (one entry for static groups; one per change for dynamic ones)."""

    def __init__(self, capacity: int, obs_dim: int, k: int, shown_len: int, device: torch.device):
        self.capacity, self.device = int(capacity), device
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.slate = torch.zeros(capacity, k, dtype=torch.long, device=device)
        self.reward = torch.zeros(capacity, device=device)
        self.cost = torch.zeros(capacity, device=device)
        self.done = torch.zeros(capacity, device=device)
        self.next_shown = torch.full((capacity, shown_len), -1, dtype=torch.int32, device=device)
        self.next_group = torch.zeros(capacity, dtype=torch.long, device=device)
        self.group_masks: list[torch.Tensor] = []
        self._group_ids: dict[bytes, int] = {}
        self.pos, self.size = 0, 0

    def group_id(self, is_popular) -> int:
        """Index of the G0 mask ``is_popular`` in the buffer's table (added when new)."""
        mask = torch.as_tensor(np.asarray(is_popular, dtype=bool), device=self.device)
        key = mask.cpu().numpy().tobytes()
        if key not in self._group_ids:
            self._group_ids[key] = len(self.group_masks)
            self.group_masks.append(mask)
        return self._group_ids[key]

    def add(self, obs, slate, reward, cost, next_obs, done, next_shown, next_group: int = 0) -> None:
        n = obs.shape[0]
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        self.obs[idx], self.slate[idx], self.reward[idx], self.cost[idx] = obs, slate, reward, cost
        self.next_obs[idx], self.done[idx], self.next_shown[idx] = next_obs, done, next_shown.int()
        self.next_group[idx] = int(next_group)
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=generator)
        return dict(obs=self.obs[idx], slate=self.slate[idx], reward=self.reward[idx], cost=self.cost[idx],
                    next_obs=self.next_obs[idx], done=self.done[idx], next_shown=self.next_shown[idx].long(),
                    next_group=self.next_group[idx])

    def next_popular(self, next_group: torch.Tensor) -> torch.Tensor:
        """G0 at s' for sampled transitions: [n] when they share one mask, else [B, n]."""
        if len(self.group_masks) == 1:
            return self.group_masks[0]
        return torch.stack(self.group_masks)[next_group]

    def state_dict(self) -> dict:
        n = self.size
        groups = torch.stack(self.group_masks) if self.group_masks else torch.zeros(0, 0, dtype=torch.bool)
        return {"pos": self.pos, "size": n, "obs": self.obs[:n].clone(), "next_obs": self.next_obs[:n].clone(),
                "slate": self.slate[:n].clone(), "reward": self.reward[:n].clone(), "cost": self.cost[:n].clone(),
                "done": self.done[:n].clone(), "next_shown": self.next_shown[:n].clone(),
                "next_group": self.next_group[:n].clone(), "group_masks": groups}

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for key in ("obs", "next_obs", "slate", "reward", "cost", "done", "next_shown"):
            getattr(self, key)[:n] = state[key].to(self.device)
        if "group_masks" in state:  # checkpoints before the per-slate mode have none: groups re-learnt
            self.next_group[:n] = state["next_group"].to(self.device)
            self.group_masks, self._group_ids = [], {}
            for mask in state["group_masks"]:
                self.group_id(mask.cpu().numpy())
        self.pos, self.size = int(state["pos"]), n


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta' (table 7-1, line 13)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


class WolpertingerAgent(Checkpointed):
    """DDPG with a k-NN action map over item embeddings (see the module docstring)."""

    _checkpointed = ("policy", "target", "actor_opt", "critic_opt", "lagrange", "generator", "buffer", "iteration")

    def __init__(self, config: WolpertingerConfig, env: EnvSpec, device: torch.device | str = "cpu", seed: int = 0):
        self.config = cfg = config
        self.device = dev = torch.device(device)
        self.env_spec = with_reward_option(env, cfg.reward)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        self.env = self.env_spec.make_vector(cfg.num_envs, mode="train")
        env_data = self.env.env_data
        self.n_items, self.k, self.horizon, self.n_history = (self.env.n_items, self.env.slate_size, self.env.horizon,
                                                           self.env.n_history)
        obs_dim = int(self.env.single_observation_space.shape[0])
        items = torch.as_tensor(env_data.item_embeddings, dtype=torch.float32, device=dev)
        dim = items.shape[1]
        self.k_nn = max(self.k, min(self.n_items, cfg.knn_k if cfg.knn_k is not None
                                    else math.ceil(cfg.knn_ratio * self.n_items)))
        self.index = KNNIndex(items, cfg.knn_metric, cfg.knn_backend, nprobe=cfg.faiss_nprobe, seed=self.seed)
        bound = items.abs().amax(0).clamp(min=1e-6)
        actor, critic = Actor(obs_dim, dim, cfg.actor_hidden, bound), Critic(obs_dim, dim, cfg.critic_hidden, cfg.twin_critic)
        deploy_mode = cfg.deploy if cfg.constraint == "expected" else "greedy"
        self.policy = WolpertingerPolicy(actor, critic, items, self.index, self.k_nn, cfg.noise_sigma,
                                         cfg.act_chunk, cfg.alpha_prime, cfg.constraint, deploy_mode).to(dev)
        self.policy.set_groups(np.asarray(self.env.is_popular, dtype=bool))
        self.target = self.policy.snapshot()  # target actor + critic (table 7-1, line 2)
        self.actor_opt = torch.optim.Adam(self.policy.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.policy.critic.parameters(), lr=cfg.critic_lr,
                                           weight_decay=cfg.critic_weight_decay)
        self.cost_limit_per_step = cfg.alpha_prime * self.k
        self.lagrange = LagrangeMultiplier(self.cost_limit_per_step, cfg.lambda_lr, cfg.lambda_init, device=dev)
        self._sync_lambda()
        self.shown_len = self.n_history + self.horizon * self.k
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_dim, self.k, self.shown_len, dev)
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(self.seed)
        self.iteration = 0
        self._deploy_env = None  # expected mode with deploy="greedy": env of the deployed-cost rollout
        self._deploy_generator = torch.Generator(device=dev)
        self._deploy_generator.manual_seed(self.seed + 1)

    def _sync_lambda(self) -> None:
        multiplier = self.lagrange.value.float()
        self.policy.multiplier.copy_(multiplier)
        self.target.multiplier.copy_(multiplier)

    def _after_load(self) -> None:
        self._sync_lambda()
        groups = np.asarray(self.env.is_popular, dtype=bool)
        self.policy.set_groups(groups)
        self.target.set_groups(groups)

    # ----------------------------------------------------------------------------------- rollout
    def _noise(self, ou_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg, pol = self.config, self.policy
        eps = torch.randn(self.env.num_envs, pol.items.shape[1], device=self.device, generator=self.generator)
        if cfg.noise == "gaussian":
            return eps * cfg.noise_sigma * pol.item_std, None
        ou_state = ou_state - cfg.ou_theta * ou_state + cfg.noise_sigma * eps  # OU, dt = 1
        return ou_state * pol.item_std, ou_state

    @torch.no_grad()
    def rollout(self) -> dict[str, float]:
        """One episode for ``num_envs`` users drawn from the agent's generator; transitions -> replay."""
        env, dev, k, n_history = self.env, self.device, self.k, self.n_history
        users = torch.randint(env.n_users, (env.num_envs,), generator=self.generator, device=dev).cpu().numpy()
        shown = torch.full((env.num_envs, self.shown_len), -1, dtype=torch.long, device=dev)
        ou = torch.zeros(env.num_envs, self.policy.items.shape[1], device=dev) if self.config.noise == "ou" else None
        ret = torch.zeros(env.num_envs, device=dev)
        cost = torch.zeros(env.num_envs, device=dev)
        steps = torch.zeros(env.num_envs, device=dev)

        def act(state: SlateState, exclude: torch.Tensor, t: int) -> torch.Tensor:
            nonlocal ou
            noise, ou = self._noise(ou)
            popular = torch.as_tensor(np.asarray(env.is_popular, dtype=bool), device=dev)  # G0 in force now
            return self.policy.act(state, k, "sample", exclude, noise=noise, is_popular=popular)

        def record(step: SlateStep) -> None:
            nonlocal ret, cost, steps
            if step.t == 0:
                shown[:, :n_history] = step.state.history
            shown[:, n_history + step.t * k: n_history + (step.t + 1) * k] = step.slate
            r_t = torch.as_tensor(step.reward, dtype=torch.float32, device=dev)
            c_t = torch.as_tensor(step.info["cost"], dtype=torch.float32, device=dev)
            done = torch.as_tensor(step.terminated | step.truncated, dtype=torch.float32, device=dev)
            a = torch.as_tensor(step.alive, device=dev)
            self.buffer.add(step.state.obs[a], step.slate[a], r_t[a], c_t[a], torch.as_tensor(step.next_obs, device=dev)[a],
                            done[a], shown[a], self.buffer.group_id(env.is_popular))  # G0 in force at s'

            ret += r_t * a
            cost += c_t * a
            steps += a

        run_slate_episodes(env, users, act, dev, on_step=record)
        self._last_users = users
        per_step = float(cost.sum() / steps.sum().clamp(min=1))
        return {"reward": float(ret.mean()), "cost": float(cost.mean()), "cost_per_step": per_step,
                "popular_share": per_step / self.k, "episode_length": float(steps.mean())}

    def deployed_cost_per_step(self, users: np.ndarray) -> float:
        """G0 items per step of the greedy (deployed) policy on ``users``, from its own rollout."""
        if self._deploy_env is None:
            self._deploy_env = self.env_spec.make_vector(self.config.num_envs, mode="train")
        return greedy_cost_per_step(self._deploy_env, self.policy, users, self.k, self.device, self._deploy_generator)

    # ------------------------------------------------------------------------------------ update
    def update(self) -> dict[str, float]:
        cfg, pol, tgt = self.config, self.policy, self.target
        b = self.buffer.sample(cfg.batch_size, self.generator)
        with torch.no_grad():
            # y = r + gamma Q'(s', pi'(s')): the target Wolpertinger slate at s' (table 7-1, line 10)
            exclude = shown_mask(b["next_shown"], self.n_items)
            cap = tgt.cap_for(self.k)
            popular = self.buffer.next_popular(b["next_group"]) if cap_binds(cap, self.k) else None
            cand = tgt.candidates(b["next_obs"], exclude, k_nn=max(self.k_nn, self.k), popular=popular, k_g1=self.k)
            nxt = tgt.select(tgt.candidate_values(b["next_obs"], cand), cand, self.k, cap, popular)
            q_next = tgt.critic.target_value(b["next_obs"], pol.items[nxt.clamp(min=0)])
            q_next = (q_next * (nxt >= 0)[..., None]).sum(1)  # additive slate value [B, 2]
            target = torch.stack([b["reward"], b["cost"]], 1) + cfg.gamma * (1.0 - b["done"])[:, None] * q_next
        q = pol.critic.all(b["obs"], pol.items[b["slate"]]).sum(2)  # Q(s, A) = sum_a Q(s, a); [n_nets, B, 2]
        critic_loss = ((q - target) ** 2).sum(-1).mean(1).sum(0)  # line 11, reward and cost heads, each net
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        # line 12: deterministic policy gradient through the proto-action
        proto = pol.actor(b["obs"])
        q_pi = pol.critic(b["obs"], proto[:, None, :])[:, 0]
        actor_loss = -(q_pi[:, 0] - pol.multiplier * q_pi[:, 1]).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        soft_update(tgt.actor, pol.actor, cfg.tau)
        soft_update(tgt.critic, pol.critic, cfg.tau)
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach())}

    def train_iteration(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        metrics = self.rollout()
        losses = []
        if self.buffer.size >= max(cfg.warmup, cfg.batch_size):
            losses = [self.update() for _ in range(cfg.updates_per_iteration)]
        deployed = metrics["cost_per_step"]  # deploy="sample": the exploring rollout is the deployed policy's
        if cfg.constraint == "expected":
            if self.policy.deploy_mode == "greedy":
                deployed = self.deployed_cost_per_step(self._last_users)
            self.lagrange.update(deployed)  # per-step units: J_C / step vs d = alpha' K
            self._sync_lambda()
        metrics["deployed_popular_share"] = deployed / self.k
        self.iteration = iteration + 1
        metrics.update(cost_limit=float(self.cost_limit_per_step * metrics["episode_length"]), **{"lambda": self.lagrange.item()},
                       critic_loss=float(np.mean([m["critic_loss"] for m in losses])) if losses else float("nan"),
                       actor_loss=float(np.mean([m["actor_loss"] for m in losses])) if losses else float("nan"),
                       buffer_size=float(self.buffer.size), k_nn=float(self.k_nn))
        return metrics


@register_agent("wolpertinger", WolpertingerConfig,
                description="Wolpertinger (Dulac-Arnold et al. 2015): DDPG proto-action + k-NN + critic re-ranking; "
                            "Lagrangian exposure constraint")
def make_wolpertinger(config: WolpertingerConfig, env: EnvSpec, device, seed: int) -> WolpertingerAgent:
    return WolpertingerAgent(config, env, device, seed)
