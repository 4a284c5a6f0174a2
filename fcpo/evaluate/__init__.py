"""Run any policy over the test users and return one report.

Slate protocols ``"rollout"`` and ``"ranking"`` (:mod:`fcpo.evaluate.evaluator`) for the RL envs;
next-item protocols ``"sdpo-candidates"`` and ``"sprec-topk"`` (:mod:`fcpo.evaluate.candidates`)
for preference alignment.
"""
from fcpo.evaluate.candidates import CANDIDATE_PROTOCOLS, evaluate_candidates
from fcpo.evaluate.evaluator import PROTOCOLS, evaluate, format_report

__all__ = ["PROTOCOLS", "evaluate", "format_report", "CANDIDATE_PROTOCOLS", "evaluate_candidates"]
