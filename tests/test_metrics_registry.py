"""The list-metric registry: built-in metrics, duplicates refused, a new metric is picked up."""
from __future__ import annotations

import numpy as np
import pytest

from fcpo.metrics import METRICS, ListContext, gini_fcpo, list_metrics, register_metric, unregister_metric


def test_builtin_metrics_on_a_hand_checked_case():
    rec = np.array([[0, 1], [0, 2]])  # item 0 shown twice, 1 and 2 once; G0 = {0}
    ctx = ListContext(is_popular=np.array([True, False, False, False]), n_items=4)
    out = list_metrics(rec, ctx)
    assert out["popularity_rate"] == pytest.approx(0.5)
    assert out["coverage"] == pytest.approx(0.75)
    assert out["gini"] == pytest.approx(gini_fcpo(np.array([2, 1, 1, 0])))
    assert {"popularity_rate", "gini", "coverage"} <= set(METRICS)


def test_a_new_metric_is_picked_up_and_duplicates_raise():
    @register_metric("tail_share_test", higher_is_better=True, description="share of slots from G1")
    def tail_share(rec, ctx):
        return float(1.0 - ctx.is_popular[rec].mean())

    try:
        rec = np.array([[0, 1, 2]])
        out = list_metrics(rec, ListContext(is_popular=np.array([True, False, False]), n_items=3))
        assert out["tail_share_test"] == pytest.approx(2 / 3)
        with pytest.raises(ValueError, match="already registered"):
            register_metric("tail_share_test", higher_is_better=True, description="x")(tail_share)
        with pytest.raises(ValueError, match="description"):
            register_metric("undocumented", higher_is_better=True, description="")
    finally:
        unregister_metric("tail_share_test")
    assert "tail_share_test" not in METRICS


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FCPO_DATA_DIR", raising=False)


@pytest.mark.usefixtures("synthetic")
def test_the_evaluator_reports_every_registered_metric():
    from fcpo.envs import EnvSpec
    from fcpo.evaluate import evaluate
    from fcpo.policies.rankers import PopularityRanker

    spec = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic", "horizon": 3, "embedding_dim": 8})
    env = spec.make_vector(1)
    policy = PopularityRanker(env.env_data.train_counts)

    @register_metric("tail_share_eval_test", higher_is_better=True, description="share of slots from G1")
    def tail_share(rec, ctx):
        return float(1.0 - ctx.is_popular[rec].mean())

    try:
        report = evaluate(policy, spec, protocol="rollout", k=2, steps=3)
    finally:
        unregister_metric("tail_share_eval_test")
    m = report["metrics"]
    assert m["tail_share_eval_test"] == pytest.approx(1.0 - m["popularity_rate"])
    counts = np.array(report["exposure_counts"])  # the first seed's lists (greedy: the only seed)
    assert m["gini"] == pytest.approx(gini_fcpo(counts))
    assert m["coverage"] == pytest.approx(np.count_nonzero(counts) / env.n_items)
    assert counts.sum() == 2 * 3 * report["users"]
    assert 0.0 < m["popularity_rate"] <= 1.0  # the popularity ranker recommends G0 items
