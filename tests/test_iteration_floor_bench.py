"""benchmarks/iteration_floor.py: the byte and floor arithmetic on hand-made profiler events, the matrix-product
replay, the Fisher-product floor cpo_step.py reports, and the script end to end in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from benchmark_scripts import BENCHMARKS, load_benchmark

REPO = BENCHMARKS.parent


@pytest.fixture(scope="module")
def floor():
    return load_benchmark("iteration_floor")


def _event(name, shapes, self_us, concrete=None):
    return SimpleNamespace(name=name, input_shapes=shapes, self_cpu_time_total=self_us, concrete_inputs=concrete)


def test_gemm_flops_from_shapes(floor):
    assert floor.gemm_flops("aten::mm", [[8, 4], [4, 2]]) == 2 * 8 * 4 * 2
    assert floor.gemm_flops("aten::addmm", [[2], [8, 4], [4, 2], [], []]) == 2 * 8 * 4 * 2
    assert floor.gemm_flops("aten::bmm", [[3, 8, 4], [3, 4, 2]]) == 2 * 3 * 8 * 4 * 2
    assert floor.gemm_flops("aten::baddbmm", [[3, 8, 2], [3, 8, 4], [3, 4, 2], [], []]) == 2 * 3 * 8 * 4 * 2
    assert floor.gemm_flops("aten::addmv", [[8], [8, 4], [4], [], []]) == 2 * 8 * 4
    assert floor.gemm_flops("aten::mm", [[8, 4]]) == 0 and floor.gemm_flops("aten::add", [[8], [8]]) == 0


def test_op_bytes_hand_checked(floor):
    assert floor.op_bytes("aten::add", [[4, 5], [4, 5], []]) == 4 * (20 + 20 + 20)  # two reads, one write
    assert floor.op_bytes("aten::mul", [[3], []]) == 4 * (3 + 3)  # the scalar moves nothing
    assert floor.op_bytes("aten::sum", [[4, 5], []]) == 4 * 20  # a reduction: reads only
    assert floor.op_bytes("aten::topk", [[2, 100], [], [], [], []]) == 4 * 200
    assert floor.op_bytes("aten::view", [[4, 5], []]) == 0 and floor.op_bytes("aten::mm", [[2, 3], [3, 4]]) == 0
    assert floor.op_bytes("aten::copy_", [[2, 3, 4], [2, 3, 4], []]) == 4 * (24 + 24 + 24)
    assert floor.tensor_numels([[2, 3], [], [5], 7, None]) == [6, 5]


def test_memory_floor_picks_the_block_that_holds_the_bytes(floor):
    rates = {100: 1e9, 1000: 5e8}
    assert floor.memory_floor_s(0, rates) == 0.0
    assert floor.memory_floor_s(50, rates) == pytest.approx(50 / 1e9)
    assert floor.memory_floor_s(100, rates) == pytest.approx(100 / 1e9)
    assert floor.memory_floor_s(500, rates) == pytest.approx(500 / 5e8)
    assert floor.memory_floor_s(5000, rates) == pytest.approx(5000 / 5e8)  # beyond the largest block


def test_floor_table_sums_and_replays_each_shape_once(floor):
    replays = []

    def fake_replay(name, shapes, concrete):
        replays.append((name, repr(shapes)))
        return None if shapes == [[9, 9], [9, 9]] else 1e-3

    events = [_event("aten::mm", [[8, 4], [4, 2]], 5000.0),
              _event("aten::mm", [[8, 4], [4, 2]], 3000.0),
              _event("aten::mm", [[9, 9], [9, 9]], 2000.0),  # not rebuildable: its own time
              _event("aten::add", [[10], [10], []], 400.0),
              _event("aten::view", [[10], []], 100.0)]
    rates = {1 << 20: 1.2e9}
    table = floor.floor_table(events, 2, rates, replay=fake_replay)
    assert sorted(replays) == [("aten::mm", "[[8, 4], [4, 2]]"), ("aten::mm", "[[9, 9], [9, 9]]")]
    mm, add, view = (next(r for r in table["ops"] if r["op"] == op) for op in ("aten::mm", "aten::add", "aten::view"))
    assert mm["calls"] == 1.5 and mm["self_s"] == pytest.approx(0.005)  # per iteration: 10 ms / 2
    assert mm["floor_s"] == pytest.approx((2e-3 + 2e-3) / 2)  # two replayed calls at 1 ms + 2 ms own
    assert mm["gemm_flops"] == (128 + 128 + 1458) / 2 and mm["kind"] == "gemm"
    assert add["bytes"] == 120 / 2 and add["floor_s"] == pytest.approx(120 / 1.2e9 / 2)
    assert view["floor_s"] == 0.0 and view["kind"] == "metadata"
    assert table["floor_s"] == pytest.approx(mm["floor_s"] + add["floor_s"])
    assert table["gemm_calls_not_replayed"] == 0.5 and table["distinct_gemm_shapes"] == 2
    assert table["ops_self_s"] == pytest.approx((5000 + 3000 + 2000 + 400 + 100) * 1e-6 / 2)
    above = [r["above_floor_s"] for r in table["ops"]]
    assert above == sorted(above, reverse=True) and table["ops"][0]["op"] == "aten::mm"


def test_replay_rebuilds_matrix_products(floor):
    assert floor.replay_seconds("aten::mm", [[64, 32], [32, 16]]) > 0
    assert floor.replay_seconds("aten::addmm", [[16], [64, 32], [32, 16], [], []], [None, None, None, 1, 1]) > 0
    assert floor.replay_seconds("aten::bmm", [[3, 4, 5], [3, 5, 6]]) > 0
    assert floor.replay_seconds("aten::mm", [[64, 32]]) is None  # wrong arity
    assert floor.replay_seconds("aten::mm", [[64, 32], [31, 16]]) is None  # shapes that do not multiply


def test_profiled_matrix_product_floor_is_below_its_time(floor):
    """A real profile: the floor of a GEMM-heavy workload is positive and below the ops' own time."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(5):
            c = torch.tanh(a @ b) + a
    assert c.shape == (256, 256)
    table = floor.floor_table(list(prof.events()), 5, floor.copy_rates(sizes=(1 << 18, 1 << 21)))
    assert table["gemm_flops"] == pytest.approx(2 * 256 ** 3)
    assert 0 < table["gemm_floor_s"] and 0 < table["memory_floor_s"]
    assert table["floor_s"] < table["ops_self_s"] * 1.5


def test_cpo_step_fvp_floor(floor):
    bench = load_benchmark("cpo_step")
    from fcpo.solvers import CPOConfig

    pb = bench.Problem(300, 12, 16, 6, 0)
    hvp = pb.hvp(CPOConfig(), "autograd")
    out = bench.fvp_floor(hvp, torch.randn(pb.n_params))
    assert out["gemm_flops"] > 0 and 0 < out["floor_s"] <= out["ops_self_s"] * 1.5
    assert out["floor_s"] == pytest.approx(out["gemm_floor_s"] + out["memory_floor_s"])


def test_script_end_to_end_on_synthetic_data(tmp_path):
    out = tmp_path / "floor.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", FCPO_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "iteration_floor.py"), "--dataset", "synthetic",
                           "--iterations", "1", "--warmup", "0", "--slate-size", "3", "--top", "5", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())["result"]
    assert row["slate_size"] == 3 and "--slate-size 3" in row["fcpo_train_flags"]
    assert 0 < row["floor_s"] < row["iteration_median_s"] and row["ratio_to_floor"] > 1  # a floor is a lower bound
    assert row["gemm_flops"] > 0 and len(row["ops"]) == 5
    assert "ratio" in proc.stdout and str(out) in proc.stdout
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "iteration_floor.py"), "--iterations", "0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--iterations must be >= 1, got 0" in bad.stderr
