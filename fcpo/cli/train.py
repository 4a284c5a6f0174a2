"""``fcpo-train``: train FCPO or a baseline agent and write a run folder.

    fcpo-train --alpha 0.8                          # FCPO on ml-1m, paper defaults
    fcpo-train --dataset ml-100k --data-dir ../shared/data --agent trpo --iterations 50
    fcpo-train --env fcpo/MovieLensSim-v0 --agent fcpo --env-option preset=popular
    fcpo-train --agent trpo --list-params          # every hyper-parameter of an agent
    fcpo-train --resume runs/fcpo-ml-100k-a0.8-s0-... --iterations 200

Settings resolve as: agent/env defaults < ``--config FILE.yaml`` < flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcpo.cli.common import (CLIError, Parser, add_data_flags, add_threads_flag, parse_key_values, quiet_interrupt,
                             resolve_device, run_cli)

PROG = "fcpo-train"
ENV_FLAGS = ("dataset", "columns", "data_dir", "slate_size", "horizon", "grouping", "reward")  # flags that are env options
RESUME_FORBIDS = ("alpha", "constraint", "agent", "seed", "config", "name", "run_dir", "env", *ENV_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default=None,
                   help="registered agent name (default fcpo; e.g. fcpo, trpo, ppo-lagrangian, wolpertinger, tpgr, "
                        "ialp); an unknown name lists them all")
    p.add_argument("--alpha", type=float, default=None,
                   help="α' in (0, 1]: at most α'·K items of the popular group G0 per K-item slate (default 1.0)")
    p.add_argument("--constraint", choices=("per-slate", "expected"), default=None,
                   help="how α' is met: per-slate (default) caps the G0 items of every slate inside the policy's "
                        "decoding, greedy and sampled alike; expected trains the CMDP constraint (mean share <= α') "
                        "and deploys the trained stochastic policy")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an agent hyper-parameter, e.g. --set max_kl=0.02 (repeatable; YAML-typed)")
    p.add_argument("--list-params", action="store_true",
                   help="print every hyper-parameter of --agent (type, default, description) and exit")
    g = p.add_argument_group("environment (options of the env id, stored as env: in config.yaml)")
    g.add_argument("--env", default=None, metavar="ID", help="registered env id (default fcpo/MovieLensFair-v0)")
    add_data_flags(g)
    g.add_argument("--slate-size", type=int, default=None, help="K, items per recommendation (default 5)")
    g.add_argument("--horizon", type=int, default=None, help="T, steps per user episode (default 10)")
    g.add_argument("--grouping", choices=("static", "dynamic"), default=None,
                   help="item groups: static (from train counts, default) or dynamic (recomputed with exposure)")
    g.add_argument("--reward", choices=("hit", "rating"), default=None, help="env reward (default hit)")
    g.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the env, e.g. --env-option popular_ratio=0.1 (repeatable; YAML-typed)")
    r = p.add_argument_group("run")
    r.add_argument("--iterations", type=int, default=None, help="training iterations in total (default 100)")
    r.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    r.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    add_threads_flag(r)
    r.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML with keys agent, seed, iterations, device, threads, env: {id, ...}, agent_config: {...}")
    r.add_argument("--run-dir", default=None, help="parent folder of run folders (default runs/)")
    r.add_argument("--name", default=None, help="run folder name (default <agent>-<dataset>-a<alpha>-s<seed>-<time>)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its checkpoint until it has --iterations in total")
    r.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit (nothing is written)")
    r.add_argument("--eval-protocol", choices=("rollout", "ranking"), default="rollout",
                   help="protocol of the final test evaluation written to metrics.json (default rollout)")
    r.add_argument("--no-eval", action="store_true", help="skip the final test evaluation")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args):
    """Defaults < ``--config`` file < flags, as a resolved :class:`fcpo.runs.RunConfig`."""
    from fcpo.runs import RunConfig, agent_config_values, resolve

    for flag in ("iterations", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise CLIError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.seed is not None and args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.device is not None:
        resolve_device(args.device)  # form and presence of the device, named as the flag
    config = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    config.environment = None
    for key in ("agent", "seed", "iterations", "device", "threads"):
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    env = dict(config.env)
    if args.env is not None:
        if args.env != env.get("id"):
            env = {"id": args.env}  # another env: the file's options belonged to the old one
    env.update({k: getattr(args, k) for k in ENV_FLAGS if getattr(args, k) is not None})
    env.update(parse_key_values(args.env_option, "--env-option"))
    config.env = env
    if args.alpha is not None:
        if not 0.0 < args.alpha <= 1.0:
            raise CLIError(f"--alpha must lie in (0, 1], got {args.alpha}")
        config.agent_config["alpha_prime"] = args.alpha
    if args.constraint is not None:
        config.agent_config["constraint"] = args.constraint
    config.validate("flags")
    config.agent_config = agent_config_values(config.agent, config.agent_config, "agent_config")
    config.agent_config.update(agent_config_values(config.agent, parse_key_values(args.set, "--set", raw=True),
                                                   "--set"))
    return resolve(config)


def _list_params(agent: str) -> int:
    from fcpo.runs import agent_fields

    rows = agent_fields(agent)
    print(f"hyper-parameters of agent {agent!r} (set with --set NAME=VALUE or agent_config: in --config):")
    for row in rows:
        print(f"  {row['name']:<26} {str(row['type']):<14} default {row['default']!r}"
              + (f"\n      {row['help']}" if row.get("help") else ""))
    return 0


def _main(args) -> int:
    from fcpo import runs

    if args.list_params:
        return _list_params(args.agent or "fcpo")
    if args.resume:
        given = [f for f in RESUME_FORBIDS if getattr(args, f) is not None] + [
            f for f in ("set", "env_option") if getattr(args, f)]
        if given:
            raise CLIError(f"--resume takes its settings from {Path(args.resume) / runs.CONFIG}; drop "
                           + ", ".join("--" + g.replace("_", "-") for g in given))
        return _resume(args)
    config = config_from_args(args)
    if args.print_config:
        print(config.to_yaml_text(), end="")
        return 0
    runs.set_threads(config.threads)
    device = resolve_device(config.device)
    name = args.name or runs.default_run_name(config)
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CLIError(f"--name {name!r}: give a plain folder name (no '/')")
    if (Path(args.run_dir or "runs") / name).exists():  # fail before the data is loaded
        raise CLIError(f"run folder {Path(args.run_dir or 'runs') / name} exists; choose another --name, "
                       f"or continue it with --resume")
    agent = runs.build_agent(config, device)  # loads data: fails before any folder exists
    run_dir = runs.create_run(args.run_dir or "runs", name, config)
    try:
        with runs.run_lock(run_dir):
            _announce(config, device, run_dir)
            return _train(args, config, agent, run_dir, 0, [], device)
    except Exception:
        _discard_if_empty(run_dir)
        raise


def _discard_if_empty(run_dir: Path) -> None:
    """A new run that failed before its first checkpoint (bad values, a diverged first iteration, a full
    disk) leaves no half-made folder behind; one with a checkpoint is kept for --resume."""
    import shutil

    from fcpo import runs

    if not (run_dir / runs.CHECKPOINT).exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def _resume(args) -> int:
    from fcpo import runs

    run_dir = Path(args.resume)
    if args.iterations is not None and args.iterations < 1:
        raise CLIError(f"--iterations must be >= 1, got {args.iterations}")
    stored = runs.load_config(run_dir)
    threads = args.threads if args.threads is not None else stored.threads
    runs.set_threads(threads)
    device = resolve_device(args.device or stored.device)
    with runs.run_lock(run_dir):  # one process per run folder; sweeps a crash's temp files
        config, agent, start, records = runs.open_run(run_dir, device, require_checkpoint=False)
        config.threads = threads
        total = args.iterations if args.iterations is not None else config.iterations
        if total <= start:
            raise CLIError(f"--iterations {total}: {run_dir} already holds {start} iteration(s); "
                           f"give a larger total to continue it")
        config.iterations = total
        config.to_yaml(run_dir / runs.CONFIG)
        print(f"{PROG}: resuming {run_dir} at iteration {start} of {total} on {device}, {config.threads} thread(s)"
              + ("" if start else " (no checkpoint yet: starting from the beginning)"), file=sys.stderr)
        return _train(args, config, agent, run_dir, start, records, device)


def _train(args, config, agent, run_dir: Path, start: int, records: list, device) -> int:
    from fcpo import runs

    try:
        records = records + runs.train_loop(agent, run_dir, start, config.iterations, progress=not args.no_progress,
                                            desc=config.agent)
    except runs.RunInterrupted as exc:
        print(f"\n{PROG}: interrupted; {exc.last_done + 1} iteration(s) kept in {run_dir}. "
              f"Continue with: fcpo-train --resume {run_dir} --iterations {config.iterations}", file=sys.stderr)
        raise SystemExit(130) from None
    metrics = runs.finish_run(run_dir, config, agent, records, None if args.no_eval else args.eval_protocol, device)
    if "test" in metrics:
        from fcpo.evaluate import format_report

        print(format_report(metrics["test"]))
    print(runs.training_summary(config, records, metrics, run_dir))
    print(f"{PROG}: run folder {run_dir}", file=sys.stderr)
    return 0


def _announce(config, device, run_dir: Path) -> None:
    env, cfg = config.env, config.agent_config
    msg = [f"{PROG}: {config.agent} on {config.env_id} {env.get('dataset', '')} (K={env.get('slate_size')}, "
           f"T={env.get('horizon')}, {env.get('grouping', 'static')} groups) on {device}, "
           f"{config.threads} thread(s); run folder {run_dir}"]
    if "alpha_prime" in cfg and "slate_size" in env:
        k, a = env["slate_size"], cfg["alpha_prime"]
        msg.append(f"{PROG}: cost = number of G0 items in the slate; limit α'·K = {a:g}·{k} = {a * k:g} G0 items per "
                   f"step, i.e. {a * k * env['horizon']:g} per {env['horizon']}-step episode (α'·K × the episode's "
                   f"length when it ends early: the logged cost_limit)")
        mode = cfg.get("constraint")
        if mode == "per-slate" and cfg.get("constrained", True):
            msg.append(f"{PROG}: constraint per-slate: no slate ever holds more than ⌊α'·K⌋ = {int(a * k + 1e-9)} G0 "
                       f"items (enforced in the policy's decoding; the deployed policy is greedy)")
        elif mode == "expected":
            msg.append(f"{PROG}: constraint expected: the mean cost per episode is trained to stay within the limit; "
                       f"the deployed policy is the trained stochastic one (evaluated sampled)")
        if not cfg.get("constrained", True):
            msg.append(f"{PROG}: this agent is unconstrained; the limit is only reported")
    print("\n".join(msg), file=sys.stderr)


def main(argv=None) -> int:
    with quiet_interrupt(PROG):
        args = build_parser().parse_args(argv)
        return run_cli(PROG, _main, args)


if __name__ == "__main__":
    sys.exit(main())
