"""Preference alignment for recommenders: SFT, DPO, S-DPO and SPRec self-play.

Losses are free functions of log-probabilities (:mod:`fcpo.alignment.losses`); the data
module builds next-item samples, S-DPO candidate lists and negatives; the trainer runs SFT,
DPO and S-DPO for any :class:`fcpo.policies.base.Policy`; :mod:`fcpo.alignment.sprec` runs
the SPRec self-play loop.
"""
from fcpo.alignment.data import (
    PreferenceData,
    candidate_lists,
    next_item_samples,
    sample_negatives,
    seen_items,
    with_candidates,
)
from fcpo.alignment.losses import dpo_loss, implicit_rewards, sdpo_loss, sft_nll
from fcpo.alignment.sprec import SPRecConfig, run_sprec, self_play_negatives
from fcpo.alignment.trainer import (
    TrainConfig,
    history_state,
    item_log_probs,
    reference_log_probs,
    train_preference,
    train_sft,
)

__all__ = [
    "sft_nll", "dpo_loss", "sdpo_loss", "implicit_rewards",
    "PreferenceData", "next_item_samples", "seen_items", "candidate_lists", "sample_negatives", "with_candidates",
    "TrainConfig", "history_state", "item_log_probs", "reference_log_probs", "train_sft", "train_preference",
    "SPRecConfig", "run_sprec", "self_play_negatives",
]
