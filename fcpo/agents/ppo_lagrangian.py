"""PPO-Lagrangian baseline (Ray, Achiam & Amodei 2019, "Benchmarking Safe Exploration in Deep RL";
the clipped surrogate of Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

Same actor, critics and rollouts as FCPO (:mod:`fcpo.agents.cpo`); only the policy update differs.
Each iteration reads top to bottom:

1. roll out the training users (all, or a sampled fraction) with the current stochastic actor
   (:func:`fcpo.agents.rollout.collect`); GAE(λ) advantages for reward and cost;
2. one projected dual-ascent step per constraint i on the measured J_{C_i} (Ray et al. alg. 1;
   OmniSafe's ``PPOLag``)::

       λ_i ← max(0, λ_i + lr_λ (J_{C_i}(π_k) − d_i))

   with J_C and d in the per-episode discounted units FCPO uses: J_C = mean over episodes of
   Σ_t γ_c^t c_t (``batch.ep_disc_cost``), d = mean over episodes of Σ_t γ_c^t α'K
   (``batch.ep_disc_limit``).  The multiplier is updated *before* the policy step, so the
   policy update of iteration k already uses λ_{k+1} (as in Ray et al. and OmniSafe);
3. several epochs of minibatch Adam on PPO's clipped surrogate of the normalised Lagrangian
   advantage (Ray et al. / OmniSafe)::

       A = (A_R − Σ_i λ_i A_{C_i}) / (1 + Σ_i λ_i)
       L = − E[ min(ρ A, clip(ρ, 1 − ε, 1 + ε) A) ],     ρ = π_θ(a|s) / π_old(a|s)

   reward advantages standardised, cost advantages centred only (Ray et al.'s buffer; set
   ``standardise_cost_advantages`` to rescale them too).  With ``slot_credit`` (FCPO's default)
   ratios and advantages are per slot ([S, K], :func:`fcpo.agents.rollout.slot_advantages`),
   each slot clipped on its own and the K clipped terms summed.  Optional early stop of the
   epochs when the approximate KL of a minibatch exceeds 1.5 · ``target_kl`` (Spinning Up);
4. minibatch Adam on both critics towards their GAE returns (as FCPO).

Several constraints.  The multipliers are vectors over named constraints
(:class:`fcpo.solvers.Constraints`: names, limits, values), so the dual step and the Lagrangian
advantage handle any number m.  Today only one is wired end to end: ``popular_exposure`` (the
number of G0 items in the slate, ``info["cost"]``, limit α'·K per step).  The config already takes
more as ``extra_constraints = [[name, limit per step], ...]``, but the agent refuses them
(``NotImplementedError``) until the rollout carries them.  Wiring a second cost means: read it
from ``info["costs"][name]`` in :func:`fcpo.agents.rollout.collect` (the vector env already
reports named costs there), give it its own cost critic and GAE (``adv_c``, ``ret_c``,
``ep_disc_cost``, ``ep_disc_limit`` per constraint, plus its per-slot split if ``slot_credit``),
and stack it in :meth:`PPOLagrangianAgent._constraint_data`; the rest of this module is already
vectorised over constraints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from fcpo.agents.base import register_agent
from fcpo.agents.actor_critic import SlateActorCritic
from fcpo.agents.lagrangian import LagrangeMultiplier
from fcpo.agents.rollout import Batch, slot_advantages
from fcpo.envs.config import FairEnvConfig
from fcpo.envs.movielens_fair import COST_NAME
from fcpo.policies.actor import MODES
from fcpo.solvers import Constraints, process_advantages

#: early stop when the approximate KL of a minibatch exceeds this multiple of ``target_kl`` (Spinning Up)
KL_STOP_FACTOR = 1.5
#: the constraints the rollout carries today (see the module docstring for wiring another)
WIRED_CONSTRAINTS = (COST_NAME,)


@dataclass
class PPOLagrangianConfig:
    """Hyper-parameters of PPO-Lagrangian.  Actor, critics and rollout fields mean what they mean in
    :class:`fcpo.agents.cpo.FCPOConfig` (same defaults); the PPO and multiplier defaults follow
    Ray et al. 2019 / OmniSafe where they transfer, else ours (marked)."""

    alpha_prime: float = 1.0  # α': at most α'·K G0 items per slate -- the "popular_exposure" limit
    # further constraints as [name, limit per step] pairs (costs from info["costs"][name]); accepted
    # and validated here, refused by the agent until the rollout carries them (module docstring)
    extra_constraints: list = field(default_factory=list)
    actor_mode: str = "gaussian"  # "gaussian" | "softmax"
    users_per_iteration: float = 1.0
    gamma_r: float = 0.9
    gamma_c: float = 0.9
    lam_r: float = 0.95
    lam_c: float = 0.95
    hidden: int = 64
    critic_hidden: int = 128
    init_std: float = 0.3
    temperature: float = 0.1
    slot_credit: bool = True
    popularity_feature: float = 3.0
    # PPO
    clip: float = 0.2  # ε of the clipped surrogate (Schulman et al. 2017)
    epochs: int = 10  # passes over the batch per iteration (ours; a rollout is ~2-10k samples)
    minibatch_size: int = 512  # ours
    # actor Adam step (ours; Ray et al. use 3e-4, which spends the KL budget of the 165-dim Gaussian
    # head in 1-2 minibatch steps -- smaller steps average over more of the batch)
    lr: float = 1e-4
    target_kl: float | None = 0.02  # early stop at 1.5·target_kl; None = never stop early
    max_grad_norm: float | None = None  # clip the actor gradient norm; None = no clipping
    standardise_cost_advantages: bool = False  # Ray et al. centre cost advantages only
    # Lagrange multipliers (one per constraint)
    lagrange_lr: float = 0.05  # in 1 / (per-episode discounted cost); ours
    lagrange_init: float = 0.0
    lagrange_max: float | None = None  # optional cap on every λ_i; None = no cap
    # critics (as FCPO)
    critic_lr: float = 3e-3
    critic_epochs: int = 3
    critic_batch: int = 1024

    def __post_init__(self):
        if not 0.0 < self.alpha_prime <= 1.0:
            raise ValueError(f"alpha_prime (--alpha) must lie in (0, 1], got {self.alpha_prime!r}")
        if self.actor_mode not in MODES:
            raise ValueError(f"actor_mode must be one of {MODES}, got {self.actor_mode!r}")
        if not 0.0 < self.users_per_iteration <= 1.0:
            raise ValueError(f"users_per_iteration must lie in (0, 1], got {self.users_per_iteration!r}")
        for name in ("gamma_r", "gamma_c", "lam_r", "lam_c"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("epochs", "minibatch_size", "critic_epochs", "critic_batch", "hidden", "critic_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("clip", "lr", "critic_lr", "init_std", "temperature"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("target_kl", "max_grad_norm", "lagrange_max"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if not (math.isfinite(self.lagrange_lr) and self.lagrange_lr >= 0):
            raise ValueError(f"lagrange_lr must be >= 0, got {self.lagrange_lr!r}")
        if not (math.isfinite(self.lagrange_init) and self.lagrange_init >= 0):
            raise ValueError(f"lagrange_init must be >= 0, got {self.lagrange_init!r}")
        if self.lagrange_max is not None and self.lagrange_init > self.lagrange_max:
            raise ValueError(f"lagrange_init {self.lagrange_init!r} exceeds lagrange_max {self.lagrange_max!r}")
        self.extra_constraints = _check_extra_constraints(self.extra_constraints)

    def constraint_names(self) -> tuple[str, ...]:
        return (COST_NAME, *(name for name, _ in self.extra_constraints))

    def limits_per_step(self, slate_size: int) -> list[float]:
        """d per step for every constraint: α'·K for popular_exposure, then the extra limits."""
        return [self.alpha_prime * slate_size, *(limit for _, limit in self.extra_constraints)]


def _check_extra_constraints(pairs) -> list:
    """``[[name, limit], ...]`` (lists, so the config stays YAML-safe); names unique and not the built-in one."""
    if pairs is None:
        return []
    if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__iter__"):
        raise ValueError(f"extra_constraints must be a list of [name, limit per step] pairs, got {pairs!r}")
    out, seen = [], {COST_NAME}
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ValueError(f"extra_constraints: expected a [name, limit per step] pair, got {pair!r}")
        name, limit = pair
        if not isinstance(name, str) or not name:
            raise ValueError(f"extra_constraints: constraint name must be a non-empty string, got {name!r}")
        if name == COST_NAME:
            raise ValueError(f"extra_constraints: {COST_NAME!r} is built in; set its limit with alpha_prime")
        if name in seen:
            raise ValueError(f"extra_constraints: duplicate constraint name {name!r}")
        try:
            limit = float(limit)
        except (TypeError, ValueError):
            raise ValueError(f"extra_constraints: limit of {name!r} must be a number, got {limit!r}") from None
        if not math.isfinite(limit):
            raise ValueError(f"extra_constraints: limit of {name!r} must be finite, got {limit!r}")
        seen.add(name)
        out.append([name, limit])
    return out


# --------------------------------------------------------------------------------------- pure pieces
def lagrange_update(multiplier: LagrangeMultiplier, constraints: Constraints) -> torch.Tensor:
    """One projected ascent step λ_i ← max(0, λ_i + lr (J_{C_i} − d_i)) (capped at ``max_value`` if set).

    ``constraints.limits`` may change between iterations (d is the discounted sum of the per-step limit
    over each rollout's own episode lengths), so the multiplier takes this iteration's d before stepping."""
    if len(constraints) != multiplier.n_constraints:
        raise ValueError(f"{multiplier.n_constraints} multiplier(s) but {len(constraints)} constraint(s) "
                         f"({', '.join(constraints.names)})")
    multiplier.limit = constraints.limits.to(multiplier.limit.device, torch.float64).clone()
    return multiplier.update(constraints.values)


def lagrangian_advantage(adv_r: torch.Tensor, adv_c: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(A_R − Σ_i λ_i A_{C_i}) / (1 + Σ_i λ_i): ``adv_r`` [...], ``adv_c`` [m, ...], ``lam`` [m] (≥ 0).

    The normalisation keeps the advantage's scale bounded as λ grows (Ray et al. 2019; OmniSafe)."""
    lam = torch.as_tensor(lam, dtype=adv_r.dtype, device=adv_r.device).reshape(-1)
    if adv_c.shape[0] != lam.numel() or adv_c.shape[1:] != adv_r.shape:
        raise ValueError(f"adv_c must be [m={lam.numel()}, *{tuple(adv_r.shape)}], got {tuple(adv_c.shape)}")
    penalty = (lam.reshape(-1, *([1] * adv_r.dim())) * adv_c).sum(dim=0)
    return (adv_r - penalty) / (1.0 + lam.sum())


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float):
    """PPO's clipped objective E[min(ρA, clip(ρ, 1−ε, 1+ε)A)] (to maximise), the fraction of clipped terms,
    and the approximate KL(π_old‖π_θ) ≈ E[(ρ − 1) − log ρ] of the whole action.  ``logp``, ``old_logp``
    and ``adv`` are [B] or per slot [B, K] (each slot clipped on its own, the K terms summed)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    surr = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    with torch.no_grad():
        clipped = ((ratio - 1.0).abs() > clip).float().mean()
        lr_full = log_ratio.sum(dim=1) if log_ratio.dim() == 2 else log_ratio
        approx_kl = (torch.expm1(lr_full) - lr_full).mean()
    objective = surr.sum(dim=1).mean() if surr.dim() == 2 else surr.mean()
    return objective, clipped, approx_kl


# --------------------------------------------------------------------------------------- agent
class PPOLagrangianAgent(SlateActorCritic):
    """PPO-Lagrangian over the MovieLens fairness env (see the module docstring)."""

    name = "ppo-lagrangian"

    def __init__(self, config: PPOLagrangianConfig, env_config: FairEnvConfig, device: torch.device | str = "cpu",
                 seed: int = 0):
        unwired = [n for n in config.constraint_names() if n not in WIRED_CONSTRAINTS]
        if unwired:
            raise NotImplementedError(
                f"constraint(s) {unwired} are not wired into the rollout yet: only {list(WIRED_CONSTRAINTS)} is. "
                "Read the cost from info['costs'][name] in fcpo.agents.rollout.collect and give it a cost critic "
                "(see fcpo.agents.ppo_lagrangian's module docstring)")
        super().__init__(config, env_config, device, seed)
        self.opt_pi = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=config.lr)
        self.constraint_names = config.constraint_names()
        self.limits_per_step = config.limits_per_step(self.slate_size)
        self.cost_limit_per_step = self.limits_per_step[0]
        self.lagrange = LagrangeMultiplier(self.limits_per_step, lr=config.lagrange_lr, init=config.lagrange_init,
                                           max_value=config.lagrange_max, device=self.device)

    # ------------------------------------------------------------------ iteration
    def train_iteration(self, iteration: int) -> dict[str, float]:
        batch = self.rollout()
        constraints, adv_c, slot_c = self._constraint_data(batch)
        lam = lagrange_update(self.lagrange, constraints)
        stats = self._policy_update(batch, adv_c, slot_c, lam)
        stats.update(self._critic_update(batch))
        stats.update(self.rollout_stats(batch), c=float(constraints.c[0]))
        stats["lambda"] = float(lam[0])  # popular_exposure's multiplier
        if len(self.constraint_names) > 1:
            stats.update({f"lambda_{n}": float(v) for n, v in zip(self.constraint_names, lam)})
        return stats

    def _constraint_data(self, batch: Batch):
        """This rollout's :class:`Constraints` (J_C and d per constraint, per-episode discounted), the cost
        advantages [m, S] and per-slot costs [m, S, K].  Only popular_exposure today (module docstring)."""
        constraints = Constraints((COST_NAME,), torch.tensor([float(np.mean(batch.ep_disc_limit))], dtype=torch.float64),
                                  torch.tensor([float(np.mean(batch.ep_disc_cost))], dtype=torch.float64))
        return constraints, batch.adv_c.unsqueeze(0), batch.slot_cost.unsqueeze(0)

    def _advantages(self, batch: Batch, adv_c: torch.Tensor, slot_c: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """The normalised Lagrangian advantage, [S] or per slot [S, K]."""
        cfg = self.config
        a_r = process_advantages(batch.adv_r, centre=True, rescale=True)
        a_c = torch.stack([process_advantages(a, centre=True, rescale=cfg.standardise_cost_advantages) for a in adv_c])
        if cfg.slot_credit:
            a_r = slot_advantages(a_r, batch.slot_reward)
            a_r = a_r / (a_r.std() + 1e-8)
            a_c = torch.stack([slot_advantages(a, s) for a, s in zip(a_c, slot_c)])
            if cfg.standardise_cost_advantages:
                a_c = a_c / (a_c.flatten(1).std(dim=1).reshape(-1, 1, 1) + 1e-8)
        return lagrangian_advantage(a_r, a_c, lam.to(a_r.dtype))

    def _policy_update(self, batch: Batch, adv_c: torch.Tensor, slot_c: torch.Tensor,
                       lam: torch.Tensor) -> dict[str, float]:
        cfg, policy = self.config, self.policy
        exclude = batch.exclude_mask(torch.arange(batch.size, device=self.device), policy.n_items) \
            if policy.mode == "softmax" else None
        adv = self._advantages(batch, adv_c, slot_c, lam)
        with torch.no_grad():
            old_logp = policy.action_log_prob(batch.obs, batch.action, exclude, per_slot=cfg.slot_credit)
            old_full = policy.old_stats(batch.obs, exclude)
        params = [p for p in policy.parameters() if p.requires_grad]
        policy.train()
        losses, clip_fracs, steps, stopped = [], [], 0, False
        epochs_run = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(batch.size, device=self.device, generator=self.generator)
            for start in range(0, batch.size, cfg.minibatch_size):
                idx = perm[start:start + cfg.minibatch_size]
                logp = policy.action_log_prob(batch.obs[idx], batch.action[idx],
                                              None if exclude is None else exclude[idx], per_slot=cfg.slot_credit)
                objective, clipped, approx_kl = clipped_surrogate(logp, old_logp[idx], adv[idx], cfg.clip)
                if cfg.target_kl is not None and float(approx_kl) > KL_STOP_FACTOR * cfg.target_kl:
                    stopped = True
                    break
                loss = -objective
                self.opt_pi.zero_grad()
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.opt_pi.step()
                losses.append(float(loss.detach()))
                clip_fracs.append(float(clipped))
                steps += 1
            if stopped:
                break
            epochs_run += 1
        policy.eval()
        with torch.no_grad():
            kl = float(policy.kl_from(batch.obs, old_full, exclude))
        return {"kl": kl, "policy_loss": float(np.mean(losses)) if losses else float("nan"),
                "clip_fraction": float(np.mean(clip_fracs)) if clip_fracs else 0.0,
                "policy_steps": float(steps), "policy_epochs": float(epochs_run), "early_stop": float(stopped)}

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """The shared parts (networks, critic optimisers, RNGs) plus the policy optimiser and multipliers;
        tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back."""
        return {**super().state_dict(), "opt_pi": self.opt_pi.state_dict(), "lagrange": self.lagrange.state_dict(),
                "constraint_names": list(self.constraint_names)}

    def load_state_dict(self, state: dict) -> None:
        names = tuple(state.get("constraint_names", self.constraint_names))
        if names != tuple(self.constraint_names):
            raise ValueError(f"checkpoint has constraints {list(names)}, this agent {list(self.constraint_names)}")
        super().load_state_dict(state)
        self.opt_pi.load_state_dict(state["opt_pi"])
        self.lagrange.load_state_dict(state["lagrange"])


def make_ppo_lagrangian(config: PPOLagrangianConfig, env_config: FairEnvConfig, device, seed: int) -> PPOLagrangianAgent:
    return PPOLagrangianAgent(config, env_config, device, seed)


register_agent("ppo-lagrangian", PPOLagrangianConfig, make_ppo_lagrangian,
               "PPO-Lagrangian: FCPO's actor-critic trained by clipped PPO on the Lagrangian advantage")
