"""Benchmark: the quick grid (``fcpo-bench --dataset synthetic --quick``) through a local Ray instance
vs the process pool, same number of parallel jobs; Ray's overhead per job (target: under 1 s).

Three wall times: the process pool; Ray's start-up (``ray.init(num_cpus=W)``); the grid through Ray
(object-store data, worker start-up, scheduling).  Overhead per job = (Ray grid − pool) / jobs, with
and without the start-up.  Also the round trip of an empty Ray task, and whether both paths give
identical numbers.  Writes JSON with the thread count and the load average before and after.

    python benchmarks/ray_overhead.py --out results/benchmarks/ray_overhead.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, markdown_table, write_json  # noqa: E402

from fcpo.reproduction import GridSpec  # noqa: E402
from fcpo.reproduction import job_name  # noqa: E402
from fcpo.reproduction.dispatch import run_grid  # noqa: E402


def numbers(result: dict) -> dict:
    """A result without wall times, after a JSON round trip."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("seconds", "train_seconds", "run_dir")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(json.dumps(result, default=float)))


def empty_task_round_trip(n: int) -> float:
    """Median seconds of submitting one empty task and getting its result (warm workers)."""
    import ray

    @ray.remote(num_cpus=1)
    def nothing():
        return None

    ray.get([nothing.remote() for _ in range(4)])  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ray.get(nothing.remote())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS / "ray_overhead.json"))
    ap.add_argument("--workers", type=int, default=2, help="parallel jobs in both paths (default 2)")
    ap.add_argument("--methods", nargs="+", default=None, help="grid methods (default: the table grid's)")
    args = ap.parse_args(argv)
    import ray
    import torch

    spec = GridSpec(dataset="synthetic").quick()  # the grid of `fcpo-bench --dataset synthetic --quick`
    if args.methods:
        spec.methods = tuple(args.methods)
    jobs = len(spec.jobs())
    load_start = os.getloadavg()

    t0 = time.perf_counter()
    pool = run_grid(spec, None, workers=args.workers, use_ray=False, progress=False)
    pool_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        through_ray = run_grid(spec, None, workers=args.workers, use_ray=True, progress=False)
        ray_s = time.perf_counter() - t0
        round_trip = empty_task_round_trip(50)
    finally:
        ray.shutdown()
    load_end = os.getloadavg()

    assert pool.ok and through_ray.ok, [f.traceback for f in pool.failures + through_ray.failures]
    same = ({job_name(r["job"]): numbers(r) for r in pool.results}
            == {job_name(r["job"]): numbers(r) for r in through_ray.results})
    per_job = (ray_s - pool_s) / jobs
    per_job_with_start = (ray_s + init_s - pool_s) / jobs
    rows = [{"path": "process pool", "wall_s": pool_s},
            {"path": "ray (grid)", "wall_s": ray_s},
            {"path": "ray (start-up)", "wall_s": init_s}]
    payload = {
        "benchmark": "ray_overhead", "grid": "fcpo-bench --dataset synthetic --quick" + (" --methods " + " ".join(args.methods) if args.methods else ""),
        "jobs": jobs, "workers": args.workers, "torch_threads": torch.get_num_threads(),
        "job_threads": int(os.environ.get("FCPO_JOB_THREADS", "1")), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": load_start, "load_average_end": load_end,
        "pool_wall_s": pool_s, "ray_init_s": init_s, "ray_grid_wall_s": ray_s,
        "ray_overhead_per_job_s": per_job, "ray_overhead_per_job_with_startup_s": per_job_with_start,
        "empty_task_round_trip_s": round_trip, "target_per_job_s": 1.0, "target_met": per_job < 1.0,
        "identical_numbers": same,
        "job_train_seconds": {"pool": sum(r["train_seconds"] for r in pool.results),
                              "ray": sum(r["train_seconds"] for r in through_ray.results)},
    }
    print(markdown_table(rows, ["path", "wall_s"]))
    print(f"{jobs} jobs, {args.workers} workers: Ray overhead {per_job:+.3f} s/job "
          f"({per_job_with_start:+.3f} s/job with start-up {init_s:.1f} s); empty task {1e3 * round_trip:.1f} ms; "
          f"identical numbers: {same}; load average {load_start[0]:.1f} -> {load_end[0]:.1f}")
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
