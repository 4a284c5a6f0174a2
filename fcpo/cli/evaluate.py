"""``fcpo-eval``: evaluate a trained run, or a non-RL baseline, on the test (or train) users.

    fcpo-eval runs/fcpo-ml-100k-a0.8-s0-...            # writes eval-test.json into the run folder
    fcpo-eval runs/... --split train --protocol ranking
    fcpo-eval --baseline mf --dataset ml-100k --data-dir ../shared/data --out mf.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcpo.cli.common import (CLIError, Parser, add_data_flags, add_threads_flag, quiet_interrupt, resolve_device,
                             run_cli)

PROG = "fcpo-eval"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="a run folder written by fcpo-train")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which users' targets (default test)")
    p.add_argument("--protocol", choices=("rollout", "ranking"), default="rollout",
                   help="rollout: K items per step over L steps with hits folded into the state (FCPO); "
                        "ranking: one top-K list per user")
    p.add_argument("--k", type=int, default=None, help="slate size K (default: the run's)")
    p.add_argument("--steps", type=int, default=None, help="rollout length L (default: the run's horizon)")
    p.add_argument("--mode", choices=("greedy", "sample"), default=None,
                   help="greedy or sampled slates (default: the deployed policy — greedy for per-slate runs, "
                        "sampled for expected-mode runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds for sampled evaluation, mean ± std (default 0 1 2)")
    p.add_argument("--grouping", choices=("static", "dynamic"), default=None,
                   help="env grouping during the rollout (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--baseline", choices=("popularity", "random", "mf", "fair-mf"), default=None,
                   help="evaluate a non-RL ranker instead of a run (needs --dataset)")
    p.add_argument("--alpha", type=float, default=1.0, help="α' of the fair-mf re-ranker")
    add_data_flags(p)
    p.add_argument("--slate-size", type=int, default=5, help="K for --baseline (default 5)")
    p.add_argument("--horizon", type=int, default=10, help="L for --baseline (default 10)")
    p.add_argument("--out", default=None, help="JSON path (default RUN_DIR/eval-<split>.json; required with --baseline)")
    add_threads_flag(p)
    return p


def main(argv=None) -> int:
    with quiet_interrupt(PROG):
        args = build_parser().parse_args(argv)
        return run_cli(PROG, _main, args)


def _main(args) -> int:
    from fcpo import runs
    from fcpo.evaluate import format_report

    for flag in ("k", "steps", "slate_size", "horizon"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be an integer >= 1, got {value}")
    if args.seeds and any(seed < 0 for seed in args.seeds):
        raise CLIError(f"--seeds must be integers >= 0, got {args.seeds}")
    if not 0.0 < args.alpha <= 1.0:  # also refuses nan
        raise CLIError(f"--alpha must lie in (0, 1], got {args.alpha}")
    if args.baseline:
        if args.run_dir:
            raise CLIError("give either RUN_DIR or --baseline, not both")
        if not args.out:
            raise CLIError("--baseline needs --out FILE.json")
        config = runs.resolve(runs.RunConfig(agent="fcpo", threads=args.threads, env={
            "id": runs.DEFAULT_ENV_ID, "dataset": args.dataset or "ml-1m", "data_dir": args.data_dir, "columns": args.columns,
            "slate_size": args.slate_size, "horizon": args.horizon}))
        runs.set_threads(config.threads)
        device = resolve_device(args.device)
        policy = runs.ranker_policy(args.baseline, config, args.alpha)
        out = Path(args.out)
    else:
        if not args.run_dir:
            raise CLIError("give a RUN_DIR (a folder written by fcpo-train) or --baseline NAME")
        run_dir = Path(args.run_dir)
        config = runs.load_config(run_dir)
        runs.set_threads(args.threads or config.threads)
        device = resolve_device(args.device)
        config, agent, _, _ = runs.open_run(run_dir, device)
        policy = agent.policy
        out = Path(args.out) if args.out else run_dir / f"eval-{args.split}.json"
    report = runs.evaluate_policy(policy, config, protocol=args.protocol, k=args.k, steps=args.steps, mode=args.mode,
                                  seeds=tuple(args.seeds) if args.seeds else None, device=device, split=args.split, grouping=args.grouping)
    runs.write_json(out, report)
    print(format_report(report))
    print(f"{PROG}: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
