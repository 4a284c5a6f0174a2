"""Rollouts of a slate actor through the batched env, and GAE(λ) for reward and cost.

One call rolls out a set of users (all, or a sampled fraction) in parallel for
up to T steps through :class:`~fcpo.envs.MovieLensFairVectorEnv` with autoreset
disabled; finished episodes are masked out.  Advantages follow Schulman et al.
2016 (GAE), computed separately for reward (γ_r, λ_r) and cost (γ_c, λ_c); the
episode ends at termination or at the horizon (a finite-horizon task: t / T is
part of the state, so no bootstrap after T).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fcpo.envs.vector import MovieLensFairVectorEnv


@dataclass
class Batch:
    """Flat samples of one rollout (only steps of live episodes), on the agent's device."""

    obs: torch.Tensor  # [S, obs_dim]
    action: torch.Tensor  # [S, ...] W (gaussian) or item ids (softmax)
    items: torch.Tensor  # [S, K]
    log_prob: torch.Tensor  # [S]
    shown: torch.Tensor  # [S, n_shown] item ids shown before this step (-1 = padding)
    reward: torch.Tensor  # [S]
    cost: torch.Tensor  # [S]
    adv_r: torch.Tensor
    adv_c: torch.Tensor
    slot_reward: torch.Tensor  # [S, K] the part of the step reward each slot earned
    slot_cost: torch.Tensor  # [S, K] 1 where the slot held a G0 item
    ret_r: torch.Tensor
    ret_c: torch.Tensor
    n_episodes: int
    ep_reward: np.ndarray  # undiscounted per-episode reward
    ep_cost: np.ndarray  # undiscounted per-episode cost
    ep_disc_cost: np.ndarray  # Σ_t γ_c^t c_t per episode
    ep_disc_limit: np.ndarray  # Σ_t γ_c^t (α' K) per episode (the limit over the episode's own length)
    ep_length: np.ndarray
    popular_share: float
    exposure: np.ndarray  # item exposure counts of the rollout

    @property
    def size(self) -> int:
        return int(self.obs.shape[0])

    def exclude_mask(self, idx: torch.Tensor, n_items: int) -> torch.Tensor:
        """Bool [len(idx), n_items]: items shown before each sample's step."""
        shown = self.shown[idx]
        mask = torch.zeros(shown.shape[0], n_items + 1, dtype=torch.bool, device=shown.device)
        mask.scatter_(1, torch.where(shown < 0, n_items, shown), True)
        return mask[:, :n_items]


def slot_advantages(step_adv: torch.Tensor, slot_values: torch.Tensor) -> torch.Tensor:
    """Per-slot credit: A_{t,j} = x_{t,j} - x_t / K + A_t / K, where x_{t,j} is what slot j earned
    (a hit, a G0 item) and x_t = Σ_j x_{t,j}.  Slots sum back to the step advantage A_t; each slot's
    own outcome is no longer drowned in the other K - 1 slots' noise."""
    k = slot_values.shape[1]
    return slot_values - slot_values.sum(dim=1, keepdim=True) / k + step_adv[:, None] / k


def gae(rewards: np.ndarray, values: np.ndarray, alive: np.ndarray, gamma: float, lam: float):
    """GAE(λ) over [T, E] arrays; ``alive[t]`` marks live steps; V after the last live step is 0."""
    t_max = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1])
    for t in reversed(range(t_max)):  # over time steps, vectorised over users
        next_alive = alive[t + 1] if t + 1 < t_max else np.zeros_like(alive[t])
        next_v = np.where(next_alive, values[t + 1] if t + 1 < t_max else 0.0, 0.0)
        delta = rewards[t] + gamma * next_v - values[t]
        last = np.where(alive[t], delta + gamma * lam * np.where(next_alive, last, 0.0), 0.0)
        adv[t] = last
    return adv, adv + values


def discounted_sum(x: np.ndarray, alive: np.ndarray, gamma: float) -> np.ndarray:
    """Σ_t γ^t x_t over live steps, per column of [T, E]."""
    disc = gamma ** np.arange(x.shape[0])[:, None]
    return (disc * x * alive).sum(axis=0)


@torch.no_grad()
def collect(env: MovieLensFairVectorEnv, actor, value_r, value_c, users: np.ndarray, device: torch.device,
            gamma_r: float, lam_r: float, gamma_c: float, lam_c: float, alpha_prime: float,
            generator: torch.Generator | None = None, sample_fn=None) -> Batch:
    """Roll out ``users`` (rows of the env's split) once each and compute advantages.

    ``env`` is any batched fcpo env with autoreset disabled whose step info carries ``cost`` and
    ``slot_rewards`` (the replay env and the simulator).  ``sample_fn(obs, exclude) -> (items, action,
    log_prob)`` replaces ``actor.sample`` for policies that sample differently."""
    if sample_fn is None:
        def sample_fn(obs_t, exclude):
            return actor.sample(obs_t, exclude, generator=generator)
    n = env.num_envs
    obs, _ = env.reset(options={"users": users})
    horizon, k, n_items = env.core.horizon, env.core.k, env.core.n_items
    n_shown = env.core.n_hist + k * horizon
    obs_buf = np.zeros((horizon, n, obs.shape[1]), np.float32)
    rew = np.zeros((horizon, n))
    cst = np.zeros((horizon, n))
    slot_rew = np.zeros((horizon, n, k))
    slot_cst = np.zeros((horizon, n, k))
    alive = np.zeros((horizon, n), dtype=bool)
    shown = np.full((horizon, n, n_shown), -1, dtype=np.int64)
    shown_now = np.full((n, n_shown), -1, dtype=np.int64)
    shown_now[:, :env.core.n_hist] = env.core.history
    acts, items_all, logps = [], [], []
    done = np.zeros(n, dtype=bool)
    for t in range(horizon):  # over time steps; users are batched
        alive[t] = ~done
        obs_buf[t] = obs
        shown[t] = shown_now
        exclude = torch.as_tensor(~env.action_masks(), device=device)
        items, action, logp = sample_fn(torch.as_tensor(obs, device=device), exclude)
        items_np = items.cpu().numpy()
        slot_cst[t] = env.grouping.is_popular[items_np]  # the groups in force for this step's cost
        obs, r, term, trunc, info = env.step(items_np)
        rew[t], cst[t], slot_rew[t] = r, info["cost"], info["slot_rewards"]
        shown_now[:, env.core.n_hist + k * t: env.core.n_hist + k * (t + 1)] = items_np
        acts.append(action)
        items_all.append(items)
        logps.append(logp)
        done = done | term | trunc
        if done.all():
            horizon_used = t + 1
            break
    else:
        horizon_used = horizon
    sl = slice(0, horizon_used)
    obs_buf, rew, cst, alive, shown = obs_buf[sl], rew[sl], cst[sl], alive[sl], shown[sl]
    slot_rew, slot_cst = slot_rew[sl], slot_cst[sl]
    obs_t = torch.as_tensor(obs_buf.reshape(-1, obs_buf.shape[-1]), device=device)
    v_r = value_r(obs_t).cpu().numpy().reshape(horizon_used, n)
    v_c = value_c(obs_t).cpu().numpy().reshape(horizon_used, n)
    adv_r, ret_r = gae(rew, v_r, alive, gamma_r, lam_r)
    adv_c, ret_c = gae(cst, v_c, alive, gamma_c, lam_c)
    flat = alive.reshape(-1)
    sel = torch.as_tensor(np.flatnonzero(flat), device=device)

    def pick(x):
        return torch.as_tensor(x.reshape(-1, *x.shape[2:])[flat], device=device, dtype=torch.float32)

    action = torch.stack(acts).reshape(-1, *acts[0].shape[1:])[sel]
    items = torch.stack(items_all).reshape(-1, k)[sel]
    exposure = np.bincount(items.cpu().numpy().ravel(), minlength=n_items)
    limit_per_step = alpha_prime * k
    return Batch(
        obs=obs_t[sel], action=action, items=items, log_prob=torch.stack(logps).reshape(-1)[sel],
        shown=torch.as_tensor(shown.reshape(-1, n_shown)[flat], device=device),
        slot_reward=pick(slot_rew), slot_cost=pick(slot_cst),
        reward=pick(rew), cost=pick(cst), adv_r=pick(adv_r), adv_c=pick(adv_c), ret_r=pick(ret_r), ret_c=pick(ret_c),
        n_episodes=n, ep_reward=(rew * alive).sum(0), ep_cost=(cst * alive).sum(0),
        ep_disc_cost=discounted_sum(cst, alive, gamma_c),
        ep_disc_limit=discounted_sum(np.full_like(cst, limit_per_step), alive, gamma_c),
        ep_length=alive.sum(0), popular_share=float((cst * alive).sum() / max(alive.sum() * k, 1)),
        exposure=exposure,
    )
