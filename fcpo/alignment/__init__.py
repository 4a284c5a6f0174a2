"""Preference alignment for recommenders: SFT, DPO, S-DPO and SPRec self-play.

Losses are free functions of log-probabilities (:mod:`fcpo.alignment.losses`); the data
module builds next-item samples, S-DPO candidate lists and negatives; the trainer runs SFT,
DPO and S-DPO for any :class:`fcpo.policies.base.Policy`; :mod:`fcpo.alignment.sprec` runs
the SPRec self-play loop; :mod:`fcpo.alignment.experiment` is one whole experiment (SFT, then
a method, evaluated, in a run folder), what ``fcpo-align`` runs.

Names are imported on first use (PEP 562), so ``from fcpo.alignment import TrainConfig``
does not load torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "fcpo.alignment.losses": ("sft_nll", "dpo_loss", "sdpo_loss", "implicit_rewards"),
    "fcpo.alignment.data": ("PreferenceData", "next_item_samples", "seen_items", "candidate_lists",
                            "sample_negatives", "with_candidates"),
    "fcpo.alignment.config": ("TrainConfig",),
    "fcpo.alignment.trainer": ("history_state", "item_log_probs", "reference_log_probs", "train_sft",
                               "train_preference"),
    "fcpo.alignment.sprec": ("SPRecConfig", "run_sprec", "self_play_negatives"),
    "fcpo.alignment.experiment": ("AlignConfig", "run", "resume", "prepare", "run_sft", "run_method", "evaluate"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'fcpo.alignment' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
