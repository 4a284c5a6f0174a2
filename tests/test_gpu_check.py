"""benchmarks/gpu_check.py: the device comparison run CPU against CPU (same seed: identical), its
comparison rules on hand-made records, the CPU-drawn randomness, and the clean skip without CUDA."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark_scripts import load_benchmark
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    return load_benchmark("gpu_check")


def _env(tmp_path) -> dict:
    env = {**os.environ, "FCPO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("FCPO_DATA_DIR", None)
    return env


def test_cpu_against_cpu_agrees_exactly_and_reports_both_timings(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--devices", "cpu", "cpu", "--dataset", "synthetic",
                           "--iterations", "2", "--out", str(out)], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agree within" in proc.stdout and "DISAGREE" not in proc.stdout
    saved = json.loads(out.read_text())
    assert saved["ok"] is True and saved["devices"] == ["cpu", "cpu"]
    assert [r["iteration"] for r in saved["comparison"]] == [0, 1]
    assert all(r["slate_mismatch"] == 0.0 and r["mismatched_fields"] == {} for r in saved["comparison"])
    assert set(saved["timing"]) == {"cpu", "cpu (compared)"}
    assert all(len(t["seconds"]) == 2 and t["median_s"] > 0 for t in saved["timing"].values())
    ref, other = saved["records"].values()
    assert ref == other and len(ref) == 2 and math_finite(ref[0]["value_loss"])
    assert saved["machine"]["threads"] == 1 and len(saved["machine"]["load_avg"]) == 3
    assert saved["machine_info_start"]["threads"] == 1


def math_finite(x) -> bool:
    return bool(np.isfinite(x))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run")
def test_without_cuda_it_skips_cleanly_and_writes_nothing(tmp_path):
    out = tmp_path / "never.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device: skipped"
    assert not out.exists()


def _run(records, slates):
    return {"records": records, "slates": slates}


def _records(n=3):
    return [{"reward": 1.5 + i, "value_loss": 0.02, "kl": 0.01, "lambda": float("nan"), "cpo_case": "recovery"}
            for i in range(n)]


def test_compare_applies_the_stated_tolerances_to_the_checked_iterations_only():
    gc = _module()
    rng = np.random.default_rng(0)
    slates = [rng.integers(0, 100, size=(200, 5)) for _ in range(3)]  # 1000 items per iteration
    ref = _run(_records(), slates)
    same = gc.compare(ref, _run(_records(), [s.copy() for s in slates]), 2, 1e-3, 1e-4, 1e-3)
    assert same["ok"] and [r["checked"] for r in same["iterations"]] == [True, True, False]

    within = _records()
    within[0]["reward"] += 1e-3 * 1.5  # exactly atol + rtol·|a| would be 1e-4 + 1.5e-3: inside
    assert gc.compare(ref, _run(within, slates), 2, 1e-3, 1e-4, 1e-3)["ok"]
    outside = _records()
    outside[1]["value_loss"] = 0.02 + 2e-4  # 1e-4 + 2e-5 allowed
    res = gc.compare(ref, _run(outside, slates), 2, 1e-3, 1e-4, 1e-3)
    assert not res["ok"] and res["iterations"][1]["mismatched_fields"] == {"value_loss": [0.02, 0.02 + 2e-4]}

    case = _records()
    case[0]["cpo_case"] = "feasible"
    assert not gc.compare(ref, _run(case, slates), 2, 1e-3, 1e-4, 1e-3)["ok"]
    nan = _records()
    nan[0]["kl"] = float("nan")  # nan only on one side is a mismatch
    assert not gc.compare(ref, _run(nan, slates), 2, 1e-3, 1e-4, 1e-3)["ok"]

    late = _records()
    late[2]["reward"] = 99.0  # iteration 2 is reported, not checked
    res = gc.compare(ref, _run(late, slates), 2, 1e-3, 1e-4, 1e-3)
    assert res["ok"] and not res["iterations"][2]["records_ok"]

    one, two = [s.copy() for s in slates], [s.copy() for s in slates]
    one[1][0, 0] += 1  # 1 item of 1000 = 0.1 %: at the tolerance
    two[1][0, :2] += 1  # 0.2 %: above it
    assert gc.compare(ref, _run(_records(), one), 2, 1e-3, 1e-4, 1e-3)["ok"]
    res = gc.compare(ref, _run(_records(), two), 2, 1e-3, 1e-4, 1e-3)
    assert not res["ok"] and res["iterations"][1]["slate_mismatch"] == pytest.approx(0.002)
    shorter = [s.copy() for s in slates]
    shorter[0] = shorter[0][:-1]  # another number of samples: everything differs
    assert not gc.compare(ref, _run(_records(), shorter), 2, 1e-3, 1e-4, 1e-3)["ok"]


def test_random_draws_with_a_cpu_generator_come_from_the_cpu_stream_on_another_device():
    gc = _module()
    originals = [getattr(torch, n) for n in gc.RANDOM_FUNCTIONS]
    expected = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    expected_perm = torch.randperm(7, generator=torch.Generator().manual_seed(5))
    with gc.cpu_drawn_randomness():
        moved = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), device="meta")
        perm = torch.randperm(7, generator=torch.Generator().manual_seed(5), device="meta")
        plain = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), device="cpu")
        assert torch.rand(2).shape == (2,)  # calls without a generator pass through
    assert moved.device.type == "meta" and moved.shape == (4, 3) and perm.device.type == "meta"
    assert torch.equal(plain, expected)
    # the generator advanced as a CPU draw does: the next draw matches the CPU stream's next draw
    g_ref, g_moved = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.randn(10, generator=g_ref)
    with gc.cpu_drawn_randomness():
        torch.randn(10, generator=g_moved, device="meta")
    assert torch.equal(torch.randn(3, generator=g_ref), torch.randn(3, generator=g_moved))
    assert [getattr(torch, n) for n in gc.RANDOM_FUNCTIONS] == originals  # restored
    assert expected_perm.shape == (7,)
