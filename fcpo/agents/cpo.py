"""FCPO (Ge et al., WSDM 2021): an actor-critic recommender trained by CPO (Achiam et al. 2017).

Each iteration reads top to bottom:

1. roll out the training users (all, or a sampled fraction) through the batched
   env with the current stochastic actor (:func:`fcpo.agents.rollout.collect`);
2. GAE(λ) advantages for reward and cost from two separate critics (eq. 21-22),
   reward advantages standardised, cost advantages centred only;
3. the CPO step (eq. 4 of Ge et al. = eq. 10 of Achiam et al.): g and b are the
   gradients of the reward and cost surrogates, H the Fisher matrix of the mean
   KL, c = J_C(π_k) − d, solved analytically by :func:`fcpo.solvers.cpo_update`
   with a backtracking line search on the true surrogates and KL;
4. minibatch Adam on both critics towards their GAE returns.

Constraint modes (``constraint``, :data:`fcpo.policies.base.CONSTRAINT_MODES`).  ``per-slate``
(default): the actor caps every slate at m = ⌊α'K⌋ G0 items (Ge et al. eq. 7-9 as worded), so the
constraint holds on every slate, greedy or sampled, by construction; CPO still runs (its c is then
≤ 0) and the deployed policy is the greedy capped actor.  ``expected``: the CMDP constraint below,
trained by CPO; the deployed policy is the stochastic policy that was trained (``deploy_mode =
"sample"``), because that is the policy whose cost the constraint bounds (the greedy policy of a
sampled-constrained actor can sit far from it: issue 11 measured 37 % sampled vs 23 % greedy).
With ``calibrate_offset`` (the default; ``False`` gives the plain CPO path) the constraint is put on AN ESTIMATE OF THE DEPLOYED
POLICY'S COST: the sampled policy on training users under the deployment candidate rule (training
items excluded), no test data; after every CPO step the actor's popular-group logit offset projects
the policy back onto that constraint, and CPO's c is measured on the estimate
(:mod:`fcpo.agents.actor_critic`, ``Batch.deployed_share``).  Without it CPO measured c on the
training rollout, which overstates the deployed share, and sat in the infeasible recovery case whose
step ignores the limit (issue 11: one identical run at α' = 0.2, 0.4 and 0.6).

Constraint units.  One number, the limit on the expected UNdiscounted per-episode cost:
J_C(π) = E[Σ_t c_t] ≤ d = α'·K·T_episode (c_t = G0 items in slate t; d summed over each episode's
own length), i.e. a mean popular share ≤ α'.  CPO's c = J_C(π_k) − d (``Batch.c``), the logged
``cost_limit`` is d, and the cost advantages use γ_c = 1 by default so that the cost surrogate
E[ratio · A_C] × (samples / episodes) is the first-order change of that same J_C.  With
``constrained=False`` the same agent is TRPO (Schulman et al. 2015).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fcpo.agents.actor_critic import RolloutConfig, SlateActorCritic
from fcpo.agents.base import param, register_agent
from fcpo.agents.rollout import Batch, slot_advantages
from fcpo.envs.contract import EnvSpec
from fcpo.policies.actor import gaussian_kl
from fcpo.solvers import (CPOConfig, cpo_update, fisher_vector_product, flat_grad, flat_params, process_advantages,
                          set_flat_params, trpo_update)


@dataclass
class FCPOConfig(RolloutConfig):
    """Hyper-parameters of FCPO / TRPO (defaults: Ge et al. 2021 where stated, else ours); the actor,
    critic and rollout fields come from :class:`fcpo.agents.actor_critic.RolloutConfig`."""

    constrained: bool = param(True, "False = TRPO (the constraint is only reported)")
    fvp_subsample: float = param(0.2, "fraction of states used in Fisher-vector products")
    max_kl: float = param(0.05, "trust region: mean KL between successive policies")
    cg_iters: int = param(10, "conjugate-gradient iterations for H^-1 g and H^-1 b")
    cg_residual_tol: float = param(1e-10, "CG stops once the residual norm is below this")
    damping: float = param(0.1, "Tikhonov damping added to the Fisher matrix")
    backtrack_ratio: float = param(0.8, "line-search step shrink factor")
    max_backtracks: int = param(10, "line-search steps before the update is rejected")
    kl_rescale_backtracking: bool = param(False, "after a trial rejected only for its KL, shrink the step by "
                                                 "max(backtrack_ratio, 0.99·sqrt(δ/KL)) (opt-in; fewer iterations "
                                                 "to the operating point, benchmarks/time_to_target.py)")
    cost_solve: str = param("cg", "H⁻¹b: 'cg' (conjugate gradient, exact to cg_iters) or 'subspace' (the g-solve's "
                                  "CG directions plus b and Krylov vectors of b; cheaper, approximate)")
    cost_subspace_dim: int = param(2, "cost_solve='subspace': Fisher products spent on the cost direction", low=1)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.fvp_subsample <= 1.0:
            raise ValueError(f"fvp_subsample must lie in (0, 1], got {self.fvp_subsample!r}")
        self.solver_config()  # validates the solver fields

    def solver_config(self) -> CPOConfig:
        return CPOConfig(max_kl=self.max_kl, cg_iters=self.cg_iters, cg_residual_tol=self.cg_residual_tol,
                         damping=self.damping, backtrack_ratio=self.backtrack_ratio,
                         max_backtracks=self.max_backtracks, kl_rescale_backtracking=self.kl_rescale_backtracking,
                         cost_solve=self.cost_solve, cost_subspace_dim=self.cost_subspace_dim)


class FCPOAgent(SlateActorCritic):
    """FCPO (``constrained=True``) or TRPO (``constrained=False``) over the MovieLens fairness env."""

    name = "fcpo"

    def __init__(self, config: FCPOConfig, env: EnvSpec, device: torch.device | str = "cpu", seed: int = 0):
        super().__init__(config, env, device, seed)
        self.solver = config.solver_config()

    # ------------------------------------------------------------------ iteration
    def train_iteration(self, iteration: int) -> dict[str, float]:
        self.begin_iteration()  # expected mode: the first projection onto the deployed-cost constraint
        batch = self.rollout()
        stats = self._policy_update(batch)
        stats.update(self._critic_update(batch))
        stats.update(self.rollout_stats(batch))
        self.end_iteration(iteration, stats)  # expected mode: project the updated policy (calibrate_offset)
        return stats

    def _surrogates(self, batch: Batch, adv_r, adv_c, old_logp, exclude, groups=None):
        """Reward and cost surrogates E[ratio · A] (Achiam et al. eq. 10); the cost one in per-episode
        units.  With slot credit, ratios and advantages are per slot ([S, K]) and summed over slots."""
        slot = self.config.slot_credit
        logp = self.policy.action_log_prob(batch.obs, batch.action, exclude, per_slot=slot, is_popular=groups)
        ratio = torch.exp(logp - old_logp)
        scale = batch.size / batch.n_episodes  # per-episode units for the cost surrogate
        if slot:
            return (ratio * adv_r).sum(dim=1).mean(), (ratio * adv_c).sum(dim=1).mean() * scale
        return (ratio * adv_r).mean(), (ratio * adv_c).mean() * scale

    def _policy_update(self, batch: Batch) -> dict[str, float]:
        cfg, policy = self.config, self.policy
        params = [p for p in policy.parameters() if p.requires_grad]
        exclude = batch.exclude_mask(torch.arange(batch.size, device=self.device), policy.n_items) \
            if policy.mode == "softmax" else None
        # the groups each slate was sampled under (only the capped softmax log-prob depends on them)
        groups = batch.popular_mask() if policy.mode == "softmax" and policy.cap_active(policy.k) else None
        adv_r = process_advantages(batch.adv_r, centre=self.solver.centre_reward_advantages,
                                   rescale=self.solver.rescale_reward_advantages)
        adv_c = process_advantages(batch.adv_c, centre=self.solver.centre_cost_advantages,
                                   rescale=self.solver.rescale_cost_advantages)
        if cfg.slot_credit:
            adv_r = slot_advantages(adv_r, batch.slot_reward)
            adv_r = adv_r / (adv_r.std() + 1e-8) if self.solver.rescale_reward_advantages else adv_r
            adv_c = slot_advantages(adv_c, batch.slot_cost)
        n_sub = max(1, int(cfg.fvp_subsample * batch.size))
        sub = torch.as_tensor(np.sort(self.rng.choice(batch.size, n_sub, replace=False)), device=self.device)
        sub_exclude = None if exclude is None else exclude[sub]
        # Full-batch actor passes: one forward at θ_k serves the old log-probs, the old statistics and both
        # surrogates (the ratio is exactly 1 there), two backward passes give g and b, and each line-search
        # trial is one forward serving both surrogates and the KL -- 4 passes with one trial (7 before,
        # issue 17).  The sharing memoises policy.mean_action per observation tensor while the parameters
        # are unchanged (the memo is cleared whenever they change and removed on exit); the values are
        # those of separate passes, bit for bit.
        network_forward, memo = policy.mean_action, {}

        def shared_mean_action(obs):
            grad = torch.is_grad_enabled()
            hit = memo.get((id(obs), grad)) or (None if grad else memo.get((id(obs), True)))
            if hit is not None and hit[0] is obs:
                return hit[1] if grad else hit[1].detach()
            out = network_forward(obs)
            memo[(id(obs), grad)] = (obs, out)
            return out

        policy.mean_action = shared_mean_action
        try:
            logp = policy.action_log_prob(batch.obs, batch.action, exclude, per_slot=cfg.slot_credit,
                                          is_popular=groups)
            old_logp = logp.detach()
            old_full = policy.old_stats(batch.obs, exclude)
            surr_r, surr_c = self._surrogates(batch, adv_r, adv_c, old_logp, exclude, groups)
            g = flat_grad(surr_r, params, retain_graph=True)
            b = flat_grad(surr_c, params)
            memo.clear()  # the graph of θ_k's forward is freed
            old_sub = {k: v[sub] for k, v in old_full.items()}
            if policy.mode == "gaussian":  # J^T M J v: the same products bit for bit, ~20 % faster (issue 17)
                obs_sub = batch.obs[sub]
                hvp = fisher_vector_product(
                    lambda out: gaussian_kl(old_sub, *out), params, damping=self.solver.damping,
                    method="gauss_newton",
                    outputs_fn=lambda: (policy.mean_action(obs_sub), policy.log_std.expand(obs_sub.shape[0], -1)))
            else:
                hvp = fisher_vector_product(lambda: policy.kl_from(batch.obs[sub], old_sub, sub_exclude), params,
                                            damping=self.solver.damping, method="autograd")
            theta = flat_params(params).detach()

            @torch.no_grad()
            def evaluate(candidate):
                set_flat_params(params, candidate)
                memo.clear()
                r, c = self._surrogates(batch, adv_r, adv_c, old_logp, exclude, groups)
                return r, c, policy.kl_from(batch.obs, old_full, exclude)

            c_value = batch.c  # J_C − d, undiscounted per-episode units (module docstring)
            baseline = (surr_r.detach(), surr_c.detach())  # the surrogates at θ_k: no extra full-batch evaluation
            if cfg.constrained:
                result = cpo_update(theta, g.detach(), b.detach(), c_value, hvp, evaluate, config=self.solver,
                                    baseline=baseline)
            else:
                result = trpo_update(theta, g.detach(), hvp, evaluate, config=self.solver, baseline=baseline)
        finally:
            del policy.mean_action  # back to the class's method
        set_flat_params(params, result.params)
        step, ls = result.step, result.line_search
        return {"kl": ls.kl if ls.accepted else 0.0, "lambda": _finite(step.lam), "nu": _finite(step.nu),
                "cpo_case": step.case, "c": c_value, "step_fraction": ls.fraction,
                "backtracks": float(ls.n_backtracks),
                "cg_iterations": float(step.cg.iterations) if step.cg is not None else 0.0}


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")


@register_agent("fcpo", FCPOConfig, description="FCPO: actor-critic with reward and cost critics trained by CPO")
def make_fcpo(config: FCPOConfig, env: EnvSpec, device, seed: int) -> FCPOAgent:
    return FCPOAgent(config, env, device, seed)
