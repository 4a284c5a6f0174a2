"""Benchmark: the evaluator's wall time, and its accuracy metrics at every cut-off in one pass.

``evaluate`` part: :func:`fcpo.evaluate.evaluate` of an FCPO agent's deployed (greedy) policy on all
test users (the agent is untrained: the cost of an evaluation does not depend on the weights):

* ml-100k at K = 1, L = 200 (the FCPO authors' evaluation: one item per step for 200 steps) with the
  actor trained for K = 5 slates, which ranks by its mean-of-rows scores (in user blocks, the exclusion
  as an additive bias, a max for K = 1); timed also as the ranking was (row-by-row scores -- K products
  with the item matrix, then the mean -- a masked copy and a top-k) and checked to recommend the same;
* ml-1m with the defaults (K = 5, L = 10, the actor's own greedy slates, decoded from the shared scores
  plus the row corrections); timed also with the one-product decoder (the full [B, K, n] scores W Vᵀ),
  with the number of recommendations that differ (only float-rounding near-ties can) and the share of
  slate rows the shared decoder had to retry or recompute.

The agent is an FCPO agent with fcpo-train's defaults trained for ``--train-iterations`` (default 5):
the greedy decoder's speed depends on the size of the learned row offsets.

Each row carries the wall and CPU seconds (median of ``--repeats`` after one warm-up that builds the
env; with one thread the CPU time is what the wall time would be on an idle machine), the time inside
the policy's ``act``, inside the cut-off metrics, the torch thread count and the load
average before and after (the machine may be shared).

``metrics`` part: the evaluator's rollout report scores Precision/Recall/F1/NDCG/HR at each
cut-off ``c_t = t * K``.  The loop calls the five per-cut-off functions of
:mod:`fcpo.metrics.accuracy` on ``rec[:, :c_t]`` (each recomputes the hit
mask: O(L^2) per user); :func:`fcpo.metrics.accuracy_by_cutoff` computes the
hit mask once and reads every cut-off off prefix sums (O(L)).  Synthetic random
recommendations (no duplicates, like a rollout that excludes shown items) and
relevance sets; no data set or environment is needed.

    python benchmarks/eval_speed.py [--parts evaluate metrics] [--threads 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_data_dir, machine_info, write_json  # noqa: E402

from fcpo.metrics import (accuracy_by_cutoff, f1_at_k, hit_rate_at_k, ndcg_at_k, precision_at_k,  # noqa: E402
                          recall_at_k)

#: (users, slate size K, rollout length L, catalogue size): ml-100k and ml-1m shapes
CASES = ((943, 1, 200, 1682), (6040, 5, 10, 3706))
#: (data set, K, L, label, also time the row-by-row scores) of the timed evaluations; None = the env's default
EVAL_CASES = (("ml-100k", 1, 200, "K=1, L=200 (the authors' protocol)", "row-by-row"),
              ("ml-1m", None, None, "default (K=5, L=10)", "one-product"))


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


def row_by_row_scores(actor, state):
    """The gaussian actor's scores before the mean-of-rows change: K products with the item matrix, then the mean."""
    mean = actor.mean_action(state.obs)
    return (mean.view(-1, actor.k, actor.dim) @ actor.items.T).mean(dim=1)


def one_product_decode_mean(actor, query, exclude=None, is_popular=None):
    """The greedy slate before the shared-scores decoder: W = u + o_j formed, then decode(W) (W Vᵀ, [B, K, n])."""
    w = (query.unsqueeze(1) + actor.row_offset.detach()).reshape(query.shape[0], actor.k * actor.dim)
    return actor.decode(w, exclude, is_popular)


def time_evaluation(dataset: str, k, steps, data_dir, repeats: int, variant: str | None,
                    train_iterations: int = 0) -> dict:
    """Median wall time of ``evaluate`` (deployed policy of an FCPO agent trained for ``train_iterations``
    with fcpo-train's defaults, all test users).  ``variant``: None (the evaluator as it is),
    ``"row-by-row"`` (K products for the ranking scores) or ``"one-product"`` (the greedy slate from
    the full W Vᵀ scores instead of the shared scores plus row corrections)."""
    import torch

    import fcpo.evaluate.evaluator as evaluator
    from fcpo.agents import make_agent
    from fcpo.agents.cpo import FCPOConfig
    from fcpo.envs import EnvSpec
    from fcpo.policies.actor import SlateActor
    from fcpo.policies.base import masked_topk

    spec = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": dataset, "data_dir": data_dir})
    agent = make_agent("fcpo", FCPOConfig(), spec, "cpu", 0)
    for it in range(train_iterations):  # the greedy decoder's speed depends on the learned row offsets
        agent.train_iteration(it)
    policy = agent.policy
    decode_stats: dict = {}
    parts = {"act": 0.0, "metrics": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            parts[name] += time.perf_counter() - t0
            return out
        return wrapper

    policy.act = timed("act", policy.act)
    accuracy = evaluator.accuracy_by_cutoff
    evaluator.accuracy_by_cutoff = timed("metrics", accuracy)
    scores, decode_mean, ranking = SlateActor.scores, SlateActor.decode_mean, SlateActor._greedy_ranking
    if variant == "row-by-row":  # the ranking as it was: K products, then the mean, a masked copy and a top-k
        SlateActor.scores = row_by_row_scores
        SlateActor._greedy_ranking = lambda self, state, k, exclude: masked_topk(self.scores(state), k, exclude)
    try:
        # warm-up run (builds the env; data cached), which also counts the greedy decoder's passes
        SlateActor.decode_mean = one_product_decode_mean if variant == "one-product" else \
            lambda self, query, exclude=None, is_popular=None: decode_mean(self, query, exclude, is_popular,
                                                                          stats=decode_stats)
        report = evaluator.evaluate(policy, spec, k=k, steps=steps)
        if variant != "one-product":
            SlateActor.decode_mean = decode_mean
        walls, cpus, acts, metrics = [], [], [], []
        before = machine_info()
        for _ in range(repeats):
            parts.update(act=0.0, metrics=0.0)
            t0, c0 = time.perf_counter(), time.process_time()
            evaluator.evaluate(policy, spec, k=k, steps=steps)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            acts.append(parts["act"])
            metrics.append(parts["metrics"])
        after = machine_info()
    finally:
        evaluator.accuracy_by_cutoff = accuracy
        SlateActor.scores, SlateActor.decode_mean, SlateActor._greedy_ranking = scores, decode_mean, ranking
    rows = decode_stats.get("rows", 0)
    return {"dataset": dataset, "k": report["k"], "steps": report["steps"], "users": report["users"],
            "train_iterations": train_iterations, "variant": variant or "as is",
            "greedy_rows_decoded": rows,
            "greedy_rows_retried_share": decode_stats.get("retried", 0) / rows if rows else None,
            "greedy_rows_recomputed_share": decode_stats.get("recomputed", 0) / rows if rows else None,
            "actor_k": policy.k, "scores": "row-by-row" if variant == "row-by-row" else "mean-of-rows",
            "ranks_by_scores": report["k"] != policy.k, "seconds": walls, "median_s": statistics.median(walls),
            "cpu_seconds": cpus, "cpu_median_s": statistics.median(cpus),
            "act_median_s": statistics.median(acts), "metrics_median_s": statistics.median(metrics),
            "threads": torch.get_num_threads(), "load_avg_before": before["load_avg"],
            "load_avg_after": after["load_avg"], "exposure_counts": report["exposure_counts"],
            "metrics_at_last_cutoff": {key: v for key, v in report["metrics"].items()
                                       if key.endswith(f"@{report['k'] * report['steps']}")}}


def evaluate_part(args) -> list[dict]:
    print(f"{'data set':<9s} {'case':<36s} {'users':>6s} {'scores':<13s} {'median s':>9s} {'cpu s':>7s} "
          f"{'act s':>7s} {'metrics s':>9s} {'threads':>7s} {'load':>5s}")
    rows = []
    for dataset, k, steps, label, compare in EVAL_CASES:
        if dataset not in args.datasets:
            continue
        variants = (None, compare) if compare else (None,)
        for variant in variants:
            row = time_evaluation(dataset, k, steps, args.data_dir, args.repeats, variant, args.train_iterations)
            row["case"] = label
            rows.append(row)
            print(f"{dataset:<9s} {label:<36s} {row['users']:6d} {row['variant']:<13s} {row['median_s']:9.3f} "
                  f"{row['cpu_median_s']:7.3f} {row['act_median_s']:7.3f} {row['metrics_median_s']:9.3f} {row['threads']:7d} "
                  f"{row['load_avg_before'][0]:5.2f}", flush=True)
        if len(variants) == 2:
            new, old = rows[-2], rows[-1]
            same = new["exposure_counts"] == old["exposure_counts"] and \
                new["metrics_at_last_cutoff"] == old["metrics_at_last_cutoff"]
            # the two compute the same scores in a different float order: only near-ties (|Δ| ~ 1e-7) can
            # flip, so report how much moved rather than require identity
            moved = sum(abs(a - b) for a, b in zip(new["exposure_counts"], old["exposure_counts"])) // 2
            total = sum(new["exposure_counts"])
            metric_diff = max(abs(new["metrics_at_last_cutoff"][key] - old["metrics_at_last_cutoff"][key])
                              for key in new["metrics_at_last_cutoff"])
            for row in (new, old):
                row[f"same_recommendations_as_{compare}"] = same
                row[f"recommendations_moved_vs_{compare}"] = int(moved)
                row["recommendations"] = int(total)
                row[f"max_metric_difference_vs_{compare}"] = metric_diff
            new[f"speedup_vs_{compare}"] = old["median_s"] / new["median_s"]
            print(f"  as is vs {compare}: {new[f'speedup_vs_{compare}']:.2f}x, same recommendations: {same} "
                  f"(exposure moved {moved} of {total}; largest metric difference {metric_diff:.2e})"
                  + (f"; greedy rows retried {new['greedy_rows_retried_share']:.1%}, recomputed in full "
                     f"{new['greedy_rows_recomputed_share']:.1%}" if new["greedy_rows_decoded"] else ""))
    for row in rows:
        row.pop("exposure_counts")
    return rows


def metrics_part(args) -> list[dict]:
    print(f"{'users':>6s} {'K':>3s} {'L':>4s} {'loop s':>8s} {'one-pass s':>10s} {'speed-up':>8s} {'max |diff|':>10s}")
    rows = []
    for users, k, steps, n_items in CASES:
        rec, relevant = synthetic(users, k, steps, n_items, args.seed, args.mean_relevant)
        before = machine_info()
        lw, lc, ref = timed(lambda: per_cutoff_loop(rec, relevant, k, steps), args.repeats)
        fw, fc, fast = timed(lambda: accuracy_by_cutoff(rec, relevant, k, steps), args.repeats)
        if list(ref) != list(fast):
            raise AssertionError("one-pass and loop reports have different keys")
        diff = max(abs(ref[key] - fast[key]) for key in ref if not (math.isnan(ref[key]) and math.isnan(fast[key])))
        row = {"users": users, "k": k, "steps": steps, "n_items": n_items, "cutoffs": steps,
               "loop_wall_s": lw, "loop_cpu_s": lc, "one_pass_wall_s": fw, "one_pass_cpu_s": fc,
               "loop_median_s": statistics.median(lw), "one_pass_median_s": statistics.median(fw),
               "speedup": statistics.median(lw) / statistics.median(fw), "max_abs_diff": diff,
               "threads": before["threads"], "load_avg_before": before["load_avg"],
               "load_avg_after": machine_info()["load_avg"]}
        rows.append(row)
        print(f"{users:6d} {k:3d} {steps:4d} {row['loop_median_s']:8.3f} {row['one_pass_median_s']:10.4f} "
              f"{row['speedup']:8.1f} {diff:10.2e}", flush=True)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS / "eval_speed.json"))
    ap.add_argument("--parts", nargs="+", choices=("evaluate", "metrics"), default=["evaluate", "metrics"])
    ap.add_argument("--datasets", nargs="+", choices=("ml-100k", "ml-1m"), default=["ml-100k", "ml-1m"],
                    help="data sets of the evaluate part")
    ap.add_argument("--data-dir", default=default_data_dir(), help="folder holding ml-100k/ and ml-1m/")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each method (median reported)")
    ap.add_argument("--train-iterations", type=int, default=5,
                    help="FCPO iterations before timing (the greedy decoder's speed depends on the learned row "
                         "offsets; 0 = untrained)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mean-relevant", type=float, default=20.0, help="mean relevant (test) items per user")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = machine_info()
    print(f"threads: OMP_NUM_THREADS={start['omp_num_threads']}, torch {start['threads']}; "
          f"load avg {' '.join(f'{x:.2f}' for x in start['load_avg'])}")
    payload = {"benchmark": "eval_speed", "args": vars(args), "threads": start["threads"],
               "omp_num_threads": start["omp_num_threads"], "load_avg_start": start["load_avg"]}
    if "evaluate" in args.parts:
        if not args.data_dir:
            ap.error("the evaluate part needs --data-dir (or FCPO_DATA_DIR) holding ml-100k/ and ml-1m/")
        payload["evaluate"] = evaluate_part(args)
    if "metrics" in args.parts:
        payload["rows"] = metrics_part(args)
    payload["load_avg_end"] = machine_info()["load_avg"]
    path = write_json(args.out, payload)
    print(f"load avg at end {payload['load_avg_end'][0]:.2f}; wrote {path}")
    return payload


if __name__ == "__main__":
    main()
