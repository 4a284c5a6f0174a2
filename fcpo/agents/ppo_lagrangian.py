"""PPO-Lagrangian baseline (Ray, Achiam & Amodei 2019, "Benchmarking Safe Exploration in Deep RL";
the clipped surrogate of Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

Same actor, critics and rollouts as FCPO (:mod:`fcpo.agents.cpo`); only the policy update differs.
Each iteration reads top to bottom:

1. roll out the training users (all, or a sampled fraction) with the current stochastic actor
   (:func:`fcpo.agents.rollout.collect`); GAE(λ) advantages for reward and cost;
2. one projected dual-ascent step per constraint i on the measured J_{C_i} (Ray et al. alg. 1;
   OmniSafe's ``PPOLag``)::

       λ_i ← max(0, λ_i + lr_λ (J_{C_i}(π_k) − d_i))

   with J_C and d in the units FCPO uses, the UNdiscounted per-episode cost: J_C = mean over
   episodes of Σ_t c_t (``batch.ep_cost``), d = α'K × mean episode length (``batch.cost_limit``).  The multiplier is updated *before* the policy step, so the
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

Constraint modes (``constraint``): ``per-slate`` (default) caps every slate of the actor at ⌊α'K⌋
G0 items (the multiplier then stays at 0 since J_C ≤ d) and the deployed policy is greedy;
``expected`` is the Lagrangian CMDP above, and the deployed policy is the sampled one that was
trained (see :mod:`fcpo.agents.cpo`).  With ``calibrate_offset`` (the default; ``False``
gives the plain Lagrangian baseline) J_C is the estimated cost of the deployed policy and the
policy is projected onto the constraint after every update by the popular-group offset
(:mod:`fcpo.agents.actor_critic`), so the multiplier mostly stays at 0.

Several constraints.  The multiplier step and the Lagrangian advantage are vectorised over m
named constraints (:class:`fcpo.solvers.Constraints`); the agent wires one, ``popular_exposure``
(the number of G0 items in the slate, ``info["cost"]``, limit α'·K per step).
"""
from __future__ import annotations

import math
from dataclasses import InitVar, dataclass

import numpy as np
import torch

from fcpo.agents.actor_critic import RolloutConfig, SlateActorCritic, _positive, _positive_int
from fcpo.agents.base import param, register_agent
from fcpo.agents.lagrangian import LagrangeMultiplier
from fcpo.agents.ppo import KL_STOP_FACTOR, clipped_surrogate, ppo_clip_epochs  # noqa: F401 (re-exported)
from fcpo.agents.rollout import Batch, slot_advantages
from fcpo.envs.contract import EnvSpec
from fcpo.solvers import Constraints, process_advantages

#: the one constraint the agent wires: G0 items per slate (``info["cost"]``)
COST_NAME = "popular_exposure"


@dataclass
class PPOLagrangianConfig(RolloutConfig):
    """Hyper-parameters of PPO-Lagrangian.  Actor, critic and rollout fields come from
    :class:`fcpo.agents.actor_critic.RolloutConfig` (FCPO's defaults unless overridden here); the PPO
    and multiplier defaults follow Ray et al. 2019 / OmniSafe where they transfer, else ours (marked)."""

    # kept from before the shared config: a weaker popularity column than FCPO's 6.0 (tuned for PPO's steps)
    popularity_feature: float = param(3.0, "scale of the standardised log-popularity item column (0 = no column)")
    # kept from before the shared config: more, smaller critic minibatches than FCPO (one rollout feeds 10 epochs)
    critic_epochs: int = param(3, "passes of critic fitting over each rollout")
    critic_batch: int = param(1024, "critic minibatch size")
    clip: float = param(0.2, "ε of the clipped surrogate (Schulman et al. 2017)")
    epochs: int = param(10, "PPO passes over the batch per iteration (ours; a rollout is ~2-10k samples)")
    minibatch_size: int = param(512, "PPO minibatch size (ours)")
    lr: float = param(1e-4, "actor Adam step size (ours; Ray et al.'s 3e-4 spends the KL budget in 1-2 steps)")
    target_kl: float | None = param(0.02, "stop the epochs when a minibatch's approx. KL exceeds 1.5 x this; None = never")
    max_grad_norm: float | None = param(None, "clip the actor gradient norm; None = no clipping")
    standardise_cost_advantages: bool = param(False, "rescale cost advantages too (Ray et al. centre them only)")
    lagrange_lr: float = param(0.05, "step size of the multiplier, in 1 / (per-episode G0 count); ours")
    lagrange_init: float = param(0.0, "initial Lagrange multiplier")
    lagrange_max: float | None = param(None, "cap on the multiplier; None = no cap")
    extra_constraints: InitVar[list | None] = None  # removed option: accepted empty (old run configs), else an error

    def __post_init__(self, extra_constraints=None):
        super().__post_init__()
        if extra_constraints:
            raise ValueError("PPOLagrangianConfig: extra_constraints was removed (only popular_exposure is wired); "
                             f"drop it from the config, got {extra_constraints!r}")
        _positive_int(self, "epochs", "minibatch_size")
        _positive(self, "clip", "lr")
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


def lagrangian_advantage(adv_r: torch.Tensor, adv_c: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
    """(A_R − Σ_i λ_i A_{C_i}) / (1 + Σ_i λ_i): ``adv_r`` [...], ``adv_c`` [m, ...], ``multiplier`` λ [m] (≥ 0).

    The normalisation keeps the advantage's scale bounded as λ grows (Ray et al. 2019; OmniSafe)."""
    multiplier = torch.as_tensor(multiplier, dtype=adv_r.dtype, device=adv_r.device).reshape(-1)
    if adv_c.shape[0] != multiplier.numel() or adv_c.shape[1:] != adv_r.shape:
        raise ValueError(f"adv_c must be [m={multiplier.numel()}, *{tuple(adv_r.shape)}], got {tuple(adv_c.shape)}")
    penalty = (multiplier.reshape(-1, *([1] * adv_r.dim())) * adv_c).sum(dim=0)
    return (adv_r - penalty) / (1.0 + multiplier.sum())


# --------------------------------------------------------------------------------------- agent
class PPOLagrangianAgent(SlateActorCritic):
    """PPO-Lagrangian over any slate env (see the module docstring)."""

    name = "ppo-lagrangian"
    _checkpointed = SlateActorCritic._checkpointed + ("opt_pi", "lagrange")

    def __init__(self, config: PPOLagrangianConfig, env: EnvSpec, device: torch.device | str = "cpu", seed: int = 0):
        super().__init__(config, env, device, seed)
        self.opt_pi = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=config.lr)
        self.lagrange = LagrangeMultiplier([self.cost_limit_per_step], lr=config.lagrange_lr, init=config.lagrange_init,
                                           max_value=config.lagrange_max, device=self.device)

    # ------------------------------------------------------------------ iteration
    def train_iteration(self, iteration: int) -> dict[str, float]:
        self.begin_iteration()  # expected mode: the first projection onto the deployed-cost constraint
        batch = self.rollout()
        # J_C: the rollout's cost, or in expected mode the deployed policy's estimated cost (Batch.c)
        cost = float(np.mean(batch.ep_cost)) if batch.deployed_share is None else batch.c + batch.cost_limit
        constraints = Constraints((COST_NAME,), torch.tensor([batch.cost_limit], dtype=torch.float64),
                                  torch.tensor([cost], dtype=torch.float64))
        multiplier = lagrange_update(self.lagrange, constraints)
        stats = self._policy_update(batch, multiplier)
        stats.update(self._critic_update(batch))
        stats.update(self.rollout_stats(batch), c=float(constraints.c[0]))
        stats["lambda"] = float(multiplier[0])  # popular_exposure's multiplier (log key kept)
        self.end_iteration(iteration, stats)  # expected mode: project the updated policy (calibrate_offset)
        return stats

    def _advantages(self, batch: Batch, multiplier: torch.Tensor) -> torch.Tensor:
        """The normalised Lagrangian advantage, [S] or per slot [S, K]."""
        cfg = self.config
        a_r = process_advantages(batch.adv_r, centre=True, rescale=True)
        a_c = process_advantages(batch.adv_c, centre=True, rescale=cfg.standardise_cost_advantages).unsqueeze(0)
        if cfg.slot_credit:
            a_r = slot_advantages(a_r, batch.slot_reward)
            a_r = a_r / (a_r.std() + 1e-8)
            a_c = slot_advantages(a_c[0], batch.slot_cost).unsqueeze(0)
            if cfg.standardise_cost_advantages:
                a_c = a_c / (a_c.flatten(1).std(dim=1).reshape(-1, 1, 1) + 1e-8)
        return lagrangian_advantage(a_r, a_c, multiplier.to(a_r.dtype))

    def _policy_update(self, batch: Batch, multiplier: torch.Tensor) -> dict[str, float]:
        cfg, policy = self.config, self.policy
        exclude = batch.exclude_mask(torch.arange(batch.size, device=self.device), policy.n_items) \
            if policy.mode == "softmax" else None
        capped_softmax = policy.mode == "softmax" and policy.cap_active(policy.k)
        adv = self._advantages(batch, multiplier)
        with torch.no_grad():
            old_logp = policy.action_log_prob(batch.obs, batch.action, exclude, per_slot=cfg.slot_credit,
                                              is_popular=batch.popular_mask() if capped_softmax else None)
            old_full = policy.old_stats(batch.obs, exclude)
        params = [p for p in policy.parameters() if p.requires_grad]

        def log_prob(idx):
            return policy.action_log_prob(batch.obs[idx], batch.action[idx], None if exclude is None else exclude[idx],
                                          per_slot=cfg.slot_credit,
                                          is_popular=batch.popular_mask(idx) if capped_softmax else None)

        policy.train()
        stats = ppo_clip_epochs(log_prob, old_logp, adv, self.opt_pi, epochs=cfg.epochs,
                                minibatch_size=cfg.minibatch_size, clip=cfg.clip, generator=self.generator,
                                params=params, target_kl=cfg.target_kl, max_grad_norm=cfg.max_grad_norm)
        policy.eval()
        with torch.no_grad():
            stats["kl"] = float(policy.kl_from(batch.obs, old_full, exclude))
        return stats


@register_agent("ppo-lagrangian", PPOLagrangianConfig,
                description="PPO-Lagrangian: FCPO's actor-critic trained by clipped PPO on the Lagrangian advantage")
def make_ppo_lagrangian(config: PPOLagrangianConfig, env: EnvSpec, device, seed: int) -> PPOLagrangianAgent:
    return PPOLagrangianAgent(config, env, device, seed)
