"""The accuracy–fairness front (issue 11) — a thin wrapper over ``fcpo-bench --front``.

    python benchmarks/front.py --dataset ml-100k --data-dir ../shared/data          # the whole front, 3 seeds
    python benchmarks/front.py --dataset ml-1m --data-dir ../shared/data --methods fcpo fair-mf
    python benchmarks/front.py --calibrate [--dataset ml-100k] [--iterations 5]     # re-measure job costs

Other ``fcpo-bench`` flags pass through (``--out``, ``--workers``, ``--constraint-modes``, ...).
``--calibrate`` trains one job of each RL method at the front preset's settings (α' = 0.4, per-slate;
TRPO at α' = 1) on one thread and prints the one-thread CPU seconds of setup, one iteration and the
evaluation, in the form of :data:`fcpo.reproduction.grid.JOB_COST_ML100K` (CPU time, so that a loaded
machine still gives the cost on an idle core).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import subprocess


def calibrate(dataset: str, iterations: int) -> dict:
    from fcpo import runs
    from fcpo.reproduction import RL_METHODS, GridSpec, job_config

    runs.set_threads(1)
    costs = {}
    jobs = GridSpec.front(dataset=dataset, seeds=(0,), long_term_alpha=None).jobs()
    for method in RL_METHODS:
        job = next(j for j in jobs if j["method"] == method and j["alpha"] == (1.0 if method == "trpo" else 0.4))
        c0 = time.process_time()
        config = runs.resolve(job_config(dict(job, iterations=iterations)))
        agent = runs.build_agent(config, "cpu")
        c1 = time.process_time()
        with tempfile.TemporaryDirectory() as scratch:
            runs.train_loop(agent, runs.create_run(Path(scratch), method, config), 0, iterations, progress=False)
        c2 = time.process_time()
        runs.evaluate_policy(agent.policy, config, protocol="rollout", steps=job["eval_steps"])
        runs.evaluate_policy(agent.policy, config, protocol="ranking")
        c3 = time.process_time()
        costs[method] = {"setup": round(c1 - c0, 2), "iteration": round((c2 - c1) / iterations, 2),
                         "eval": round(c3 - c2, 2)}
        print(json.dumps({method: costs[method]}), flush=True)
    return costs


if __name__ == "__main__":
    if "--calibrate" in sys.argv[1:]:
        p = argparse.ArgumentParser(description="one-thread CPU seconds per job part of the front preset")
        p.add_argument("--calibrate", action="store_true")
        p.add_argument("--dataset", default="ml-100k")
        p.add_argument("--iterations", type=int, default=5)
        args = p.parse_args()
        calibrate(args.dataset, args.iterations)
        sys.exit(0)
    sys.exit(subprocess.call([sys.executable, "-m", "fcpo.cli.bench", "--front", *sys.argv[1:]]))
