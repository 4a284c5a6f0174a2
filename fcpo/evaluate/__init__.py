"""Run any policy over the test users and return one report (see :mod:`fcpo.evaluate.evaluator`)."""
from fcpo.evaluate.evaluator import PROTOCOLS, evaluate, format_report

__all__ = ["PROTOCOLS", "evaluate", "format_report"]
