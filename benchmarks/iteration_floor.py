"""How far one FCPO training iteration is from this core's floor for the work it does (issue 17).

The iteration is profiled op by op (``torch.profiler``, shapes recorded) and each op is given a floor:

* matrix products (``aten::mm``, ``addmm``, ``bmm``, ``baddbmm``, ``mv``, ``addmv``): the op replayed alone
  at the same shapes on random data, best of several timed loops -- what this core's BLAS does for that
  product at its best (warm caches, no framework around it);
* every other op that touches data: its bytes (inputs read, plus an output the size of its largest input
  unless it reduces) at the fastest one-thread copy rate this core reaches for a block that size
  (in-cache blocks copy faster) -- a memory-traffic floor, below what even a fused kernel could do for
  transcendental functions or a selection;
* views and other metadata ops, and all Python and dispatcher time: zero.

The floor is the sum; the figure reported is wall time per iteration (median of unprofiled iterations) /
floor per iteration (mean over the profiled ones).  The table of ops by time above their floor says where
the remaining time goes.  The floor is a lower bound by construction, not a practical target: it assumes
the same arithmetic but perfect fusion and no overhead.  Shapes alone are recorded, so the byte counts
assume 4-byte elements (float32; bool masks are 1 byte and int64 indices 8, a small error either way).

    python benchmarks/iteration_floor.py [--dataset ml-100k] [--alpha 0.4] [--slate-size 5]
        [--constraint per-slate] [--warmup 2] [--iterations 3] [--threads 1]
        [--out results/benchmarks/iteration_floor.json]

``--slate-size 1 --constraint expected`` is the authors' work shape (``authors_side_by_side.py --our-shapes``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_data_dir, write_json  # noqa: E402

#: ops whose floor is their replayed time (matrix products, the BLAS-bound work)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mv", "aten::addmv")
#: ops that move no data (views, allocation, metadata) or only dispatch to children
METADATA_OPS = frozenset({
    "aten::view", "aten::as_strided", "aten::as_strided_", "aten::t", "aten::transpose", "aten::empty",
    "aten::empty_strided", "aten::empty_like", "aten::reshape", "aten::_reshape_alias", "aten::expand",
    "aten::detach", "aten::detach_", "detach", "detach_", "aten::unsqueeze", "aten::unsqueeze_",
    "aten::squeeze", "aten::squeeze_", "aten::slice", "aten::select", "aten::permute", "aten::alias",
    "aten::lift_fresh", "aten::unbind", "aten::split", "aten::split_with_sizes", "aten::narrow",
    "aten::resolve_conj", "aten::resolve_neg", "aten::_unsafe_view", "aten::numpy_T", "aten::result_type",
    "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "aten::chunk", "aten::contiguous",
    "aten::matmul", "aten::linear", "aten::to", "aten::_to_copy", "aten::zeros", "aten::ones", "aten::set_",
    "aten::requires_grad_", "aten::zero_", "aten::fill_", "aten::scalar_tensor", "aten::full",
    "aten::lift", "aten::_has_compatible_shallow_copy_type", "aten::stride", "aten::size", "aten::dim",
})
#: data ops whose output is much smaller than their input (no output bytes counted)
REDUCTIONS = ("aten::sum", "aten::mean", "aten::max", "aten::min", "aten::amax", "aten::amin", "aten::topk",
              "aten::argmax", "aten::argmin", "aten::any", "aten::all", "aten::dot", "aten::norm",
              "aten::linalg_vector_norm", "aten::std", "aten::var", "aten::prod", "aten::logsumexp",
              "aten::count_nonzero", "aten::nonzero", "aten::sort", "aten::kthvalue")
ELEMENT_BYTES = 4
#: block sizes (bytes) at which the one-thread copy rate is measured
COPY_SIZES = (1 << 15, 1 << 18, 1 << 21, 1 << 24, 1 << 27)


def tensor_numels(shapes) -> list[int]:
    """Element counts of the tensor arguments among a profiler event's input shapes (scalars: [])."""
    out = []
    for shape in shapes or ():
        if isinstance(shape, (list, tuple)) and len(shape) > 0 and all(isinstance(d, int) for d in shape):
            n = 1
            for d in shape:
                n *= d
            out.append(n)
    return out


def gemm_flops(name: str, shapes) -> int:
    """Multiply-adds x 2 of a matrix-product op from its input shapes (0 if they do not fit it)."""
    dims = [list(sh) for sh in shapes or () if isinstance(sh, (list, tuple)) and len(sh) > 0]
    if name in ("aten::addmm", "aten::baddbmm", "aten::addmv"):
        dims = dims[1:]  # the added term
    if len(dims) != 2:
        return 0
    a, b = dims
    if name in ("aten::mm", "aten::addmm") and len(a) == 2 and len(b) == 2:
        return 2 * a[0] * a[1] * b[1]
    if name in ("aten::bmm", "aten::baddbmm") and len(a) == 3 and len(b) == 3:
        return 2 * a[0] * a[1] * a[2] * b[2]
    if name in ("aten::mv", "aten::addmv") and len(a) == 2 and len(b) == 1:
        return 2 * a[0] * a[1]
    return 0


def op_bytes(name: str, shapes) -> int:
    """Bytes an op must at least move: its tensor inputs read, plus an output the size of the largest
    input unless it is a reduction; 0 for metadata ops.  4-byte elements (see the module docstring)."""
    if name in METADATA_OPS or name in GEMM_OPS:
        return 0
    numels = tensor_numels(shapes)
    if not numels:
        return 0
    read = sum(numels)
    write = 0 if name in REDUCTIONS else max(numels)
    return ELEMENT_BYTES * (read + write)


def copy_rates(sizes=COPY_SIZES, min_seconds: float = 0.02) -> dict[int, float]:
    """Fastest one-thread rate (bytes moved per second, read + write) of ``dst.copy_(src)`` per block size."""
    rates = {}
    for size in sizes:
        n = max(1, size // 4)
        src, dst = torch.randn(n), torch.empty(n)
        dst.copy_(src)
        loops = max(1, int(min_seconds * 5e9 / (2 * size)))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(loops):
                dst.copy_(src)
            best = min(best, (time.perf_counter() - t0) / loops)
        rates[size] = 2 * 4 * n / best
    return rates


def memory_floor_s(nbytes: int, rates: dict[int, float]) -> float:
    """``nbytes`` at the copy rate of the smallest measured block holding them (the largest block's rate
    beyond it): data that fits a cache level moves at that level's rate."""
    if nbytes <= 0:
        return 0.0
    for size in sorted(rates):
        if nbytes <= size:
            return nbytes / rates[size]
    return nbytes / rates[max(rates)]


def _gemm_args(name: str, shapes, concrete):
    """Random tensors (and scalars) to replay one matrix-product op, or None if the shapes do not fit it."""
    tensors = [torch.randn(*s) for s in shapes if isinstance(s, (list, tuple)) and len(s) > 0]
    scalars = {}
    if name in ("aten::addmm", "aten::baddbmm", "aten::addmv") and concrete:
        extra = [c for c in concrete[3:] if isinstance(c, (int, float))]
        if len(extra) == 2:
            scalars = {"beta": extra[0], "alpha": extra[1]}
    want = {"aten::mm": 2, "aten::bmm": 2, "aten::mv": 2, "aten::addmm": 3, "aten::baddbmm": 3, "aten::addmv": 3}
    if len(tensors) != want[name]:
        return None
    return tensors, scalars


def replay_seconds(name: str, shapes, concrete=None, min_seconds: float = 0.002) -> float | None:
    """Best time of one matrix-product op replayed alone at ``shapes`` (None if it cannot be rebuilt)."""
    built = _gemm_args(name, shapes, concrete)
    if built is None:
        return None
    tensors, scalars = built
    fn = getattr(torch, name.split("::")[1])
    try:
        fn(*tensors, **scalars)
    except RuntimeError:
        return None
    t0 = time.perf_counter()
    fn(*tensors, **scalars)
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, min(10000, int(min_seconds / once)))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn(*tensors, **scalars)
        best = min(best, (time.perf_counter() - t0) / loops)
    return best


def _key(shapes, concrete) -> str:
    return repr([list(s) if isinstance(s, (list, tuple)) else s for s in shapes]) + repr(
        [c for c in (concrete or []) if isinstance(c, (int, float, bool))])


def floor_table(events, iterations: int, rates: dict[int, float], replay=replay_seconds) -> dict:
    """Per-op floor of the profiled events (``iterations`` iterations): totals per iteration and rows
    sorted by time above the floor (self times are the profiled ones: the profiler adds its own cost).
    ``events``: objects with ``name``, ``input_shapes``,
    ``concrete_inputs`` and ``self_cpu_time_total`` (µs), as ``torch.profiler`` gives."""
    rows = defaultdict(lambda: {"calls": 0, "self_s": 0.0, "floor_s": 0.0, "bytes": 0, "gemm_flops": 0})
    replayed: dict[tuple, float | None] = {}
    unreplayed = 0
    for ev in events:
        name = ev.name
        row = rows[name]
        row["calls"] += 1
        row["self_s"] += float(ev.self_cpu_time_total) * 1e-6
        shapes = ev.input_shapes
        if name in GEMM_OPS:
            concrete = getattr(ev, "concrete_inputs", None)
            key = (name, _key(shapes, concrete))
            if key not in replayed:
                replayed[key] = replay(name, shapes, concrete)
            t = replayed[key]
            if t is None:  # not rebuildable: count its own time (no credit taken)
                unreplayed += 1
                t = float(ev.self_cpu_time_total) * 1e-6
            row["floor_s"] += t
            row["gemm_flops"] += gemm_flops(name, shapes)
        else:
            nbytes = op_bytes(name, shapes)
            row["bytes"] += nbytes
            row["floor_s"] += memory_floor_s(nbytes, rates)
    per_it = max(1, iterations)
    table = []
    for name, row in rows.items():
        table.append({"op": name, "calls": row["calls"] / per_it, "self_s": row["self_s"] / per_it,
                      "floor_s": row["floor_s"] / per_it, "above_floor_s": (row["self_s"] - row["floor_s"]) / per_it,
                      "bytes": row["bytes"] / per_it, "gemm_flops": row["gemm_flops"] / per_it,
                      "kind": "gemm" if name in GEMM_OPS else ("metadata" if name in METADATA_OPS else "data")})
    table.sort(key=lambda r: r["above_floor_s"], reverse=True)
    gemm = [r for r in table if r["kind"] == "gemm"]
    data = [r for r in table if r["kind"] == "data"]
    return {"floor_s": sum(r["floor_s"] for r in table),
            "gemm_floor_s": sum(r["floor_s"] for r in gemm), "gemm_self_s": sum(r["self_s"] for r in gemm),
            "gemm_flops": sum(r["gemm_flops"] for r in gemm),
            "memory_floor_s": sum(r["floor_s"] for r in data), "data_self_s": sum(r["self_s"] for r in data),
            "data_bytes": sum(r["bytes"] for r in data),
            "ops_self_s": sum(r["self_s"] for r in table), "distinct_gemm_shapes": len(replayed),
            "gemm_calls_not_replayed": unreplayed / per_it, "ops": table}


def build_agent(args):
    from fcpo import runs
    from fcpo.cli.train import build_parser, config_from_args

    flags = ["--dataset", args.dataset, "--alpha", str(args.alpha), "--seed", "0", "--device", "cpu",
             "--threads", str(args.threads), "--slate-size", str(args.slate_size), "--constraint", args.constraint]
    if args.data_dir and args.dataset != "synthetic":  # synthetic data is generated, not read
        flags += ["--data-dir", args.data_dir]
    config = config_from_args(build_parser().parse_args(flags))
    runs.set_threads(config.threads)
    return runs.build_agent(config, "cpu"), flags


def measure(args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    agent, flags = build_agent(args)
    it = 0
    for _ in range(args.warmup):
        agent.train_iteration(it)
        it += 1
    walls = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        agent.train_iteration(it)
        walls.append(time.perf_counter() - t0)
        it += 1
    # shapes only: the profiler's own FLOP counting (with_flops) slows elementwise ops several-fold
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.iterations):
            agent.train_iteration(it)
            it += 1
    events = [ev for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CPU]
    rates = copy_rates()
    table = floor_table(events, args.iterations, rates)
    wall = statistics.median(walls)
    peak = peak_gemm_rate()
    return {"fcpo_train_flags": " ".join(flags), "slate_size": args.slate_size, "constraint": args.constraint,
            "iteration_wall_s": walls, "iteration_median_s": wall, "floor_s": table["floor_s"],
            "ratio_to_floor": wall / table["floor_s"] if table["floor_s"] > 0 else float("nan"),
            "kernel_share_of_wall": table["ops_self_s"] / wall if wall > 0 else float("nan"),
            "copy_rates_GBps": {str(k): v / 1e9 for k, v in rates.items()},
            "peak_gemm_GFLOPs": peak / 1e9,
            "gemm_at_peak_s": table["gemm_flops"] / peak if peak > 0 else float("nan"),
            **{k: v for k, v in table.items() if k != "ops"}, "ops": table["ops"][:args.top]}


def peak_gemm_rate(n: int = 1024) -> float:
    """One-thread float32 GEMM rate (FLOP/s) at n × n × n, best of 5."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--alpha", type=float, default=0.4)
    ap.add_argument("--slate-size", type=int, default=5, help="K (fcpo-train's default 5; the authors' 1)")
    ap.add_argument("--constraint", default="per-slate", choices=("per-slate", "expected"))
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations, then as many profiled")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the floor is a one-core floor)")
    ap.add_argument("--top", type=int, default=25, help="ops listed in the output, by time above their floor")
    ap.add_argument("--out", default=None, help="JSON path (default results/benchmarks/iteration_floor_K<K>.json)")
    args = ap.parse_args(argv)
    for flag, value, low in (("--slate-size", args.slate_size, 1), ("--iterations", args.iterations, 1),
                             ("--warmup", args.warmup, 0), ("--threads", args.threads, 1), ("--top", args.top, 1)):
        if value < low:
            ap.error(f"{flag} must be >= {low}, got {value}")
    torch.set_num_threads(args.threads)
    row = measure(args)
    print(f"{row['fcpo_train_flags']}")
    print(f"iteration {row['iteration_median_s']:.3f} s (median of {args.iterations}); floor {row['floor_s']:.3f} s "
          f"= matrix products replayed {row['gemm_floor_s']:.3f} s + memory traffic {row['memory_floor_s']:.3f} s; "
          f"ratio {row['ratio_to_floor']:.2f}")
    print(f"op time {row['ops_self_s']:.3f} s per profiled iteration ({100 * row['kernel_share_of_wall']:.0f} % of the "
          f"unprofiled wall); GEMM {row['gemm_flops'] / 1e9:.2f} GFLOP, {row['gemm_self_s']:.3f} s in place, "
          f"{row['gemm_floor_s']:.3f} s replayed, {row['gemm_at_peak_s']:.3f} s at the 1024^3 rate "
          f"({row['peak_gemm_GFLOPs']:.0f} GFLOP/s)")
    print(f"{'op':<34s} {'calls':>7s} {'self s':>8s} {'floor s':>8s} {'above':>8s}")
    for op in row["ops"][:15]:
        print(f"{op['op']:<34s} {op['calls']:7.0f} {op['self_s']:8.4f} {op['floor_s']:8.4f} {op['above_floor_s']:8.4f}")
    out = args.out or str(RESULTS / f"iteration_floor_K{args.slate_size}_{args.constraint}.json")
    payload = {"benchmark": "iteration_floor", "args": vars(args), "result": row}
    print(f"wrote {write_json(out, payload)}")
    return payload


if __name__ == "__main__":
    main()
