"""Time to a trained policy (issue 17): wall and CPU seconds until FCPO reaches its operating point.

The agent is built exactly as ``fcpo-train`` builds it (its flag parser, ``fcpo.runs.resolve`` and
``fcpo.runs.build_agent``: per-slate constraint mode, default hyper-parameters and thread count), then
trained for ``--iterations`` (fcpo-train's default 100).  The operating point is the first iteration
from which, for the rest of the run, the trailing ``--window``-iteration means satisfy

* training cost <= (1 + cost_tol) x the limit d  (cost_tol = 5 %: at, or within 5 % above, the limit;
  a cost below the limit counts as reached -- the per-slate actor cannot exceed it), and
* |reward - final| <= reward_tol x |final|  (reward_tol = 2 %; final = mean of the last ``--window``
  iterations).

Reported: wall seconds (setup = data loading and agent construction, plus the iterations up to and
including the operating point), process CPU seconds over the same span (all threads), the iteration,
torch threads, and the load average (start, end, and sampled after every iteration), since a shared
machine stretches wall time.  The issue's bound is 60 s on a quiet 2-core machine.

    python benchmarks/time_to_target.py --dataset ml-100k --alpha 0.4 [--iterations 100] [--set KEY=VALUE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, default_data_dir, write_json  # noqa: E402


def operating_point(reward, cost, limit, window: int = 5, reward_tol: float = 0.02, cost_tol: float = 0.05):
    """First iteration from which the trailing ``window`` means stay at the operating point (or None).

    ``reward``, ``cost``, ``limit``: per-iteration training values.  Returns ``(iteration, final)``.
    """
    reward, cost, limit = (np.asarray(x, dtype=float) for x in (reward, cost, limit))
    n = len(reward)
    if n < window or not (len(cost) == len(limit) == n):
        raise ValueError(f"need at least window={window} iterations of equal-length series, got {n}")
    kernel = np.ones(window) / window
    r_s = np.convolve(reward, kernel, mode="valid")  # r_s[i] = mean of reward[i : i + window]
    c_s = np.convolve(cost, kernel, mode="valid")
    d_s = np.convolve(limit, kernel, mode="valid")
    final = float(reward[-window:].mean())
    ok = (np.abs(r_s - final) <= reward_tol * abs(final)) & (c_s <= (1 + cost_tol) * d_s)
    bad = np.flatnonzero(~ok)
    first = 0 if len(bad) == 0 else int(bad[-1]) + 1
    if first >= len(ok):
        return None, final
    return first + window - 1, final  # the iteration at which the first good window ends


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--alpha", type=float, default=0.4)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--reward-tol", type=float, default=0.02)
    ap.add_argument("--cost-tol", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: fcpo-train's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="agent hyper-parameter, as fcpo-train --set")
    ap.add_argument("--solver", action="append", default=[], metavar="KEY=VALUE",
                    help="CPOConfig field not exposed by the agent (e.g. cost_solve=subspace), set on agent.solver")
    ap.add_argument("--out", default=str(RESULTS / "time_to_target.json"))
    args = ap.parse_args(argv)

    load_start = list(os.getloadavg())
    w0, c0 = time.perf_counter(), time.process_time()
    from fcpo import runs
    from fcpo.cli.train import build_parser, config_from_args

    flags = ["--dataset", args.dataset, "--alpha", str(args.alpha), "--seed", str(args.seed), "--device", "cpu",
             "--iterations", str(args.iterations)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    for kv in args.set:
        flags += ["--set", kv]
    config = config_from_args(build_parser().parse_args(flags))
    runs.set_threads(config.threads)
    import torch

    agent = runs.build_agent(config, "cpu")
    if args.solver:
        import yaml

        overrides = {}
        for kv in args.solver:
            key, sep, value = kv.partition("=")
            if not sep:
                raise SystemExit(f"--solver expects KEY=VALUE, got {kv!r}")
            overrides[key] = yaml.safe_load(value)
        agent.solver = agent.solver.replace(**overrides)
    setup_wall, setup_cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"{args.dataset} alpha'={args.alpha} constraint={config.agent_config.get('constraint')} "
          f"threads={torch.get_num_threads()} setup {setup_wall:.1f} s; load avg {load_start}", flush=True)
    walls, cpus, loads, records = [], [], [], []
    for it in range(args.iterations):
        w, c = time.perf_counter(), time.process_time()
        stats = agent.train_iteration(it)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        loads.append(os.getloadavg()[0])
        records.append({k: v for k, v in stats.items() if isinstance(v, (int, float, str))})
        if it % 10 == 0 or it == args.iterations - 1:
            print(f"iter {it:3d} {walls[-1]:.2f} s (cpu {cpus[-1]:.2f})  reward {stats['reward']:.3f}  "
                  f"cost {stats['cost']:.2f} / {stats['cost_limit']:.2f}  {stats.get('cpo_case')}  "
                  f"step {stats.get('step_fraction', float('nan')):.2f}  load {loads[-1]:.2f}", flush=True)
    reward = [r["reward"] for r in records]
    cost = [r["cost"] for r in records]
    limit = [r["cost_limit"] for r in records]
    it_target, final = operating_point(reward, cost, limit, args.window, args.reward_tol, args.cost_tol)
    cw, cc = np.cumsum(walls), np.cumsum(cpus)
    row = {
        "dataset": args.dataset, "alpha_prime": args.alpha, "seed": args.seed,
        "constraint": config.agent_config.get("constraint"), "threads": torch.get_num_threads(),
        "iterations_run": args.iterations, "operating_point_iteration": it_target,
        "iterations_to_operating_point": None if it_target is None else it_target + 1,
        "final_reward": final,
        "wall_s_to_operating_point": None if it_target is None else setup_wall + float(cw[it_target]),
        "cpu_s_to_operating_point": None if it_target is None else setup_cpu + float(cc[it_target]),
        "setup_wall_s": setup_wall, "setup_cpu_s": setup_cpu,
        "median_iteration_wall_s": statistics.median(walls), "median_iteration_cpu_s": statistics.median(cpus),
        "total_wall_s": setup_wall + float(cw[-1]), "total_cpu_s": setup_cpu + float(cc[-1]),
        "load_avg_start": load_start, "load_avg_end": list(os.getloadavg()),
        "load_avg_1min_mean_during": float(np.mean(loads)),
        "criteria": {"window": args.window, "reward_tol": args.reward_tol, "cost_tol": args.cost_tol,
                     "cost": "trailing-mean training cost <= (1 + cost_tol) x limit",
                     "reward": "trailing-mean reward within reward_tol of the mean of the last window iterations"},
        "agent_config_overrides": args.set, "solver_overrides": args.solver,
        "solver": agent.solver.to_dict(),
    }
    for k, v in row.items():
        print(f"  {k}: {v}")
    write_json(args.out, {"row": row, "iteration_wall_s": walls, "iteration_cpu_s": cpus, "load_1min": loads,
                          "records": records, "config": config.to_dict()})
    print(f"wrote {args.out}")
    return row


if __name__ == "__main__":
    main()
