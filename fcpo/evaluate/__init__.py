"""Run any policy over the test users and return one report.

Slate protocols ``"rollout"`` and ``"ranking"`` (:mod:`fcpo.evaluate.evaluator`) for the RL envs, with
the constraint's view (:mod:`fcpo.evaluate.constraint`); next-item protocols ``"sdpo-candidates"`` and
``"sprec-topk"`` (:mod:`fcpo.evaluate.candidates`) for preference alignment.
"""
from fcpo.evaluate.candidates import CANDIDATE_PROTOCOLS, evaluate_candidates
from fcpo.evaluate.constraint import constraint_report, per_slate_cap
from fcpo.evaluate.evaluator import PROTOCOLS, evaluate, format_constraint, format_report

__all__ = ["PROTOCOLS", "constraint_report", "evaluate", "format_constraint", "format_report", "per_slate_cap",
           "CANDIDATE_PROTOCOLS", "evaluate_candidates"]
