"""Issue 11: is the constraint that is trained the constraint that is deployed?

Trains FCPO in both constraint modes (``per-slate``: the cap ⌊α'K⌋ inside the actor, deployed
greedy; ``expected``: CPO on E[Σ_t c_t] ≤ α'K·T, deployed sampled) and evaluates each with the
shared evaluator (which picks the deployed mode from the policy), next to MF and the α'-fair
re-ranker (MF scores, at most ⌊α'K⌋ G0 items per slate).  Prints one line per run and writes JSON.

    python benchmarks/constraint_modes.py --dataset ml-100k --alphas 0.4 0.8 --iterations 50
    python benchmarks/constraint_modes.py --long-term   # dynamic groups, α'=0.4 per-slate, 30-step test rollout
    python benchmarks/constraint_modes.py --front --alphas 0.2 0.4 0.6 0.8 --seeds 0 1 2 --workers 2

``--front`` runs the expected-mode cells of the accuracy–fairness front (``GridSpec.front``: its per-method
iterations and overrides, FCPO and PPO-Lagrangian) through :func:`fcpo.reproduction.grid.run_job`, and
prints per cell the test mean popular share (deployed = sampled policy, 3 evaluation seeds), the maximum
per-step share, F1@50, the final offset λ and deployed-share estimate, and the training seconds; with
``--per-slate-check`` it also reruns FCPO per-slate at the first seed and α'.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def run_fcpo(env_cfg, alpha: float, constraint: str, iterations: int, seed: int, eval_steps: int | None,
             overrides: dict) -> dict:
    from fcpo.agents.base import AGENTS, load_agent_modules, make_agent
    from fcpo.evaluate import evaluate

    load_agent_modules()
    cfg = AGENTS["fcpo"].config_cls(alpha_prime=alpha, constraint=constraint, **overrides)
    agent = make_agent("fcpo", cfg, env_cfg, "cpu", seed)
    t0 = time.perf_counter()
    history = []
    for it in range(iterations):
        stats = agent.train_iteration(it)
        history.append({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
    train_s = time.perf_counter() - t0
    report = evaluate(agent.policy, env_cfg, protocol="rollout", steps=eval_steps)
    # the same deployed policy on the training users (the users the constraint was trained on)
    on_train = evaluate(agent.policy, env_cfg, protocol="rollout", steps=eval_steps, split="train")["constraint"]
    return {"method": "fcpo", "constraint": constraint, "train_seconds": train_s, "report": report,
            "train_split_share": on_train["popular_share"], "train_split_max_step_share": on_train["max_step_share"],
            "train_popular_share_last5": float(np.mean([h["popular_share"] for h in history[-5:]])),
            "history": history, "overrides": overrides}


def run_ranker(env_cfg, name: str, alpha: float, eval_steps: int | None) -> dict:
    from fcpo.data.groups import popular_mask
    from fcpo.evaluate import evaluate
    from fcpo.policies.rankers import make_ranker

    data = env_cfg.make_vector(1, mode="train").env_data
    policy = make_ranker(name, data, alpha, popular_mask(data.train_counts, env_cfg.option("popular_ratio", 0.2)))
    report = evaluate(policy, env_cfg, protocol="rollout", steps=eval_steps, alpha_prime=alpha)
    return {"method": name, "constraint": "-", "report": report}


def summary(row: dict, alpha: float) -> dict:
    rep = row["report"]
    m, c = rep["metrics"], rep["constraint"]
    last = rep["k"] * rep["steps"]
    return {"method": row["method"], "constraint": row["constraint"], "alpha": alpha, "eval_mode": rep["mode"],
            f"f1@{last}": m[f"f1@{last}"], f"ndcg@{last}": m[f"ndcg@{last}"], "mean_share": c["popular_share"],
            "max_step_share": c["max_step_share"], "fraction_above_cap": c.get("fraction_above_cap"),
            "per_step": [round(x, 3) for x in c["popular_share_per_step"]],
            "train_share": row.get("train_popular_share_last5"), "train_split_share": row.get("train_split_share"),
            "train_split_max_step_share": row.get("train_split_max_step_share"),
            "train_seconds": row.get("train_seconds")}


def run_front(args) -> int:
    """The expected-mode front cells (module docstring)."""
    from concurrent.futures import ProcessPoolExecutor

    from fcpo.reproduction.grid import GridSpec, job_name

    spec = GridSpec.front(dataset=args.dataset, data_dir=args.data_dir or None, methods=tuple(args.methods),
                          constraint_modes=("expected",), long_term_alpha=None, alphas=tuple(args.alphas),
                          ppo_alphas=tuple(args.alphas), seeds=tuple(args.seeds))
    jobs = [j for j in spec.jobs() if j["alpha"] < 1.0]
    if args.per_slate_check:
        check = GridSpec.front(dataset=args.dataset, data_dir=args.data_dir or None, methods=("fcpo",),
                               constraint_modes=("per-slate",), long_term_alpha=None, alphas=(0.4,),
                               seeds=(args.seeds[0],))
        jobs += check.jobs()
    for job in jobs:
        for method, extra in _overrides(args.set).items():
            job["overrides"].setdefault(method, {}).update(extra)
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for job, result in zip(jobs, pool.map(_timed_job, jobs)):
            rep, last = result["eval"], (result["history"][-1] if result["history"] else {})
            c = rep["constraint"]
            row = {"cell": job_name(job), "method": job["method"], "constraint": job["constraint"],
                   "alpha": job["alpha"], "seed": job["seed"], "mode": rep["mode"],
                   "mean_share": c["popular_share"], "max_step_share": c["max_step_share"],
                   "f1@50": rep["metrics"]["f1@50"], "ndcg@50": rep["metrics"]["ndcg@50"],
                   "popular_offset": last.get("popular_offset"), "deployed_share": last.get("deployed_share"),
                   "train_share": last.get("popular_share"), "train_seconds": result["train_seconds"],
                   "cpu_seconds": result["cpu_seconds"],
                   "calibration_trials": float(np.mean([h.get("calibration_trials", 0.0) for h in result["history"]]))
                   if result["history"] else None,
                   "overrides": job["overrides"].get(job["method"], {})}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| cell | mean share | max per-step | F1@50 | λ | estimate | CPU s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        lam = "-" if r["popular_offset"] is None else f"{r['popular_offset']:.3f}"
        est = "-" if r["deployed_share"] is None else f"{100 * r['deployed_share']:.1f}"
        print(f"| {r['cell']} | {100 * r['mean_share']:.1f} | {100 * r['max_step_share']:.1f} | "
              f"{100 * r['f1@50']:.2f} | {lam} | {est} | {r['cpu_seconds']:.0f} |")
    out = Path(args.out) if args.out else (Path(__file__).resolve().parents[1] / "results" / "benchmarks" /
                                           "constraint_modes_expected_front.json")
    _write(out, {"args": vars(args), "rows": rows})
    return 0


def _timed_job(job: dict) -> dict:
    """:func:`fcpo.reproduction.grid.run_job` plus the CPU seconds it took in this worker (the whole job)."""
    from fcpo.reproduction.grid import run_job

    t0 = time.process_time()
    result = run_job(job)
    return dict(result, cpu_seconds=time.process_time() - t0)


def _overrides(items) -> dict:
    """``METHOD.KEY=VALUE`` (one method) or ``KEY=VALUE`` (every method) → {method: {key: value}}."""
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        method, _, name = key.rpartition(".")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        for m in ([method] if method else ["fcpo", "ppo-lagrangian"]):
            out.setdefault(m, {})[name] = parsed
    return out


def _write(out: Path, payload: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")


def main(argv=None) -> int:
    from fcpo.envs.config import FairEnvConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=os.environ.get("FCPO_DATA_DIR"))
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.4, 0.8])
    ap.add_argument("--constraints", nargs="+", default=["per-slate", "expected"])
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="FCPO config overrides (JSON values); --front: [METHOD.]KEY=VALUE")
    ap.add_argument("--long-term", action="store_true", help="dynamic groups, 30-step test rollout, α'=0.4 per-slate")
    ap.add_argument("--no-rankers", action="store_true")
    ap.add_argument("--front", action="store_true", help="the expected-mode cells of the front preset (run_job)")
    ap.add_argument("--methods", nargs="+", default=["fcpo", "ppo-lagrangian"], help="--front: methods")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--front: seeds")
    ap.add_argument("--workers", type=int, default=1, help="--front: worker processes")
    ap.add_argument("--per-slate-check", action="store_true", help="--front: also FCPO per-slate, first α' and seed")
    ap.add_argument("--out", default=None, help="JSON file (default results/benchmarks/constraint_modes*.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.front:
        return run_front(args)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    grouping, eval_steps = ("dynamic", 30) if args.long_term else ("static", None)
    if args.long_term:
        args.alphas, args.constraints = [0.4], ["per-slate"]
    from fcpo.agents.base import as_env_spec

    options = FairEnvConfig(dataset=args.dataset, data_dir=args.data_dir, grouping=grouping)
    env_cfg = as_env_spec(options)
    rows = []
    for alpha in args.alphas:
        if not args.no_rankers:
            for name in ("mf", "fair-mf"):
                rows.append(summary(run_ranker(env_cfg, name, alpha, eval_steps), alpha))
                print(json.dumps(rows[-1]), flush=True)
        for constraint in args.constraints:
            rows.append(summary(run_fcpo(env_cfg, alpha, constraint, args.iterations, args.seed, eval_steps,
                                         overrides), alpha))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out) if args.out else (Path(__file__).resolve().parents[1] / "results" / "benchmarks" /
                                           ("constraint_modes_long_term.json" if args.long_term
                                            else "constraint_modes.json"))
    _write(out, {"args": vars(args), "overrides": overrides, "grouping": grouping, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
