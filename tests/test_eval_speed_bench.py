"""benchmarks/eval_speed.py's timed evaluation, on synthetic data: both scoring paths recommend the same,
and every row carries its thread count and load averages."""
from __future__ import annotations


import pytest

from benchmark_scripts import load_benchmark
import torch



@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FCPO_DATA_DIR", raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_benchmark("eval_speed")
    torch.set_num_threads(old)


def test_timed_evaluation_rows(bench):
    from fcpo.policies.actor import SlateActor

    scores = SlateActor.scores
    new = bench.time_evaluation("synthetic", 1, 4, None, 2, row_by_row=False)
    old = bench.time_evaluation("synthetic", 1, 4, None, 1, row_by_row=True)
    assert SlateActor.scores is scores  # the row-by-row patch is undone
    assert (new["k"], new["steps"], new["actor_k"], new["ranks_by_scores"]) == (1, 4, 5, True)
    assert new["exposure_counts"] == old["exposure_counts"]
    assert new["metrics_at_last_cutoff"] == old["metrics_at_last_cutoff"] and "precision@4" in new["metrics_at_last_cutoff"]
    assert len(new["seconds"]) == 2 and 0 < new["act_median_s"] <= new["median_s"]
    assert new["threads"] == 1 and len(new["load_avg_before"]) == 3 and len(new["load_avg_after"]) == 3
    assert (new["scores"], old["scores"]) == ("mean-of-rows", "row-by-row")
