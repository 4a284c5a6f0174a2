"""``fcpo-bench``: regenerate the FCPO reproduction table, or the accuracy–fairness front, in one command.

    fcpo-bench --dataset ml-100k --data-dir ../shared/data            # the FCPO table, 3 seeds
    fcpo-bench --front --dataset ml-100k --data-dir ../shared/data    # the front: α' 0.2..1, both modes
    fcpo-bench --front --dataset ml-1m --methods fcpo fair-mf          # ml-1m front, FCPO + re-ranker
    fcpo-bench --dataset synthetic --quick                             # seconds: the pipeline check
    fcpo-bench --address ray://head:10001 ...                          # scale out on a Ray cluster

Writes ``runs/bench-<dataset>-<hash of the grid>/`` (or ``--out``; the folder is printed):
``<dataset>.json`` / ``.md``, the plots, each finished job's result in ``results/<job>.json``
(saved as it completes) and one run folder per trained job under ``jobs/`` (config, log,
checkpoint, TensorBoard; ``--job-runs no`` trains them in temporary folders).
Exits with status 1 when one of the checks fails (``--allow-failed-checks``: report them, exit 0)
and 3 when a job failed (re-running the same command runs only the missing jobs).

Presets (``--grid``): ``table`` (the README's FCPO table) and ``front`` (``--front``): α' ∈ {0.2, 0.4,
0.6, 0.8, 1.0} × constraint modes ``per-slate`` / ``expected`` for FCPO, PPO-Lagrangian, Wolpertinger
and TPGR, TRPO once per seed, the α'-fair re-ranker, MF and popularity, with per-method budgets sized
for 30 minutes on 2 one-thread workers (ml-100k).  Flags left out take the preset's values.

Resumable: the same command again (after Ctrl-C, a failed job or a lost node) runs only the jobs
without a saved result; ``--force`` reruns every job.

Exit status: 0; 1 when one of the table's checks fails (``--allow-failed-checks``: report them,
exit 0); 3 when a job failed (its traceback is printed and saved in ``results/<job>.error.txt``;
the other jobs still run and are reported).

The grid runs through Ray when it is installed (``pip install fcpo[dist]``): a local instance, or
an existing cluster with ``--address`` (workers need fcpo installed, not the data: the driver
ships it through Ray's object store); else one process per job (``--workers``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcpo.cli.common import CLIError, Parser, add_data_flags, quiet_interrupt, run_cli

PROG = "fcpo-bench"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p, default="ml-100k")
    p.add_argument("--grid", choices=("table", "front"), default="table",
                   help="preset: table (the README's FCPO table, default) or front (accuracy–fairness front)")
    p.add_argument("--front", action="store_true", help="same as --grid front")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="FCPO (and re-ranker) α' values (table: 1.0 0.8 0.4; front: 0.2 0.4 0.6 0.8 1.0)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations of every RL run (table: 60; front: per method, see FRONT_ITERATIONS)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="subset of: fcpo trpo ppo-lagrangian wolpertinger tpgr popularity mf random fair-mf "
                        "(table: all but wolpertinger and tpgr; front: all but random)")
    p.add_argument("--lagrangian-alphas", type=float, nargs="+", default=None,
                   help="α' values of the Lagrangian rows: ppo-lagrangian, wolpertinger, tpgr "
                        "(table: 0.8 0.4; front: the --alphas)")
    p.add_argument("--constraint-modes", nargs="+", default=None, choices=("per-slate", "expected"),
                   help="front: constraint modes of the constrained agents (default: both)")
    p.add_argument("--no-long-term", action="store_true", help="skip the dynamic-groups long-term experiment")
    p.add_argument("--workers", type=int, default=2, help="parallel jobs: processes without Ray, CPUs of a local Ray instance (default 2)")
    p.add_argument("--ray", choices=("auto", "yes", "no"), default="auto", help="use Ray (default: when installed)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address, e.g. 127.0.0.1:6379, auto or ray://head:10001 (default: a local "
                        "ray.init() with --workers CPUs)")
    p.add_argument("--force", action="store_true", help="rerun every job, even those with a saved result in OUT")
    p.add_argument("--quick", action="store_true", help="one seed, few iterations, short rollouts (pipeline check)")
    p.add_argument("--out", default=None,
                   help="output folder for JSON, Markdown, PNGs and job results (default "
                        "runs/bench-<dataset>-<8-hex hash of the grid>: the same command resumes the same folder)")
    p.add_argument("--job-runs", choices=("yes", "no"), default="yes",
                   help="keep one run folder per trained job under OUT/jobs/ (default yes; no: temporary folders)")
    p.add_argument("--allow-failed-checks", action="store_true",
                   help="exit 0 even when a check of the table fails (they are still reported)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def spec_from_args(args):
    """Flags -> :class:`fcpo.reproduction.GridSpec` of the chosen preset; flags left out keep the
    preset's values (``--quick``: one seed, 3 iterations, short rollouts)."""
    from fcpo import reproduction as rp

    front = args.front or args.grid == "front"
    changes = {"dataset": args.dataset, "data_dir": args.data_dir, "seeds": tuple(args.seeds),
               "long_term_alpha": None if args.no_long_term else 0.4}
    if args.alphas is not None:
        changes["alphas"] = tuple(args.alphas)
    if args.lagrangian_alphas is not None:
        changes["ppo_alphas"] = tuple(args.lagrangian_alphas)
    elif front and args.alphas is not None:
        changes["ppo_alphas"] = tuple(args.alphas)
    if args.iterations is not None:
        if args.iterations < 1:
            raise CLIError(f"--iterations must be >= 1, got {args.iterations}")
        changes["iterations"] = args.iterations
        if front:
            changes["method_iterations"] = {}  # one count for every method
    if args.constraint_modes is not None:
        if not front:
            raise CLIError("--constraint-modes needs --front (the table grid uses each agent's default mode)")
        if len(set(args.constraint_modes)) != len(args.constraint_modes):
            raise CLIError(f"--constraint-modes: a mode is given twice in {args.constraint_modes}")
        changes["constraint_modes"] = tuple(args.constraint_modes)
    spec = rp.GridSpec.front(**changes) if front else rp.GridSpec(**changes)
    if args.methods:
        unknown = set(args.methods) - set(rp.RL_METHODS) - set(rp.RANKER_METHODS)
        if unknown:
            raise CLIError(f"--methods: unknown {sorted(unknown)}; choose from "
                           f"{' '.join(rp.RL_METHODS + rp.RANKER_METHODS)}")
        spec.methods = tuple(args.methods)
    if args.quick:
        spec.quick()
    for a in spec.alphas + spec.ppo_alphas:
        if not 0 < a <= 1:
            raise CLIError(f"--alphas/--lagrangian-alphas: {a} is outside (0, 1]")
    return spec


def plan_text(spec, workers: int) -> str:
    """The planned job count per method and the estimated wall-clock time (printed before a grid starts)."""
    from collections import Counter

    from fcpo.reproduction.grid import DATASET_COST_SCALE

    jobs = spec.jobs()
    per_method = Counter(j["method"] for j in jobs)
    minutes = spec.estimated_seconds(workers) / 60
    its = ", ".join(f"{m} {spec.iterations_of(m)}" for m in per_method if m in ("fcpo", "trpo", "ppo-lagrangian",
                                                                                  "wolpertinger", "tpgr"))
    return (f"{PROG}: {spec.preset} grid on {spec.dataset}: {len(jobs)} jobs ("
            + ", ".join(f"{m} {n}" for m, n in per_method.items()) + f"); iterations: {its or '-'}; "
            f"estimated {minutes:.1f} min on {workers} one-thread worker(s) (job costs measured on ml-100k, "
            f"x{DATASET_COST_SCALE.get(spec.dataset, 1.0):g} for {spec.dataset})")


def run(args) -> dict:
    from fcpo import reproduction as rp

    spec = spec_from_args(args)
    from fcpo.reproduction.dispatch import default_out, run_grid

    out = Path(args.out) if args.out else default_out(spec)
    print(f"{PROG}: output folder {out} (the same command resumes it; --force reruns every job)", file=sys.stderr)
    keep_runs = args.job_runs == "yes" and args.address is None  # a remote cluster may not share this disk
    print(plan_text(spec, args.workers), file=sys.stderr, flush=True)
    grid = run_grid(spec, out, keep_runs=keep_runs, force=args.force, workers=args.workers, address=args.address,
                    use_ray={"auto": None, "yes": True, "no": False}[args.ray], progress=not args.no_progress)
    payload = {"checks": []}
    if grid.results:
        payload, text = rp.write_report(spec, grid.results, out)
        print(text)
        print(f"{PROG}: wrote {out}/{spec.dataset}.{{json,md}} and plots", file=sys.stderr)
    payload["failed_jobs"] = [f.name for f in grid.failures]
    return payload


def _main(args) -> int:
    payload = run(args)
    failed = [c["check"] for c in payload["checks"] if not c["holds"]]
    if failed:
        print(f"{PROG}: {len(failed)} check(s) failed: {'; '.join(failed)}", file=sys.stderr)
    if payload["failed_jobs"]:
        print(f"{PROG}: {len(payload['failed_jobs'])} job(s) failed: {' '.join(payload['failed_jobs'])} "
              "(tracebacks above and in OUT/results/<job>.error.txt; run the same command again to retry them)",
              file=sys.stderr)
        return 3
    return 1 if failed and not args.allow_failed_checks else 0


def main(argv=None) -> int:
    with quiet_interrupt(PROG):
        args = build_parser().parse_args(argv)
        return run_cli(PROG, _main, args)


if __name__ == "__main__":
    sys.exit(main())
