"""Wall time per FCPO training iteration and time to convergence (issue: FCPO agent benchmark).

One iteration = roll out every training user (943 on ml-100k, K = 5, T = 10),
both critics' minibatch Adam epochs, and one CPO update (one actor forward and two
backward passes for g and b, the CG solve of H x = g and -- unless the TRPO step already
satisfies the linearised constraint -- of H x = b, the dual, the line search at one actor
forward per trial).  ``benchmarks/time_to_target.py`` measures the time to the operating point and
``benchmarks/authors_side_by_side.py`` the ratio to the FCPO authors' code, run side by side.

Convergence is reported two ways: the first iteration from which the training
cost stays within the limit (feasibility), and the first iteration whose
5-iteration mean reward is within 2 % of the last 5 iterations' mean.

    python benchmarks/train_speed.py --dataset ml-100k --alpha 0.4 --iterations 80 [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, default_data_dir, markdown_table, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--alpha", type=float, default=0.4)
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: fcpo-train's choice, fcpo.runs.default_threads)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--actor-mode", default="gaussian", choices=("gaussian", "softmax"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from fcpo.runs import default_threads

    torch.set_num_threads(args.threads or default_threads({"dataset": args.dataset}))
    import fcpo.agents.actor_critic as ac_mod
    import fcpo.agents.cpo as cpo_mod
    from fcpo.agents.base import make_agent
    from fcpo.envs import EnvSpec

    env_cfg = EnvSpec(kwargs={"dataset": args.dataset, "data_dir": args.data_dir})
    t0 = time.perf_counter()
    agent = make_agent("fcpo", cpo_mod.FCPOConfig(alpha_prime=args.alpha, actor_mode=args.actor_mode), env_cfg,
                       args.device, 0)
    setup_s = time.perf_counter() - t0
    parts = {"rollout": 0.0, "policy_update": 0.0, "critic_update": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            s = time.perf_counter()
            out = fn(*a, **k)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            parts[name] += time.perf_counter() - s
            return out
        return wrapper

    ac_mod.collect = timed("rollout", ac_mod.collect)
    agent._policy_update = timed("policy_update", agent._policy_update)
    agent._critic_update = timed("critic_update", agent._critic_update)
    times, records = [], []
    for it in range(args.iterations):
        s = time.perf_counter()
        stats = agent.train_iteration(it)
        times.append(time.perf_counter() - s)
        records.append(stats)
        if it % 10 == 0:
            print(f"iter {it:3d}  {times[-1]:.3f} s  reward {stats['reward']:.3f}  cost {stats['cost']:.2f} "
                  f"(limit {stats['cost_limit']:.2f})  popular share {stats['popular_share']:.3f}  {stats['cpo_case']}",
                  flush=True)
    times = np.array(times)
    cost = np.array([r["discounted_cost"] for r in records])
    limit = np.array([r["discounted_cost_limit"] for r in records])
    feasible = cost <= limit
    feas_it = next((i for i in range(len(feasible)) if feasible[i:].all()), None)
    reward = np.array([r["reward"] for r in records])
    smooth = np.convolve(reward, np.ones(5) / 5, mode="valid")
    final = reward[-5:].mean()
    conv_it = next((i + 4 for i, v in enumerate(smooth) if abs(v - final) <= 0.02 * abs(final)), None)
    cum = np.cumsum(times)
    median = float(np.median(times[1:] if len(times) > 1 else times))
    row = {"dataset": args.dataset, "users": agent.n_users, "device": args.device,
           "threads": torch.get_num_threads(), "median_s_per_iteration": median,
           "mean_rollout_s": parts["rollout"] / len(times), "mean_policy_update_s": parts["policy_update"] / len(times),
           "mean_critic_update_s": parts["critic_update"] / len(times),
           "feasible_from_iteration": feas_it,
           "feasible_after_s": float(cum[feas_it]) if feas_it is not None else None,
           "reward_converged_iteration": conv_it,
           "reward_converged_after_s": float(cum[conv_it]) if conv_it is not None else None,
           "setup_s": setup_s, "final_popular_share": float(records[-1]["popular_share"])}
    print(markdown_table([row], list(row)))
    out = args.out or str(RESULTS / f"train_speed_{args.dataset}_{args.device.split(':')[0]}.json")
    write_json(out, {"row": row, "iteration_seconds": times.tolist(), "records": records, "alpha": args.alpha})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
