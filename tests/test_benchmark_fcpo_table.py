"""`pytest -m benchmark`: the full FCPO-table reproduction on ml-100k (and ml-1m when asked).

Regenerates results/fcpo_table/ml-100k.{json,md} and the plots; asserts the
issue's statements that must hold, and records (without failing) the ones
that are open research questions (FCPO vs the α'-fair re-ranker).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fcpo.cli import bench

pytestmark = pytest.mark.benchmark
REPO = Path(__file__).resolve().parents[1]


def _run(dataset: str, data_dir: Path, seeds=("0", "1", "2")) -> dict:
    out = REPO / "results" / "fcpo_table"
    assert bench.main(["--dataset", dataset, "--data-dir", str(data_dir), "--seeds", *seeds, "--out", str(out),
                       "--job-runs", "no", "--no-progress"]) == 0  # exit 0: every check of the table holds
    return json.loads((out / f"{dataset}.json").read_text())


def test_fcpo_table_ml100k(ml100k_dir):
    payload = _run("ml-100k", ml100k_dir.parent)
    rows = {r["method"]: r for r in payload["rows"]}
    for alpha in (1.0, 0.8, 0.4):
        assert f"fcpo a'={alpha:g}" in rows and rows[f"fcpo a'={alpha:g}"]["seeds"] == 3
    tolerance = 5.0  # percentage points, stated in the README
    for alpha in (0.8, 0.4):
        assert rows[f"fcpo a'={alpha:g}"]["popularity_rate"] <= 100 * alpha + tolerance
    assert rows["fcpo a'=1"]["f1@5"] >= rows["popularity"]["f1@5"]


@pytest.mark.skipif(os.environ.get("FCPO_BENCH_ML1M") != "1", reason="set FCPO_BENCH_ML1M=1 for the ml-1m grid (long)")
def test_fcpo_table_ml1m(ml1m_dir):
    payload = _run("ml-1m", ml1m_dir.parent)
    assert payload["dataset_label"] == "ml-1m (reconstructed)"


def _run_front(dataset: str, data_dir: Path, *extra: str) -> tuple[int, dict]:
    out = REPO / "results" / "front"
    code = bench.main(["--front", "--dataset", dataset, "--data-dir", str(data_dir), "--out", str(out),
                       "--job-runs", "no", "--no-progress", "--allow-failed-checks", *extra])
    return code, json.loads((out / f"{dataset}.json").read_text())


def test_front_ml100k(ml100k_dir):
    """The whole ml-100k front (about 25 minutes on 2 cores): every row has 3 seeds and the constraint's
    view; the checks are asserted (the front's statements that must hold)."""
    code, payload = _run_front("ml-100k", ml100k_dir.parent)
    assert code == 0
    rows = {(r["method"], r["constraint"], r["alpha"]): r for r in payload["rows"]}
    for method in ("fcpo", "ppo-lagrangian", "wolpertinger", "tpgr"):
        for mode in ("per-slate", "expected"):
            for alpha in (0.2, 0.4, 0.6, 0.8, 1.0):
                row = rows[(method, mode, alpha)]
                assert row["seeds"] == 3 and len(row["popular_share_per_step"]) == 10
    failed = [c["check"] for c in payload["checks"] if not c["holds"]]
    assert not failed, failed


@pytest.mark.skipif(os.environ.get("FCPO_BENCH_ML1M") != "1", reason="set FCPO_BENCH_ML1M=1 for the ml-1m front (long)")
def test_front_ml1m_fcpo_and_reranker(ml1m_dir):
    code, payload = _run_front("ml-1m", ml1m_dir.parent, "--methods", "fcpo", "fair-mf")
    assert payload["dataset_label"] == "ml-1m (reconstructed)"
    assert {r["method"] for r in payload["rows"]} == {"fcpo", "fair-mf"}
