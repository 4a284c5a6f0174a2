"""benchmarks/ialp.py: a seconds-long smoke run in the default suite; the real run under ``-m benchmark``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark

REPO = Path(__file__).resolve().parents[1]
METHODS = ["none", "iALP", "A-iALP_ft", "A-iALP_ap"]


def _bench():
    return load_benchmark("ialp")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fcpo-cache-bench-ialp"))


def _check(result: dict, out: Path, n_seeds: int, iterations: int):
    saved = json.loads(out.read_text())
    assert saved["methods"][:4] == METHODS and set(saved["curves"]) == {"noisy", "impatient", "popular"}
    for preset, by_method in saved["curves"].items():
        for method in METHODS:
            c = by_method[method]
            assert len(c["reward"]) == n_seeds and all(len(r) == iterations for r in c["reward"])
            assert all(b > a for a, b in zip(c["interactions"][0], c["interactions"][0][1:]))
    assert len(saved["rows"]) == 3 * len(saved["methods"])
    assert all(math.isfinite(r["mean_return"]) and r["mean_return"] >= 0 for r in saved["rows"])
    assert saved["oracle"]["is_llm"] is False and "iALP-style" in saved["labels"]
    assert out.with_suffix(".png").stat().st_size > 5000
    assert result["rows"] == saved["rows"]


def test_ialp_benchmark_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "ialp.json"
    result = _bench().main(["--smoke", "--out", str(out)])
    _check(result, out, n_seeds=1, iterations=2)
    assert "MF prior" in result["methods"]


@pytest.mark.benchmark
def test_ialp_benchmark_ml100k():
    from conftest import shared_data_dir

    folder = shared_data_dir()
    if folder is None or not (folder / "ml-100k" / "u.data").is_file():
        pytest.skip("ml-100k not available (set FCPO_DATA_DIR or place ../shared/data)")
    out = REPO / "results" / "benchmarks" / "ialp.json"
    result = _bench().main(["--dataset", "ml-100k", "--data-dir", str(folder), "--oracle", "tfidf",
                            "--seeds", "0", "1", "2", "--out", str(out)])
    _check(result, out, n_seeds=3, iterations=15)
    rows = {(r["simulator"], r["method"]): r for r in result["rows"]}
    # sanity, not a claim about iALP: a policy that learns online ends above where it started
    assert rows[("popular", "none")]["final_return"] > rows[("popular", "none")]["initial_return"]
