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
* the deployed cost in ``expected`` mode (:meth:`SlateActorCritic.calibrate_offset`): the constraint is
  put on an ESTIMATE OF THE DEPLOYED POLICY'S COST, not on the training rollout's.  Deployment removes
  each user's training-period items from the candidates, which are popular-heavy, so a training rollout's
  share overstates the deployed one (issue 11: 80 % train vs 72 % test for one policy).  The estimate
  (:meth:`SlateActorCritic.deployed_share`) runs the sampled policy on a fixed subset of TRAINING users
  under the deployment candidate rule (training items and earlier recommendations excluded; no test
  data is read).  After every update (and before the first) the actor's popular-group logit offset λ ≥ 0
  (:meth:`fcpo.policies.actor.SlateActor.set_popular_offset`, the exponential tilt of the policy by the
  cost) is set by a Newton / regula-falsi search (one rollout per iteration once it tracks the updates)
  to about the smallest λ whose estimated share is at most α' − ``calibration_margin``: a projection of the updated policy back onto the constraint set along the
  KL-cheapest direction (as PCPO's projection step, Yang et al. 2020).  The policy update then measures
  the constraint on that estimate (``Batch.deployed_share``): CPO's c, PPO-Lagrangian's J_C;
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
from fcpo.agents.rollout import Batch, collect, run_slate_episodes
from fcpo.metrics import gini_fcpo
from fcpo.policies.actor import MODES, SlateActor
from fcpo.policies.base import SlateState, check_constraint_mode
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
    calibrate_offset: bool = param(True, "expected mode: project the policy onto the deployed-cost constraint after "
                                         "every update with the popular-group logit offset (module docstring)")
    calibration_margin: float = param(0.02, "expected mode: the offset targets a deployed share of α' minus this")
    calibration_users: float = param(0.34, "expected mode: fraction of training users in the deployed-cost estimate")
    calibration_tolerance: float = param(0.01, "expected mode: the offset search stops within this share of its "
                                                "target")

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.calibration_users <= 1.0:
            raise ValueError(f"{type(self).__name__}: calibration_users must lie in (0, 1], "
                             f"got {self.calibration_users!r}")
        if not (math.isfinite(self.calibration_margin) and 0.0 <= self.calibration_margin < 1.0):
            raise ValueError(f"{type(self).__name__}: calibration_margin must lie in [0, 1), "
                             f"got {self.calibration_margin!r}")
        _positive(self, "calibration_tolerance")
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
    per-slate, "sample" for expected) and the env's G0 (per-slate: for its cap, set at construction;
    expected: for its popular-group offset)."""
    actor.alpha_prime = float(alpha_prime)
    actor.constraint = check_constraint_mode(constraint, "constraint")
    actor.deploy_mode = "greedy" if constraint == "per-slate" else "sample"
    if actor.slate_cap is not None or constraint == "expected":  # expected: for the popular-group offset
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


#: most deployed-share rollouts one calibration runs (:meth:`SlateActorCritic.calibrate_offset`)
MAX_CALIBRATION_TRIALS = 8
#: a trial within this many tolerances of the aim ends the calibration with an unmeasured Newton step
NEWTON_ACCEPT = 3.0


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
        # the projection of expected mode (never for TRPO, constrained=False, nor at α' = 1 where nothing binds)
        self.calibrating = (config.constraint == "expected" and config.calibrate_offset and config.alpha_prime < 1.0
                            and getattr(config, "constrained", True))
        self._calibration_env = None

    # the calibration's record lives in the actor (``offset_calibration``, saved with it): −1 = None
    def _record(self, i: int) -> float | None:
        value = float(self.policy.offset_calibration[i])
        return None if value < 0 else value

    def _set_record(self, i: int, value: float | None) -> None:
        self.policy.offset_calibration[i] = -1.0 if value is None else float(value)

    @property
    def _deployed_share(self) -> float | None:
        """The deployed-share estimate after the last calibration (None: not yet run)."""
        return self._record(0)

    @property
    def _sensitivity(self) -> float | None:
        """−d(deployed share)/dλ measured by the last calibration."""
        return self._record(1)

    # ------------------------------------------------------------------ deployed cost (expected mode)
    def _calibration_setup(self):
        """The train-split env of the estimate's users (every round(1/calibration_users)-th training user,
        no RNG drawn) and their training-period items (excluded, as the evaluator excludes them)."""
        if self._calibration_env is None:
            stride = max(1, int(round(1.0 / self.config.calibration_users)))
            rows = np.arange(0, self.n_users, stride)
            env = self.env_spec.make_vector(len(rows), mode="train")
            train_items = torch.as_tensor(env.env_data.split.train_items().to_mask(env.n_items, rows),
                                          device=self.device)
            self._calibration_env = (env, rows, train_items)
        return self._calibration_env

    @torch.no_grad()
    def deployed_share(self, seed: int) -> float:
        """Mean G0 share of the deployed (sampled) policy, at its current offset, on the estimate's
        training users under the deployment candidate rule: every step of the horizon, the user's
        training-period items, initial history and earlier recommendations excluded, share over the
        slates of live episodes (as :func:`fcpo.evaluate.evaluate` counts it).  ``seed`` fixes the
        sampling noise, so calls with one seed differ only through the policy (common random numbers)."""
        env, rows, train_items = self._calibration_setup()
        policy, k = self.policy, self.slate_size
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        popular, slates = 0.0, 0

        def act(state, exclude, t):
            policy.set_groups(np.asarray(env.is_popular, dtype=bool))
            return policy.act(state, k, mode="sample", exclude=exclude, generator=generator)

        def record(step) -> None:
            nonlocal popular, slates
            popular += float((np.asarray(step.info["cost"], dtype=np.float64) * step.alive).sum())
            slates += int(step.alive.sum())

        policy.eval()
        run_slate_episodes(env, rows, act, self.device, seed=int(seed), extra_exclude=train_items, until_done=False,
                           on_step=record)
        return popular / max(k * slates, 1)

    def calibrate_offset(self, seed: int) -> dict[str, float]:
        """Set the actor's popular-group offset λ ≥ 0 to (about) the smallest value whose deployed share
        (:meth:`deployed_share`, one noise seed for every trial) is at most α' − ``calibration_margin``.

        The share decreases in λ.  Trials start at the current λ plus the last calibration's rise of λ
        (updates drift the same way from one iteration to the next) and stop at a share within
        ``calibration_tolerance`` below the target (or at λ = 0 below it), at most
        :data:`MAX_CALIBRATION_TRIALS`.  Until the target is bracketed, a Newton step on the last
        sensitivity −dshare/dλ (kept from the previous calibration; at first a step of 5 % of the score
        spread, doubled while the share stays on one side); once bracketed, Illinois regula falsi.  The
        answer is the feasible end of the bracket (the largest λ tried if none is feasible), except that a
        trial within :data:`NEWTON_ACCEPT` tolerances of the aim (target − tolerance/2) on a known slope
        ends with the Newton step itself, unmeasured, its share predicted as the aim (one rollout per
        iteration once the offset tracks the updates).  Returns the offset, its estimated share and the
        number of trials."""
        cfg, policy = self.config, self.policy
        target = cfg.alpha_prime - cfg.calibration_margin
        tol = cfg.calibration_tolerance
        aim = target - 0.5 * tol
        trials: list[tuple[float, float]] = []

        def share_at(lam: float) -> float:
            policy.set_popular_offset(lam)
            trials.append((lam, self.deployed_share(seed)))
            return trials[-1][1]

        def done(lam: float, share: float) -> bool:
            return target - tol <= share <= target or (lam == 0.0 and share <= target)

        lam0 = float(policy.popular_offset)
        lo = hi = None  # (λ, share): the largest infeasible / smallest feasible λ tried
        # the first trial repeats the last calibration's change of λ (the updates drift one way)
        drift = self._record(3) if self._record(3) is not None and lam0 > 0 else 0.0
        lam = lam0 + drift
        share = share_at(lam)
        side = 0
        predicted = None  # (λ, share) of an unmeasured Newton step, when the last trial was close enough
        while not done(lam, share) and len(trials) < MAX_CALIBRATION_TRIALS:
            if (self._sensitivity is not None and abs(share - aim) <= NEWTON_ACCEPT * tol
                    and lam + (share - aim) / self._sensitivity >= 0.0):
                predicted = (lam + (share - aim) / self._sensitivity, aim)  # a short step on a known slope
                break
            if share > target:
                lo = (lam, share) if lo is None or lam > lo[0] else lo
            else:
                hi = (lam, share) if hi is None or lam < hi[0] else hi
            if lo is not None and hi is not None:  # bracketed: Illinois regula falsi on share(λ) − aim
                w_lo, w_hi = lo[1] - aim, hi[1] - aim
                w_lo, w_hi = (w_lo / 2.0, w_hi) if side == 1 else ((w_lo, w_hi / 2.0) if side == -1 else (w_lo, w_hi))
                nxt = hi[0] - w_hi * (hi[0] - lo[0]) / (w_hi - w_lo) if w_hi != w_lo else 0.5 * (lo[0] + hi[0])
                nxt = min(max(nxt, lo[0] + 0.02 * (hi[0] - lo[0])), hi[0] - 0.02 * (hi[0] - lo[0]))
            else:  # not bracketed yet: a Newton step, or a doubling step without a sensitivity
                if self._sensitivity is not None:
                    nxt = lam + (share - aim) / self._sensitivity * (1.0 + 0.5 * (len(trials) - 1))
                else:
                    step = 0.05 * self._score_scale() * 2.0 ** (len(trials) - 1)
                    nxt = lam + step if share > target else lam - step
                nxt = max(0.0, nxt)
            prev_share = share
            lam, share = nxt, share_at(nxt)
            side = 1 if share <= target else -1
            if lam != trials[-2][0] and share != prev_share:  # local sensitivity −dshare/dλ (> 0)
                slope = -(share - trials[-2][1]) / (lam - trials[-2][0])
                if slope > 0:
                    self._set_record(1, slope)
        if predicted is None and share > target:
            lo = (lam, share) if lo is None or lam > lo[0] else lo
        elif predicted is None:
            hi = (lam, share) if hi is None or lam < hi[0] else hi
        best = hi if hi is not None else lo  # the feasible end, or the largest λ tried
        if predicted is not None:
            best = predicted
        self._set_record(3, max(0.0, best[0] - lam0))  # kept only upward: the momentum of the next first trial
        policy.set_popular_offset(best[0])
        self._set_record(0, best[1])
        return {"popular_offset": best[0], "deployed_share": best[1], "calibration_trials": float(len(trials))}

    @torch.no_grad()
    def _score_scale(self) -> float:
        """Spread of the actor's item scores on a few training states: the unit of the first offset step."""
        if self._record(2) is None:
            env, rows, _ = self._calibration_setup()
            obs, _ = env.reset(options={"users": rows})
            state = SlateState.from_numpy(obs, env.history.copy(), env.env_data.split.user_ids[env.user_rows],
                                          self.device)
            self._set_record(2, float(self.policy.scores(state).std(dim=1).mean()))
        return self._record(2)

    def begin_iteration(self) -> None:
        """Expected mode: calibrate before the first update (the policy starts on the constraint)."""
        if self.calibrating and self._deployed_share is None:
            self.calibrate_offset(self._calibration_seed())

    def end_iteration(self, iteration: int, stats: dict) -> None:
        """Expected mode: project the updated policy onto the deployed-cost constraint (calibrate_offset);
        ``stats`` gets the offset, the estimated deployed share after the projection and the trials."""
        if self.calibrating:
            stats.update(self.calibrate_offset(self._calibration_seed()))

    def _calibration_seed(self) -> int:
        """A fresh noise seed for one calibration, from the agent's (checkpointed) numpy generator."""
        return int(self.rng.integers(2 ** 31 - 1))

    def rollout(self) -> Batch:
        """Roll out all training users, or a fresh sample of ``users_per_iteration`` of them."""
        cfg = self.config
        users = (np.arange(self.n_users) if self.n_rollout == self.n_users
                 else np.sort(self.rng.choice(self.n_users, self.n_rollout, replace=False)))
        self.policy.eval()
        batch = collect(self.env, self.policy, self.value_r, self.value_c, users, self.device, cfg.gamma_r, cfg.lam_r,
                        cfg.gamma_c, cfg.lam_c, cfg.alpha_prime, self.generator)
        if self.calibrating:  # the constraint is measured on the deployed policy's estimated cost
            batch.deployed_share = self._deployed_share
        return batch

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
