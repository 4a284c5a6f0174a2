"""Benchmark: accuracy metrics at every cut-off t*K (t = 1..L), per-cut-off loop vs one pass.

The evaluator's rollout report scores Precision/Recall/F1/NDCG/HR at each
cut-off ``c_t = t * K``.  The loop calls the five per-cut-off functions of
:mod:`fcpo.metrics.accuracy` on ``rec[:, :c_t]`` (each recomputes the hit
mask: O(L^2) per user); :func:`fcpo.metrics.accuracy_by_cutoff` computes the
hit mask once and reads every cut-off off prefix sums (O(L)).  Synthetic random
recommendations (no duplicates, like a rollout that excludes shown items) and
relevance sets; no data set or environment is needed.

    python benchmarks/eval_speed.py --out results/benchmarks/eval_speed.json
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_json  # noqa: E402

from fcpo.metrics import (accuracy_by_cutoff, f1_at_k, hit_rate_at_k, ndcg_at_k, precision_at_k,  # noqa: E402
                          recall_at_k)

#: (users, slate size K, rollout length L, catalogue size): ml-100k and ml-1m shapes
CASES = ((943, 1, 200, 1682), (6040, 5, 10, 3706))


def per_cutoff_loop(rec: np.ndarray, relevant: np.ndarray, k: int, steps: int) -> dict[str, float]:
    """What ``fcpo.evaluate.evaluator`` does: five metric calls per cut-off on the truncated list."""
    out = {}
    for t in range(1, steps + 1):
        c = t * k
        r = rec[:, :c]
        out.update({f"precision@{c}": precision_at_k(r, relevant, c), f"recall@{c}": recall_at_k(r, relevant, c),
                    f"f1@{c}": f1_at_k(r, relevant, c), f"ndcg@{c}": ndcg_at_k(r, relevant, c),
                    f"hit_rate@{c}": hit_rate_at_k(r, relevant, c)})
    return out


def synthetic(users: int, k: int, steps: int, n_items: int, seed: int, mean_relevant: float):
    rng = np.random.default_rng(seed)
    width = k * steps
    keys = rng.random((users, n_items))
    rec = np.argpartition(keys, width - 1, axis=1)[:, :width]  # distinct items per user
    rec = np.take_along_axis(rec, np.argsort(np.take_along_axis(keys, rec, axis=1), axis=1), axis=1)
    relevant = rng.random((users, n_items)) < (mean_relevant / n_items)
    return rec.astype(np.int64), relevant


def timed(fn, repeats: int):
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS / "eval_speed.json"))
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each method (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mean-relevant", type=float, default=20.0, help="mean relevant (test) items per user")
    args = ap.parse_args(argv)
    try:
        import torch  # only to report/limit the thread count the rest of the project uses

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    load_start = os.getloadavg()
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, torch {threads}; "
          f"load avg {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"{'users':>6s} {'K':>3s} {'L':>4s} {'loop s':>8s} {'one-pass s':>10s} {'speed-up':>8s} {'max |diff|':>10s}")
    rows = []
    for users, k, steps, n_items in CASES:
        rec, relevant = synthetic(users, k, steps, n_items, args.seed, args.mean_relevant)
        lw, lc, ref = timed(lambda: per_cutoff_loop(rec, relevant, k, steps), args.repeats)
        fw, fc, fast = timed(lambda: accuracy_by_cutoff(rec, relevant, k, steps), args.repeats)
        if list(ref) != list(fast):
            raise AssertionError("one-pass and loop reports have different keys")
        diff = max(abs(ref[key] - fast[key]) for key in ref if not (math.isnan(ref[key]) and math.isnan(fast[key])))
        row = {"users": users, "k": k, "steps": steps, "n_items": n_items, "cutoffs": steps,
               "loop_wall_s": lw, "loop_cpu_s": lc, "one_pass_wall_s": fw, "one_pass_cpu_s": fc,
               "loop_median_s": statistics.median(lw), "one_pass_median_s": statistics.median(fw),
               "speedup": statistics.median(lw) / statistics.median(fw), "max_abs_diff": diff}
        rows.append(row)
        print(f"{users:6d} {k:3d} {steps:4d} {row['loop_median_s']:8.3f} {row['one_pass_median_s']:10.4f} "
              f"{row['speedup']:8.1f} {diff:10.2e}", flush=True)
    load_end = os.getloadavg()
    payload = {"benchmark": "eval_speed", "args": vars(args), "threads": threads,
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_start": list(load_start),
               "load_avg_end": list(load_end), "rows": rows}
    path = write_json(args.out, payload)
    print(f"load avg at end {load_end[0]:.2f}; wrote {path}")
    return payload


if __name__ == "__main__":
    main()
