"""Throughput of the native batched env over all users (issue: foundation benchmark).

Prints item-slots/s and user-steps/s for K = 10 and K = 1 on ml-100k, the
shared ml-1m copy (labelled "ml-1m (reconstructed)") and a synthetic set of
about 1 M ratings; reset time; peak RSS; and the ratio to the FCPO authors'
env (943 users x 1 item in about 10 ms, ~0.1 M user-steps/s).

    python benchmarks/env_throughput.py [--data-dir DIR] [--steps 50] [--datasets ml-100k ...]
                                        [--out results/benchmarks/env_throughput.json]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, default_data_dir, machine_info, markdown_table, write_json  # noqa: E402

AUTHORS_USER_STEPS_PER_S = 943 / 0.010


DATASETS = ("ml-100k", "ml-1m", "synthetic")


def _datasets(data_dir, names=DATASETS):
    from fcpo.data.synthetic import SyntheticConfig, write_synthetic
    from fcpo.data.sources import cache_root

    sets = []
    if data_dir:
        for name, label in (("ml-100k", "ml-100k"), ("ml-1m", "ml-1m (reconstructed)")):
            if name in names and os.path.isdir(os.path.join(data_dir, name)):
                sets.append((name, os.path.join(data_dir, name), label))
    if "synthetic" not in names:
        return sets
    cfg = SyntheticConfig(n_users=6000, n_items=4000, mean_ratings_per_user=170, seed=0)
    folder = cache_root() / f"synthetic-{cfg.digest()}"
    if not (folder / "ratings.dat.gz").is_file():
        write_synthetic(folder, cfg)
    sets.append(("synthetic", str(folder), "synthetic (~1 M ratings)"))
    return sets


def run(data_dir, steps: int, slate_sizes=(10, 1), names=DATASETS):
    from fcpo.envs import MovieLensFairVectorEnv

    rows = []
    for name, folder, label in _datasets(data_dir, names):
        for k in slate_sizes:
            t0 = time.perf_counter()
            env = MovieLensFairVectorEnv(cover_all_users=True, autoreset_mode="NextStep", dataset=name,
                                         data_dir=folder, slate_size=k, horizon=10**6)
            build_s = time.perf_counter() - t0
            n_items, n = env.n_items, env.num_envs
            t0 = time.perf_counter()
            env.reset(seed=0)
            reset_s = time.perf_counter() - t0
            rng = np.random.default_rng(0)
            actions = [rng.integers(0, n_items, (n, k)) for _ in range(8)]
            env.step(actions[0])  # warm-up
            conditions = machine_info()  # threads and load average next to the figure
            t0 = time.perf_counter()
            for s in range(steps):
                env.step(actions[s % 8])
            dt = time.perf_counter() - t0
            user_steps = n * steps / dt
            rows.append({"dataset": label, "users": n, "items": n_items, "K": k, "reset_s": reset_s,
                         "build_s (load+split+MF, cached)": build_s, "step_ms": 1000 * dt / steps,
                         "user_steps_per_s": user_steps, "item_slots_per_s": user_steps * k,
                         "vs_authors_user_steps": user_steps / AUTHORS_USER_STEPS_PER_S,
                         "threads": conditions["threads"], "load_avg": conditions["load_avg"]})
            del env
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rows, peak_mb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=default_data_dir(), help="folder holding ml-100k/ and ml-1m/")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per configuration")
    ap.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                    help="which data sets to time (quick check: --datasets ml-100k)")
    ap.add_argument("--out", default=str(RESULTS / "env_throughput.json"))
    args = ap.parse_args(argv)
    rows, peak_mb = run(args.data_dir, args.steps, names=tuple(args.datasets))
    cols = ["dataset", "users", "items", "K", "reset_s", "step_ms", "user_steps_per_s", "item_slots_per_s",
            "vs_authors_user_steps"]
    print(markdown_table(rows, cols))
    print(f"peak RSS: {peak_mb:.0f} MiB (target: >= 2 M item-slots/s at K=10)")
    path = write_json(args.out, {"rows": rows, "peak_rss_mib": peak_mb, "steps": args.steps})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
