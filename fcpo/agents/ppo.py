"""PPO-clip epochs and critic fitting, shared by PPO-Lagrangian, iALP and FCPO's critics.

* :func:`clipped_surrogate`: PPO's clipped objective (Schulman et al. 2017, eq. 7)
  ``E[min(ρA, clip(ρ, 1−ε, 1+ε)A)]``, ρ = π_θ(a|s) / π_old(a|s), per sample or per slot;
* :func:`ppo_clip_epochs`: several epochs of minibatch Adam on it, with an optional early stop
  when the approximate KL of a minibatch exceeds ``KL_STOP_FACTOR · target_kl`` (Spinning Up);
* :func:`fit_critics`: minibatch Adam on value critics towards their targets (GAE returns,
  Ge et al. eq. 21-22), every critic on the same minibatches.
"""
from __future__ import annotations

import math

from typing import Callable, Sequence

import numpy as np
import torch

from fcpo.agents.checkpoint import NonFiniteState

#: early stop when the approximate KL of a minibatch exceeds this multiple of ``target_kl`` (Spinning Up)
KL_STOP_FACTOR = 1.5


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


def ppo_clip_epochs(log_prob_fn: Callable, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                    optimizer: torch.optim.Optimizer, *, epochs: int, minibatch_size: int, clip: float,
                    generator: torch.Generator | None = None, params: Sequence[torch.Tensor] | None = None,
                    target_kl: float | None = None, max_grad_norm: float | None = None) -> dict[str, float]:
    """Minibatch Adam on ``−clipped_surrogate`` for ``epochs`` passes over the ``len(old_log_prob)`` samples.

    ``log_prob_fn(idx)`` returns the current log-probabilities of samples ``idx`` (shaped like
    ``old_log_prob[idx]``), or ``(logp, bonus)`` where the scalar ``bonus`` is added to the objective
    (an entropy term).  Returns ``policy_loss`` (mean), ``clip_fraction``, ``policy_steps``,
    ``policy_epochs`` (completed before an early stop) and ``early_stop``; ``bonus`` (mean) when given."""
    n = int(old_log_prob.shape[0])
    device = old_log_prob.device
    losses, clip_fracs, bonuses = [], [], []
    stopped, epochs_run = False, 0
    for _ in range(epochs):
        perm = torch.randperm(n, device=device, generator=generator)
        for start in range(0, n, minibatch_size):
            idx = perm[start:start + minibatch_size]
            out = log_prob_fn(idx)
            logp, bonus = out if isinstance(out, tuple) else (out, None)
            objective, clipped, approx_kl = clipped_surrogate(logp, old_log_prob[idx], advantages[idx], clip)
            if target_kl is not None and float(approx_kl) > KL_STOP_FACTOR * target_kl:
                stopped = True
                break
            loss = -objective if bonus is None else -(objective + bonus)
            optimizer.zero_grad()
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
            clip_fracs.append(float(clipped))
            if bonus is not None:
                bonuses.append(float(bonus.detach()))
        if stopped:
            break
        epochs_run += 1
    stats = {"policy_loss": float(np.mean(losses)) if losses else float("nan"),
             "clip_fraction": float(np.mean(clip_fracs)) if clip_fracs else 0.0,
             "policy_steps": float(len(losses)), "policy_epochs": float(epochs_run), "early_stop": float(stopped)}
    if bonuses:
        stats["bonus"] = float(np.mean(bonuses))
    return stats


def fit_critics(critics: Sequence[tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]], obs: torch.Tensor,
                *, epochs: int, minibatch_size: int, generator: torch.Generator | None = None,
                shared_minibatches: bool = True) -> list[float]:
    """Minibatch Adam on each ``(critic, optimiser, target)`` towards ``target`` (MSE); returns the mean loss of
    each critic.  ``shared_minibatches``: all critics step on the same shuffled minibatches (one shuffle per
    epoch); else each critic runs its own epochs with its own shuffles, one critic after the other."""
    n = int(obs.shape[0])

    def run(group):
        totals, count = [0.0] * len(group), 0
        for _ in range(epochs):
            perm = torch.randperm(n, device=obs.device, generator=generator)
            for start in range(0, n, minibatch_size):
                idx = perm[start:start + minibatch_size]
                x = obs[idx]
                for j, (critic, opt, target) in enumerate(group):
                    loss = torch.mean((critic(x) - target[idx]) ** 2)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise NonFiniteState(f"value critic {j}: the regression loss became {value} (training "
                                             "diverged); lower critic_lr")
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    totals[j] += value
                count += 1
        with torch.no_grad():  # a last step can leave exploding weights: check the fitted critics' error
            for j, (critic, _, target) in enumerate(group):
                after = float(torch.mean((critic(obs[:256]) - target[:256]) ** 2))
                if not math.isfinite(after):
                    raise NonFiniteState(f"value critic {j}: its regression error became {after} after fitting "
                                         "(training diverged); lower critic_lr")
        return [t / max(count, 1) for t in totals]

    if shared_minibatches:
        return run(list(critics))
    return [run([c])[0] for c in critics]
