"""SFT, DPO and S-DPO training loops for any :class:`fcpo.policies.base.Policy`.

The loops only need per-item log-probabilities log pi(y | x) of single-item actions.  A policy
that offers ``item_log_probs(state, items [B, J], candidates=None, normalize=...) -> [B, J]``
(the GRU model, the text policy) is called once per batch; any other policy is called through
``log_prob(state, items[:, j:j+1], candidates)`` once per column (the contract's single-item
log-probability).  States come from ``state_fn(data, idx) -> SlateState``; the default
builds ``SlateState(obs=<empty>, history, user)`` from the samples, so policies that read
``obs`` (the FCPO actor) pass their own ``state_fn``.

* SFT: minimise -log pi(y_w | x) (SPRec eq. 1).
* DPO / S-DPO: the reference log-probabilities are computed once, before training, from a
  frozen ``reference`` (a :meth:`Policy.snapshot`); DPO uses the first negative of each sample.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from fcpo.alignment.config import TrainConfig
from fcpo.alignment.data import PreferenceData
from fcpo.alignment.losses import dpo_loss, sdpo_loss, sft_nll
from fcpo.policies.base import Policy, SlateState

__all__ = ["TrainConfig", "history_state", "item_log_probs", "train_sft", "train_preference",
           "reference_log_probs"]

StateFn = Callable[[PreferenceData, np.ndarray], SlateState]


def history_state(data: PreferenceData, idx: np.ndarray, device: torch.device | str = "cpu") -> SlateState:
    """The default state: the samples' history ids and user ids, with an empty ``obs``."""
    h = torch.as_tensor(data.history[idx], dtype=torch.long, device=device)
    return SlateState(obs=torch.zeros(len(h), 0, device=device), history=h,
                      user=torch.as_tensor(data.user[idx], dtype=torch.long, device=device))


def _device(policy: Policy) -> torch.device:
    p = next(iter(policy.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def item_log_probs(policy: Policy, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                   normalize: bool | None = None) -> torch.Tensor:
    """log pi(items[:, j] | state) [B, J] through the policy's fastest route (see the module docstring)."""
    if normalize is None:
        normalize = getattr(policy, "default_normalize", True)
    fn = getattr(policy, "item_log_probs", None)
    if fn is not None:
        return fn(state, items, candidates, normalize=normalize)
    cols = [policy.log_prob(state, items[:, j:j + 1], candidates=candidates if normalize else None)
            for j in range(items.shape[1])]
    return torch.stack(cols, dim=1)


def _batch_tensors(data: PreferenceData, idx: np.ndarray, items: np.ndarray, device):
    it = torch.as_tensor(items[idx], dtype=torch.long, device=device)
    cand = None if data.candidates is None else torch.as_tensor(data.candidates[idx], dtype=torch.long, device=device)
    return it, cand


@torch.no_grad()
def reference_log_probs(reference: Policy, data: PreferenceData, batch_size: int = 1024,
                        state_fn: StateFn | None = None, normalize: bool | None = None) -> torch.Tensor:
    """[N, 1 + M] log pi_ref of (positive, negatives...) for every sample, in eval mode."""
    device = _device(reference)
    state_fn = state_fn or (lambda d, i: history_state(d, i, device))
    items = data.preferred_and_rejected()
    was_training = reference.training
    reference.eval()
    out = []
    for s in range(0, len(data), batch_size):
        idx = np.arange(s, min(s + batch_size, len(data)))
        it, cand = _batch_tensors(data, idx, items, device)
        out.append(item_log_probs(reference, state_fn(data, idx), it, cand, normalize).float().cpu())
    reference.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, items.shape[1])


def _steps(n: int, config: TrainConfig) -> tuple[int, int]:
    per_epoch = math.ceil(n / config.batch_size)
    total = max(1, math.ceil(per_epoch * config.epochs))
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return per_epoch, total


def _batches(n: int, config: TrainConfig):
    """Shuffled mini-batch indices, epoch after epoch, for the configured number of steps."""
    rng = np.random.default_rng(config.seed)
    per_epoch, total = _steps(n, config)
    step = 0
    while step < total:
        perm = rng.permutation(n)
        for b in range(per_epoch):
            if step >= total:
                return
            yield step, perm[b * config.batch_size:(b + 1) * config.batch_size]
            step += 1


def _optimizer(policy: Policy, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters (is it a frozen snapshot?)")
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _step(policy: Policy, opt: torch.optim.Optimizer, loss: torch.Tensor, config: TrainConfig) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = float("nan")
    if config.grad_clip:
        norm = float(torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad],
                                                    config.grad_clip))
    opt.step()
    return norm


def train_sft(policy: Policy, data: PreferenceData, config: TrainConfig = TrainConfig(),
              state_fn: StateFn | None = None, log: Callable[[dict], None] | None = None,
              stage: str = "sft") -> list[dict]:
    """Supervised fine-tuning on the positives: minimise -log pi(y_w | x).  Returns one record per step."""
    if len(data) == 0:
        raise ValueError("train_sft: no samples")
    device = _device(policy)
    state_fn = state_fn or (lambda d, i: history_state(d, i, device))
    opt = _optimizer(policy, config)
    pos = data.positive[:, None]
    policy.train()
    records = []
    t0 = time.perf_counter()
    for step, idx in _batches(len(data), config):
        it, cand = _batch_tensors(data, idx, pos, device)
        logp = item_log_probs(policy, state_fn(data, idx), it, cand, config.normalize)[:, 0]
        loss = sft_nll(logp)
        norm = _step(policy, opt, loss, config)
        rec = {"stage": stage, "step": step, "loss": float(loss.detach()), "grad_norm": norm,
               "seconds": time.perf_counter() - t0}
        records.append(rec)
        if log:
            log(rec)
    policy.eval()
    return records


def train_preference(policy: Policy, reference: Policy, data: PreferenceData, config: TrainConfig = TrainConfig(),
                     loss: str = "dpo", state_fn: StateFn | None = None, log: Callable[[dict], None] | None = None,
                     stage: str | None = None) -> list[dict]:
    """DPO (``loss="dpo"``, first negative) or S-DPO (``loss="sdpo"``, all M negatives) against ``reference``.

    Logged per step: the loss, the mean implicit rewards beta*(log pi - log pi_ref) of the chosen and
    of the rejected items, and the reward accuracy (chosen reward above every rejected one).
    """
    if loss not in ("dpo", "sdpo"):
        raise ValueError(f"loss must be 'dpo' or 'sdpo', got {loss!r}")
    if len(data) == 0:
        raise ValueError("train_preference: no samples")
    if loss == "dpo":
        data = data.with_negatives(data.preferred_and_rejected()[:, 1:2])
    stage = stage or loss
    device = _device(policy)
    state_fn = state_fn or (lambda d, i: history_state(d, i, device))
    ref = reference_log_probs(reference, data, config.eval_batch_size, state_fn, config.normalize).to(device)
    items = data.preferred_and_rejected()
    opt = _optimizer(policy, config)
    policy.train()
    records = []
    t0 = time.perf_counter()
    for step, idx in _batches(len(data), config):
        it, cand = _batch_tensors(data, idx, items, device)
        logp = item_log_probs(policy, state_fn(data, idx), it, cand, config.normalize)
        r = ref[torch.as_tensor(idx, device=device)]
        if loss == "dpo":
            value = dpo_loss(logp[:, 0], logp[:, 1], r[:, 0], r[:, 1], beta=config.beta)
        else:
            value = sdpo_loss(logp[:, 0], logp[:, 1:], r[:, 0], r[:, 1:], beta=config.beta)
        norm = _step(policy, opt, value, config)
        with torch.no_grad():
            rew = config.beta * (logp.detach() - r)
            rec = {"stage": stage, "step": step, "loss": float(value.detach()), "grad_norm": norm,
                   "reward_chosen": float(rew[:, 0].mean()), "reward_rejected": float(rew[:, 1:].mean()),
                   "reward_accuracy": float((rew[:, :1] > rew[:, 1:]).all(dim=1).float().mean()),
                   "logp_chosen": float(logp[:, 0].detach().mean()), "seconds": time.perf_counter() - t0}
        records.append(rec)
        if log:
            log(rec)
    policy.eval()
    return records
