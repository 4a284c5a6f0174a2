"""SPRec: self-play debiasing of a recommender (Gao et al., "SPRec: Self-Play to Debias LLM-based
Recommendation", WWW 2025, §3 and its training script).

Iteration t = 1..T, starting from pi_0 (usually the SFT model):

1. negatives: for every sample (x, y_w) the previous player pi_{t-1} recommends y_l
   (``negatives="greedy"``: its top item, as in the authors' code; ``"sample"``: an item
   sampled from pi_{t-1}(. | x), as in the paper's eq. 5); the positive and the history items
   are excluded so y_l != y_w;
2. SFT on the positives (x, y_w);
3. DPO on (x, y_w, y_l) with the post-SFT snapshot as the reference pi_ref.

Both choices (negative mode, which samples each iteration) are recorded in the returned log.
The loop is model-agnostic: it needs ``policy.act(state, 1, mode, exclude)`` over the
catalogue (``policy.n_items``), ``snapshot()`` and the log-probabilities the trainer reads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from fcpo.alignment.data import PreferenceData
from fcpo.alignment.trainer import StateFn, TrainConfig, _device, history_state, train_preference, train_sft
from fcpo.policies.base import Policy

__all__ = ["SPRecConfig", "self_play_negatives", "run_sprec"]


@dataclass
class SPRecConfig:
    """SPRec loop settings; ``sft`` and ``dpo`` configure the two stages of each iteration."""

    iterations: int = 3
    negatives: str = "greedy"  # "greedy" (authors' code) | "sample" (paper)
    samples_per_iteration: int | None = None  # None: every sample; else a fresh random subset each iteration
    exclude_history: bool = True
    act_batch_size: int = 1024
    keep_negatives: bool = False  # put each iteration's negatives [N, 1] into its record (for inspection/tests)
    seed: int = 0
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-3))
    dpo: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-4, beta=1.0))

    def __post_init__(self):
        if self.negatives not in ("greedy", "sample"):
            raise ValueError(f"SPRecConfig.negatives must be 'greedy' or 'sample', got {self.negatives!r}")
        if self.iterations < 1:
            raise ValueError(f"SPRecConfig.iterations must be >= 1, got {self.iterations}")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def self_play_negatives(policy: Policy, data: PreferenceData, mode: str = "greedy", state_fn: StateFn | None = None,
                        exclude_history: bool = True, batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    """[N, 1] items that ``policy`` recommends for each sample (``mode`` "greedy" | "sample"), never the
    positive (nor, with ``exclude_history``, an item of the history window)."""
    n_items = getattr(policy, "n_items", None)
    if n_items is None:
        raise ValueError("self_play_negatives needs policy.n_items (the catalogue size)")
    device = _device(policy)
    state_fn = state_fn or (lambda d, i: history_state(d, i, device))
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = policy.training
    policy.eval()
    out = np.empty((len(data), 1), dtype=np.int64)
    for s in range(0, len(data), batch_size):
        idx = np.arange(s, min(s + batch_size, len(data)))
        exclude = torch.zeros(len(idx), n_items, dtype=torch.bool, device=device)
        rows = torch.arange(len(idx), device=device)
        exclude[rows, torch.as_tensor(data.positive[idx], device=device)] = True
        if exclude_history:
            h = torch.as_tensor(data.history[idx], device=device)
            valid = h >= 0
            exclude[rows[:, None].expand_as(h)[valid], h[valid]] = True
        state = state_fn(data, idx)
        try:
            items = policy.act(state, 1, mode=mode, exclude=exclude, generator=gen)
        except TypeError:  # a policy whose act() takes no generator
            items = policy.act(state, 1, mode=mode, exclude=exclude)
        out[idx] = items.cpu().numpy()
    policy.train(was_training)
    return out


def _negative_stats(neg: np.ndarray) -> dict:
    flat = neg.ravel()
    counts = np.bincount(flat)
    top = np.sort(counts)[::-1][:3]
    return {"negatives_distinct": int((counts > 0).sum()), "negatives_top3_share": float(top.sum() / max(len(flat), 1))}


def run_sprec(policy: Policy, data: PreferenceData, config: SPRecConfig = SPRecConfig(),
              state_fn: StateFn | None = None, log: Callable[[dict], None] | None = None,
              on_iteration: Callable[[int, Policy], dict] | None = None) -> list[dict]:
    """Run ``config.iterations`` SPRec iterations on ``policy`` in place (see the module docstring).

    ``on_iteration(t, policy)`` (e.g. an evaluation) is called after iteration 0 (the starting
    model) and after each iteration; its dict is merged into that iteration's record.
    Returns one record per iteration with the settings used and the negatives' statistics.
    """
    records = []
    if on_iteration is not None:
        records.append({"iteration": 0, **on_iteration(0, policy)})
        if log:
            log({"stage": "sprec", **records[-1]})
    rng = np.random.default_rng(config.seed)
    for t in range(1, config.iterations + 1):
        if config.samples_per_iteration is not None and config.samples_per_iteration < len(data):
            sub = data.subset(np.sort(rng.choice(len(data), config.samples_per_iteration, replace=False)))
        else:
            sub = data
        # (1) negatives from the previous player pi_{t-1}
        neg = self_play_negatives(policy, sub, config.negatives, state_fn, config.exclude_history,
                                  config.act_batch_size, seed=config.seed + t)
        pairs = sub.with_negatives(neg)
        # (2) SFT on the positives
        sft_cfg = TrainConfig(**{**config.sft.to_dict(), "seed": config.sft.seed + t})
        sft_log = train_sft(policy, sub, sft_cfg, state_fn, log, stage=f"sprec{t}/sft")
        # (3) DPO against the post-SFT snapshot
        reference = policy.snapshot()
        dpo_cfg = TrainConfig(**{**config.dpo.to_dict(), "seed": config.dpo.seed + t})
        dpo_log = train_preference(policy, reference, pairs, dpo_cfg, "dpo", state_fn, log, stage=f"sprec{t}/dpo")
        del reference
        rec = {"iteration": t, "negatives": config.negatives, "samples": len(sub), **_negative_stats(neg),
               "sft_loss": float(np.mean([r["loss"] for r in sft_log[-10:]])),
               "dpo_loss": float(np.mean([r["loss"] for r in dpo_log[-10:]])),
               "dpo_reward_accuracy": float(np.mean([r["reward_accuracy"] for r in dpo_log[-10:]]))}
        if config.keep_negatives:
            rec["negative_items"] = neg
        if on_iteration is not None:
            rec.update(on_iteration(t, policy))
        records.append(rec)
        if log:
            log({"stage": "sprec", **{k: v for k, v in rec.items() if k != "negative_items"}})
    return records
