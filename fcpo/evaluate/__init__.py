"""Run any policy over the test users and return one report (see :mod:`fcpo.evaluate.evaluator`)."""
from fcpo.evaluate.constraint import constraint_report, per_slate_cap
from fcpo.evaluate.evaluator import PROTOCOLS, evaluate, format_constraint, format_report

__all__ = ["PROTOCOLS", "constraint_report", "evaluate", "format_constraint", "format_report", "per_slate_cap"]
