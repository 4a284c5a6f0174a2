"""Rollouts through a batched slate env (:class:`fcpo.envs.SlateVectorEnv`), and GAE(λ) for reward and cost.

:func:`run_slate_episodes` is the one episode loop every agent and the evaluator use: reset the
given users, then for up to T steps build the :class:`SlateState`, the exclusion mask (items shown
earlier in the episode or in the initial history), ask ``act`` for the slates and step the env;
finished episodes stay masked (``alive``) because autoreset is disabled.

:func:`collect` runs it with a stochastic slate actor and computes advantages following Schulman
et al. 2016 (GAE), separately for reward (γ_r, λ_r) and cost (γ_c, λ_c); the episode ends at
termination or at the horizon (a finite-horizon task: t / T is part of the state, so no bootstrap
after T).

Constraint units: the cost of a step is c_t = number of G0 items in its slate; the limit is the
expected UNdiscounted per-episode cost, E[Σ_t c_t] ≤ α'·K·T_episode (``Batch.cost_limit``, summed
over each episode's own length), i.e. a mean popular share ≤ α'; ``Batch.c`` = J_C − d in those
units.  The discounted sums are kept for logging only.

Groups: ``env.is_popular`` is the G0 in force at each step (dynamic groupings change it).  Before
each step's sampling a capped actor gets it (``set_groups``), and the batch stores the distinct
masks seen (``groups`` [G, n]) with a per-sample version index (``group_index`` [S]), so the
update recomputes log-probabilities under the groups the slate was sampled with
(:meth:`Batch.popular_mask`).  Only contract attributes of the env are read (``horizon``, ``slate_size``, ``n_items``,
``n_history``, ``history``, ``user_rows``, ``env_data``, ``is_popular``, ``item_mask()``,
``episodes_done()``, step info ``cost`` and ``slot_rewards``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from fcpo.policies.base import SlateState, shown_mask


def with_reward_option(env, reward: str | None):
    """``env`` (an :class:`fcpo.envs.EnvSpec`) with its ``reward`` option set to ``reward`` (None: unchanged).

    An env without a ``reward`` option (the simulator pays clicks) keeps its own reward, with a warning."""
    if reward is None:
        return env
    candidate = env.with_options(reward=reward)
    try:
        candidate.make_vector(1, mode="train")
    except TypeError as exc:
        if "reward" not in str(exc):
            raise
        warnings.warn(f"env {env.id} has no 'reward' option; the agent trains on the env's own reward "
                      f"(config reward={reward!r} not applied)", stacklevel=3)
        return env
    return candidate


@dataclass
class SlateStep:
    """One step of :func:`run_slate_episodes`, as passed to ``on_step``."""

    t: int
    state: SlateState  # the state the slate was chosen in
    exclude: torch.Tensor  # bool [E, n_items]: items excluded at this step
    alive: np.ndarray  # bool [E]: episodes still running before the step
    slate: torch.Tensor  # int64 [E, K]
    next_obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict


def run_slate_episodes(env, users: np.ndarray, act: Callable[[SlateState, torch.Tensor, int], torch.Tensor],
                       device: torch.device | str = "cpu", *, steps: int | None = None, seed: int | None = None,
                       extra_exclude: torch.Tensor | None = None, until_done: bool = True,
                       on_step: Callable[[SlateStep], None] | None = None) -> int:
    """Reset sub-env i to user row ``users[i]`` and run ``steps`` (default: the horizon) steps.

    ``act(state, exclude, t) -> LongTensor [E, K]`` picks the slates; ``exclude`` is ``~env.item_mask()``
    OR ``extra_exclude``.  With ``until_done`` the loop stops once every episode has ended.  Returns the
    number of steps run."""
    obs, _ = env.reset(seed=seed, options={"users": np.asarray(users)})
    user_ids = env.env_data.split.user_ids[env.user_rows]
    steps = env.horizon if steps is None else int(steps)
    for t in range(steps):  # over time steps; users are batched
        alive = ~env.episodes_done()
        if until_done and not alive.any():
            return t
        state = SlateState.from_numpy(obs, env.history.copy(), user_ids, device)  # the env updates history in place
        exclude = torch.as_tensor(~env.item_mask(), device=device)
        if extra_exclude is not None:
            exclude = exclude | extra_exclude
        slate = act(state, exclude, t)
        next_obs, reward, term, trunc, info = env.step(slate.cpu().numpy())
        if on_step is not None:
            on_step(SlateStep(t, state, exclude, alive, slate, next_obs, reward, term, trunc, info))
        obs = next_obs
    return steps


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
    groups: torch.Tensor | None = None  # bool [G, n_items]: the distinct G0 masks in force during the rollout
    group_index: torch.Tensor | None = None  # int64 [S]: which of ``groups`` each sample was drawn under
    cost_limit_per_step: float = float("nan")  # α'·K
    # the agent's estimate of the DEPLOYED policy's mean G0 share (expected mode, SlateActorCritic.calibrate_offset);
    # when set, ``c`` is measured on it instead of on this rollout's own cost
    deployed_share: float | None = None

    @property
    def cost_limit(self) -> float:
        """d = α'K · mean episode length: the limit on the undiscounted per-episode cost."""
        return float(self.cost_limit_per_step * self.ep_length.mean())

    @property
    def c(self) -> float:
        """J_C(π) − d in undiscounted per-episode units (> 0: the constraint is violated).  J_C is this
        rollout's mean Σ_t c_t, or, when ``deployed_share`` is set, the deployed policy's estimated cost
        in the same units, deployed_share · K · mean episode length."""
        if self.deployed_share is not None:
            k = self.items.shape[1]
            return float(self.deployed_share * k * self.ep_length.mean()) - self.cost_limit
        return float(self.ep_cost.mean()) - self.cost_limit

    def popular_mask(self, idx: torch.Tensor | None = None) -> torch.Tensor | None:
        """The G0 mask each sample ``idx`` was drawn under: [n] when one grouping was in force for the
        whole rollout (no copy), else [len(idx), n]; None if the batch carries no groups."""
        if self.groups is None:
            return None
        if self.groups.shape[0] == 1:
            return self.groups[0]
        index = self.group_index if idx is None else self.group_index[idx]
        return self.groups[index]

    @property
    def size(self) -> int:
        return int(self.obs.shape[0])

    def exclude_mask(self, idx: torch.Tensor, n_items: int) -> torch.Tensor:
        """Bool [len(idx), n_items]: items shown before each sample's step."""
        return shown_mask(self.shown[idx], n_items)


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
def collect(env, actor, value_r, value_c, users: np.ndarray, device: torch.device,
            gamma_r: float, lam_r: float, gamma_c: float, lam_c: float, alpha_prime: float,
            generator: torch.Generator | None = None, sample_fn=None) -> Batch:
    """Roll out ``users`` (rows of the env's split) once each and compute advantages.

    ``env`` is any :class:`fcpo.envs.SlateVectorEnv` with autoreset disabled and one sub-env per user;
    the cost limit is α'·K per step.  ``sample_fn(obs, exclude) -> (items, action, log_prob)`` replaces
    ``actor.sample`` for policies that sample differently (it should read ``env.is_popular`` for the
    groups of the step).  A capped actor (``slate_cap`` set, or a slate actor with a popular offset)
    gets ``set_groups(env.is_popular)`` before every step's sampling."""
    # an actor whose slates depend on G0 (a cap, or the slate actor's popular offset) follows the groups in force
    capped = hasattr(actor, "set_groups") and (getattr(actor, "slate_cap", None) is not None
                                               or bool(getattr(actor, "group_dependent", False)))
    if sample_fn is None:
        def sample_fn(obs_t, exclude):
            return actor.sample(obs_t, exclude, generator=generator)
    n = env.num_envs
    horizon, k, n_items, n_history = env.horizon, env.slate_size, env.n_items, env.n_history
    n_shown = n_history + k * horizon
    rew = np.zeros((horizon, n))
    cst = np.zeros((horizon, n))
    slot_rew = np.zeros((horizon, n, k))
    slot_cst = np.zeros((horizon, n, k))
    alive = np.zeros((horizon, n), dtype=bool)
    shown = np.full((horizon, n, n_shown), -1, dtype=np.int64)
    shown_now = np.full((n, n_shown), -1, dtype=np.int64)
    obs_steps, acts, items_all, logps = [], [], [], []
    versions: list[np.ndarray] = []  # distinct G0 masks, in order of appearance
    step_version = np.zeros(horizon, dtype=np.int64)

    def act(state, exclude, t):
        groups_now = np.asarray(env.is_popular, dtype=bool)  # the groups in force for this step
        if not versions or not np.array_equal(groups_now, versions[-1]):
            versions.append(groups_now.copy())
            if capped:
                actor.set_groups(groups_now)
        step_version[t] = len(versions) - 1
        items, action, logp = sample_fn(state.obs, exclude)
        slot_cst[t] = groups_now[items.cpu().numpy()]  # this step's cost under the same groups
        obs_steps.append(state.obs)
        acts.append(action)
        items_all.append(items)
        logps.append(logp)
        return items

    def record(step: SlateStep):
        t = step.t
        if t == 0:
            shown_now[:, :n_history] = step.state.history.cpu().numpy()
        alive[t] = step.alive
        shown[t] = shown_now
        rew[t], cst[t], slot_rew[t] = step.reward, step.info["cost"], step.info["slot_rewards"]
        shown_now[:, n_history + k * t: n_history + k * (t + 1)] = step.slate.cpu().numpy()

    horizon_used = run_slate_episodes(env, users, act, device, on_step=record)
    sl = slice(0, horizon_used)
    rew, cst, alive, shown = rew[sl], cst[sl], alive[sl], shown[sl]
    slot_rew, slot_cst = slot_rew[sl], slot_cst[sl]
    obs_t = torch.stack(obs_steps).reshape(horizon_used * n, -1)
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
    cost_limit_per_step = alpha_prime * k
    return Batch(
        obs=obs_t[sel], action=action, items=items, log_prob=torch.stack(logps).reshape(-1)[sel],
        shown=torch.as_tensor(shown.reshape(-1, n_shown)[flat], device=device),
        slot_reward=pick(slot_rew), slot_cost=pick(slot_cst),
        reward=pick(rew), cost=pick(cst), adv_r=pick(adv_r), adv_c=pick(adv_c), ret_r=pick(ret_r), ret_c=pick(ret_c),
        n_episodes=n, ep_reward=(rew * alive).sum(0), ep_cost=(cst * alive).sum(0),
        ep_disc_cost=discounted_sum(cst, alive, gamma_c),
        ep_disc_limit=discounted_sum(np.full_like(cst, cost_limit_per_step), alive, gamma_c),
        ep_length=alive.sum(0), popular_share=float((cst * alive).sum() / max(alive.sum() * k, 1)),
        exposure=exposure,
        groups=torch.as_tensor(np.stack(versions), device=device),
        group_index=torch.as_tensor(np.repeat(step_version[:horizon_used], n)[flat], device=device),
        cost_limit_per_step=float(cost_limit_per_step),
    )


@torch.no_grad()
def greedy_cost_per_step(env, policy, users: np.ndarray, k: int, device, generator=None) -> float:
    """G0 items per step of ``policy``'s greedy (deployed) slates on ``users``, from one rollout of ``env``
    with the groups in force at each step (the Lagrangian agents' estimate of the deployed policy's cost)."""
    cost, steps = torch.zeros((), device=device), torch.zeros((), device=device)

    def act(state, exclude, t):
        popular = torch.as_tensor(np.asarray(env.is_popular, dtype=bool), device=device)
        return policy.act(state, k, "greedy", exclude, generator, is_popular=popular)

    def record(step) -> None:
        nonlocal cost, steps
        alive = torch.as_tensor(step.alive, device=device)
        cost = cost + (torch.as_tensor(step.info["cost"], dtype=torch.float32, device=device) * alive).sum()
        steps = steps + alive.sum()

    run_slate_episodes(env, users, act, device, on_step=record)
    return float(cost / steps.clamp(min=1))
