"""The list-level metrics every evaluation report carries, found through a registry (RecBole's pattern:
a metric carries its own metadata; adding one is one decorated function).

A registered metric is ``fn(recommended [U, L] item ids, context) -> float`` where ``context``
(:class:`ListContext`) holds what list metrics need besides the lists: the G0 mask the report uses
and the catalogue size.  The evaluator computes every registered metric for every report, so a new
metric reaches ``metrics.json``, ``fcpo-eval`` and the benchmark JSON without editing the evaluator.
Accuracy at the cut-offs (precision/recall/F1/NDCG/HR) is computed separately in one pass
(:func:`fcpo.metrics.accuracy_by_cutoff`), since it needs the relevance matrix.

    @register_metric("tail_share", higher_is_better=True, description="share of slots from G1")
    def tail_share(rec, ctx):
        return 1.0 - popularity_rate(rec, ctx.is_popular)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fcpo.metrics.exposure import exposure_counts, gini_fcpo, item_coverage, popularity_rate


@dataclass(frozen=True)
class ListContext:
    """What a list metric may read besides the recommended lists."""

    is_popular: np.ndarray  # bool [n_items]: G0 of the report
    n_items: int


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[[np.ndarray, ListContext], float]
    higher_is_better: bool
    description: str


METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str, *, higher_is_better: bool, description: str):
    """Decorator: register ``fn(recommended, context) -> float`` under ``name`` (a duplicate name raises)."""
    if not description:
        raise ValueError(f"metric {name!r}: give a one-line description")

    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered (by {METRICS[name].fn.__module__})")
        METRICS[name] = MetricSpec(name, fn, bool(higher_is_better), description)
        return fn

    return wrap


def unregister_metric(name: str) -> None:
    """Remove a metric (tests and interactive use)."""
    METRICS.pop(name, None)


def list_metrics(recommended, context: ListContext) -> dict[str, float]:
    """Every registered list metric of ``recommended`` [U, L]."""
    rec = np.asarray(recommended)
    return {name: float(spec.fn(rec, context)) for name, spec in METRICS.items()}


@register_metric("popularity_rate", higher_is_better=False,
                 description="share of recommended slots holding a G0 (popular) item")
def _popularity_rate(rec, ctx):
    return popularity_rate(rec, ctx.is_popular)


@register_metric("gini", higher_is_better=False,
                 description="Gini coefficient of item exposure over the whole catalogue (FCPO eq. 23)")
def _gini(rec, ctx):
    return gini_fcpo(exposure_counts(rec, ctx.n_items))


@register_metric("coverage", higher_is_better=True, description="share of the catalogue recommended at least once")
def _coverage(rec, ctx):
    return item_coverage(rec, ctx.n_items)
