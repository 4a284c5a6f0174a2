"""benchmarks/decode_speed.py on a tiny shape: every old/new pair it times must agree, and the greedy
decoder's retry shares must respond to the size of the row offsets."""
from __future__ import annotations

import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture
def bench(synthetic_only_one_thread):
    return load_benchmark("decode_speed")


@pytest.mark.parametrize("cap", [2, None])
def test_every_pair_agrees_on_a_small_shape(bench, cap):
    out = bench.bench_shape("tiny", 40, 5, 300, 8, cap, repeats=1, offset_scales=[0.0, 3.0])
    assert out["row_scores"]["same"] and out["exclusion"]["same"] and out["rank_top1"]["same"]
    assert all(v["same"] for v in out["sampled_decode_blocks"].values())
    slots = out["slot_decode"]
    assert slots["capped_same"] and slots["uncapped_same"] and slots["cap"] == (cap if cap is not None else 2)
    assert set(out["sampled_decode_blocks"]) == {str(b) for b in bench.BLOCK_BUDGETS}
    still, large = out["greedy_decode"]
    assert still["same_as_full_scores"] and large["same_as_full_scores"]
    assert still["rows"] > 0 and still["retried_share"] == 0.0 and still["recomputed_share"] == 0.0
    assert large["retried_share"] > 0.5  # offsets 3x the query's spread: the shared bound rarely holds


def test_main_writes_the_json(bench, tmp_path):
    out = tmp_path / "decode.json"
    payload = bench.main(["--repeats", "1", "--shapes", "ml-100k", "--offset-scales", "0", "--out", str(out)])
    assert out.exists() and payload["threads"] == 1 and len(payload["results"]) == 1
