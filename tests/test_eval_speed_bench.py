"""benchmarks/eval_speed.py's timed evaluation, on synthetic data: both scoring paths recommend the same,
and every row carries its thread count and load averages."""
from __future__ import annotations


import pytest

from benchmark_scripts import load_benchmark



@pytest.fixture
def bench(synthetic_only_one_thread):
    """The benchmark module, on synthetic data with a fresh cache and one torch thread (conftest)."""
    return load_benchmark("eval_speed")


def test_timed_evaluation_rows(bench):
    from fcpo.policies.actor import SlateActor

    scores, ranking = SlateActor.scores, SlateActor._greedy_ranking
    new = bench.time_evaluation("synthetic", 1, 4, None, 2, None)
    old = bench.time_evaluation("synthetic", 1, 4, None, 1, "row-by-row")
    assert SlateActor.scores is scores and SlateActor._greedy_ranking is ranking  # the patches are undone
    assert (new["k"], new["steps"], new["actor_k"], new["ranks_by_scores"]) == (1, 4, 5, True)
    assert new["exposure_counts"] == old["exposure_counts"]
    assert new["metrics_at_last_cutoff"] == old["metrics_at_last_cutoff"] and "precision@4" in new["metrics_at_last_cutoff"]
    assert len(new["seconds"]) == 2 and 0 < new["act_median_s"] <= new["median_s"]
    assert new["threads"] == 1 and len(new["load_avg_before"]) == 3 and len(new["load_avg_after"]) == 3
    assert (new["scores"], old["scores"]) == ("mean-of-rows", "row-by-row")
    assert new["greedy_rows_decoded"] == 0  # K = 1 ranks by scores: the slate decoder is not used


def test_greedy_slates_after_training_match_the_one_product_decoder(bench):
    from fcpo.policies.actor import SlateActor

    decode_mean = SlateActor.decode_mean
    new = bench.time_evaluation("synthetic", None, 3, None, 1, None, train_iterations=1)
    old = bench.time_evaluation("synthetic", None, 3, None, 1, "one-product", train_iterations=1)
    assert SlateActor.decode_mean is decode_mean
    assert new["train_iterations"] == 1 and new["ranks_by_scores"] is False
    assert new["exposure_counts"] == old["exposure_counts"]
    assert new["metrics_at_last_cutoff"] == old["metrics_at_last_cutoff"]
    assert new["greedy_rows_decoded"] == new["users"] * new["k"] * new["steps"]
    assert 0.0 <= new["greedy_rows_retried_share"] <= 1.0 and old["greedy_rows_decoded"] == 0
