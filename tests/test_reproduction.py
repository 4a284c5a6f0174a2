"""The reproduction pipeline (fcpo-bench) end to end on synthetic data, and its pure helpers."""
from __future__ import annotations

import json

import pytest

from fcpo import reproduction as rp
from fcpo.cli import bench


def test_quick_bench_writes_table_json_and_plots(tmp_path):
    out = tmp_path / "bench"
    code = bench.main(["--dataset", "synthetic", "--quick", "--out", str(out), "--workers", "1", "--ray", "no",
                       "--no-progress", "--methods", "fcpo", "popularity", "fair-mf", "--alphas", "1.0", "0.4"])
    payload = json.loads((out / "synthetic.json").read_text())
    assert code == (1 if any(not c["holds"] for c in payload["checks"]) else 0)  # a failed check fails the command
    # every trained job is a run folder written by fcpo.runs.train_loop (log, checkpoint, metrics)
    jobs = sorted(p.name for p in (out / "jobs").iterdir())
    assert jobs == ["fcpo-a0.4-s0", "fcpo-a0.4-s0-dynamic", "fcpo-a1-s0"]
    job = out / "jobs" / "fcpo-a0.4-s0"
    assert [json.loads(x)["iteration"] for x in (job / "log.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert (job / "checkpoint.pt").is_file() and (job / "config.yaml").is_file()
    saved = json.loads((job / "metrics.json").read_text())["test"]["metrics"]
    row = next(r for r in payload["results"] if r["job"]["method"] == "fcpo" and r["job"]["alpha"] == 0.4
               and not r["job"].get("long_term"))
    assert saved == row["eval"]["metrics"]
    methods = {r["method"] for r in payload["rows"]}
    assert {"fcpo a'=1", "fcpo a'=0.4", "popularity", "fair-mf a'=0.4"} <= methods
    assert payload["long_term"] and len(payload["long_term"][0]["per_step"]) == 6
    table = (out / "synthetic.md").read_text()
    assert "| fcpo a'=0.4 |" in table and "Paper (ML-1M" in table
    for name in ("tradeoff", "lorenz", "long_term"):
        assert (out / f"synthetic_{name}.png").stat().st_size > 2000
    pop = next(r for r in payload["rows"] if r["method"] == "popularity")
    assert pop["popularity_rate"] > 99.0  # G0 first; only users who saw most of G0 get a tail item


def test_grid_jobs_cover_methods_alphas_and_seeds():
    spec = rp.GridSpec(seeds=(0, 1), alphas=(1.0, 0.4), methods=("fcpo", "trpo", "random", "fair-mf"), ppo_alphas=())
    jobs = spec.jobs()
    fcpo_static = [j for j in jobs if j["method"] == "fcpo" and not j.get("long_term")]
    assert sorted((j["alpha"], j["seed"]) for j in fcpo_static) == [(0.4, 0), (0.4, 1), (1.0, 0), (1.0, 1)]
    assert sum(j["method"] == "random" for j in jobs) == 2  # random ranker: every seed
    assert sum(j["method"] == "fair-mf" and not j.get("long_term") for j in jobs) == 2  # per α', one seed
    assert sum(bool(j.get("long_term")) for j in jobs) == 3  # fcpo x 2 seeds + fair-mf


def test_aggregate_and_checks_on_hand_made_results():
    def result(method, alpha, seed, f1, pop):
        metrics = {"recall@5": 0.1, "f1@5": f1, "ndcg@5": 0.1, "recall@50": 0.3, "f1@50": 0.1, "ndcg@50": 0.2,
                   "popularity_rate": pop, "gini": 0.5, "coverage": 0.5}
        return {"job": {"method": method, "alpha": alpha, "seed": seed}, "train_seconds": 1.0,
                "eval": {"metrics": metrics}}
    rows = rp.aggregate([result("fcpo", 0.4, 0, 0.02, 0.40), result("fcpo", 0.4, 1, 0.04, 0.50),
                         result("fair-mf", 0.4, 0, 0.035, 0.4), result("popularity", 1.0, 0, 0.01, 1.0)])
    fcpo = next(r for r in rows if r["method"] == "fcpo a'=0.4")
    assert fcpo["f1@5"] == pytest.approx(3.0) and fcpo["f1@5_std"] == pytest.approx(1.0)
    assert fcpo["popularity_rate"] == pytest.approx(45.0)
    checks = {c["check"]: c["holds"] for c in rp.checks(rows, tolerance=4.0)}
    assert checks["fcpo a'=0.4: popular share <= α' + 4 pts"] is False  # 45 > 44
    assert checks["fcpo a'=0.4 F1@5 > fair-mf a'=0.4 F1@5"] is False  # 3.0 < 3.5
