"""``fcpo-train``: train FCPO or a baseline agent and write a run folder.

    fcpo-train --alpha 0.8                          # FCPO on ml-1m, paper defaults
    fcpo-train --dataset ml-100k --data-dir ../shared/data --agent trpo --iterations 50
    fcpo-train --resume runs/fcpo-ml-100k-a0.8-s0-... --iterations 200

Settings resolve as: agent/env defaults < ``--config FILE.yaml`` < flags.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path

import yaml

from fcpo.cli.common import CLIError, add_data_flags, fail, resolve_device

PROG = "fcpo-train"


def build_parser() -> argparse.ArgumentParser:
    from fcpo.agents.base import AGENTS, load_agent_modules

    load_agent_modules()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alpha", type=float, default=None,
                   help="α' in (0, 1]: at most α'·K items of the popular group G0 per K-item slate (default 1.0)")
    add_data_flags(p)
    p.add_argument("--agent", default=None, choices=sorted(AGENTS),
                   help="algorithm: " + "; ".join(f"{n}: {s.description}" for n, s in sorted(AGENTS.items())))
    p.add_argument("--slate-size", type=int, default=None, help="K, items per recommendation (default 5)")
    p.add_argument("--horizon", type=int, default=None, help="T, steps per user episode (default 10)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations in total (default 100)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--run-dir", default=None, help="parent folder of run folders (default runs/)")
    p.add_argument("--name", default=None, help="run folder name (default <agent>-<dataset>-a<alpha>-s<seed>-<time>)")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML with keys agent, seed, iterations, device, env: {...}, agent_config: {...}")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its checkpoint until it has --iterations in total")
    p.add_argument("--grouping", choices=("static", "dynamic"), default=None,
                   help="item groups: static (from train counts) or dynamic (recomputed with exposure)")
    p.add_argument("--reward", choices=("hit", "rating"), default=None, help="env reward (default hit)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an agent hyper-parameter, e.g. --set max_kl=0.02 (repeatable)")
    p.add_argument("--eval-protocol", choices=("rollout", "ranking"), default="rollout",
                   help="protocol of the final test evaluation written to metrics.json")
    p.add_argument("--no-eval", action="store_true", help="skip the final test evaluation")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_value(text: str):
    return yaml.safe_load(text)


def _resolve(args) -> dict:
    """Defaults < --config file < flags, as one plain dict (what config.yaml stores)."""
    from fcpo.agents.base import AGENTS, load_agent_modules
    from fcpo.envs.config import FairEnvConfig

    load_agent_modules()
    settings = {"agent": "fcpo", "seed": 0, "iterations": 100, "device": "auto", "env": {}, "agent_config": {}}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise CLIError(f"--config {path}: no such file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise CLIError(f"--config {path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise CLIError(f"--config {path}: expected a mapping at the top level")
        unknown = sorted(set(loaded) - set(settings) - {"environment", "created"})
        if unknown:
            raise CLIError(f"--config {path}: unknown key(s) {unknown}; valid: {sorted(settings)}")
        for key in ("env", "agent_config"):
            settings[key].update(loaded.get(key) or {})
        for key in ("agent", "seed", "iterations", "device"):
            if key in loaded:
                settings[key] = loaded[key]
    for flag, key in (("agent", "agent"), ("seed", "seed"), ("iterations", "iterations"), ("device", "device")):
        if getattr(args, flag) is not None:
            settings[key] = getattr(args, flag)
    env_flags = {"dataset": args.dataset, "data_dir": args.data_dir, "slate_size": args.slate_size,
                 "horizon": args.horizon, "grouping": args.grouping, "reward": args.reward}
    settings["env"].update({k: v for k, v in env_flags.items() if v is not None})
    if settings["env"].get("data_dir") is not None:
        settings["env"]["data_dir"] = str(Path(settings["env"]["data_dir"]).expanduser().resolve())
    if args.alpha is not None:
        settings["agent_config"]["alpha_prime"] = args.alpha
    for item in args.set:
        if "=" not in item:
            raise CLIError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        settings["agent_config"][key.strip().replace("-", "_")] = _parse_value(value)
    if settings["agent"] not in AGENTS:
        raise CLIError(f"unknown agent {settings['agent']!r}; choose one of {', '.join(sorted(AGENTS))}")
    if not isinstance(settings["iterations"], int) or settings["iterations"] < 1:
        raise CLIError(f"--iterations must be a positive integer, got {settings['iterations']!r}")
    # validate both configs now, before anything is written
    spec = AGENTS[settings["agent"]]
    try:
        env_cfg = FairEnvConfig.from_kwargs(**{**settings["env"], "mode": "train"})
        agent_cfg = _agent_config(spec.config_cls, settings["agent_config"])
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    alpha = getattr(agent_cfg, "alpha_prime", None)
    settings["env"] = asdict(env_cfg)
    settings["agent_config"] = asdict(agent_cfg)
    if alpha is not None and not 0.0 < alpha <= 1.0:
        raise CLIError(f"--alpha must lie in (0, 1], got {alpha}")
    return settings


def _agent_config(cls, values: dict):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown agent hyper-parameter(s) {unknown} for this agent; valid: {sorted(names)}")
    return cls(**values)


def _build_agent(settings: dict, device):
    from fcpo.agents.base import AGENTS, make_agent
    from fcpo.envs.config import FairEnvConfig

    spec = AGENTS[settings["agent"]]
    try:
        env_cfg = FairEnvConfig(**settings["env"])
        agent_cfg = spec.config_cls(**settings["agent_config"])
        return make_agent(settings["agent"], agent_cfg, env_cfg, device, settings["seed"]), env_cfg
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None


def _default_name(settings: dict) -> str:
    alpha = settings["agent_config"].get("alpha_prime", 1.0)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{settings['agent']}-{settings['env']['dataset']}-a{alpha:g}-s{settings['seed']}-{stamp}"


def _scalars(stats: dict) -> dict:
    return {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def train(settings: dict, run_dir: Path, agent, env_cfg, device, start: int, records: list[dict],
          progress: bool = True) -> list[dict]:
    """Iterations ``start .. settings['iterations'] - 1``; checkpoint after each."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from fcpo.runs import CHECKPOINT, LOG, append_jsonl, save_checkpoint

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start)
    total = settings["iterations"]
    bar = tqdm(range(start, total), initial=start, total=total, desc=settings["agent"], disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    last_saved = start - 1
    try:
        for it in bar:
            t0 = time.perf_counter()
            stats = agent.train_iteration(it)
            record = {"iteration": it, "seconds": time.perf_counter() - t0, **_scalars(stats)}
            for key, value in stats.items():
                if isinstance(value, str):
                    record[key] = value
            save_checkpoint(run_dir / CHECKPOINT, {"iteration": it, "agent": agent.state_dict()})
            last_saved = it
            append_jsonl(run_dir / LOG, record)
            records.append(record)
            for key, value in _scalars(record).items():
                writer.add_scalar(f"train/{key}", value, it)
            if "cpo_case" in record:
                from fcpo.solvers import CPO_CASES

                writer.add_scalar("train/cpo_case_index", list(CPO_CASES).index(record["cpo_case"])
                                  if record["cpo_case"] in CPO_CASES else -1, it)
            bar.set_postfix(reward=f"{record.get('reward', math.nan):.3f}", cost=f"{record.get('cost', math.nan):.2f}",
                            limit=f"{record.get('cost_limit', math.nan):.2f}", kl=f"{record.get('kl', math.nan):.4f}")
    except KeyboardInterrupt:
        bar.close()
        writer.close()
        if last_saved >= 0:
            save_checkpoint(run_dir / CHECKPOINT, {"iteration": last_saved, "agent": _last_state(run_dir)})
        print(f"\n{PROG}: interrupted; checkpoint of iteration {last_saved + 1} kept in {run_dir}. "
              f"Continue with: fcpo-train --resume {run_dir} --iterations {total}", file=sys.stderr)
        raise SystemExit(130)
    bar.close()
    writer.close()
    return records


def _last_state(run_dir: Path) -> dict:
    from fcpo.runs import CHECKPOINT, load_checkpoint

    return load_checkpoint(run_dir / CHECKPOINT)["agent"]


def finish(settings: dict, run_dir: Path, agent, env_cfg, device, records: list[dict], protocol: str,
           do_eval: bool) -> dict:
    from fcpo.evaluate import evaluate, format_report
    from fcpo.runs import METRICS, plot_training, write_json

    metrics = {"agent": settings["agent"], "iterations": settings["iterations"],
               "train": records[-1] if records else {}}
    if do_eval:
        report = evaluate(agent.policy, env_cfg, protocol=protocol, device=device)
        metrics["test"] = report
        print(format_report(report))
    write_json(run_dir / METRICS, metrics)
    plot_training(run_dir, records)
    return metrics


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except CLIError as exc:
        fail(PROG, str(exc))
    except FileNotFoundError as exc:
        fail(PROG, str(exc))


def _main(args) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    from fcpo.runs import (CONFIG, LOG, environment_info, load_checkpoint, load_config, save_config, truncate_jsonl)

    if args.resume:
        run_dir = Path(args.resume)
        given = [f for f in ("alpha", "dataset", "data_dir", "agent", "slate_size", "horizon", "seed", "config",
                             "grouping", "reward", "name", "run_dir") if getattr(args, f) is not None] + \
            (["set"] if args.set else [])
        if given:
            raise CLIError(f"--resume takes its settings from {run_dir / CONFIG}; drop {', '.join('--' + g.replace('_', '-') for g in given)}")
        settings = load_config(run_dir)
        if args.iterations is not None:
            settings["iterations"] = args.iterations
        device = resolve_device(args.device or settings.get("device", "auto"))
        agent, env_cfg = _build_agent(settings, device)
        ckpt = load_checkpoint(run_dir / "checkpoint.pt", device)
        agent.load_state_dict(ckpt["agent"])
        start = int(ckpt["iteration"]) + 1
        records = truncate_jsonl(run_dir / LOG, start - 1)
        save_config(run_dir, settings)
        print(f"{PROG}: resuming {run_dir} at iteration {start} of {settings['iterations']}", file=sys.stderr)
    else:
        settings = _resolve(args)
        device = resolve_device(settings["device"])
        agent, env_cfg = _build_agent(settings, device)  # loads data: fails before any folder exists
        parent = Path(args.run_dir or "runs")
        name = args.name or _default_name(settings)
        run_dir = parent / name
        if run_dir.exists():
            raise CLIError(f"run folder {run_dir} exists; choose another --name or continue it with --resume {run_dir}")
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
        try:
            settings["environment"] = environment_info()
            save_config(staging, settings)
            os.replace(staging, run_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        start, records = 0, []
        _announce(settings, agent, device, run_dir)
    records = train(settings, run_dir, agent, env_cfg, device, start, records, progress=not args.no_progress)
    finish(settings, run_dir, agent, env_cfg, device, records, args.eval_protocol, not args.no_eval)
    print(f"{PROG}: run folder {run_dir}", file=sys.stderr)
    return 0


def _announce(settings: dict, agent, device, run_dir: Path) -> None:
    env = settings["env"]
    cfg = settings["agent_config"]
    msg = [f"{PROG}: {settings['agent']} on {env['dataset']} (K={env['slate_size']}, T={env['horizon']}, "
           f"{env['grouping']} groups, G0 = top {env['popular_ratio']:.0%} items) on {device}; run folder {run_dir}"]
    if "alpha_prime" in cfg:
        k = env["slate_size"]
        msg.append(f"{PROG}: cost = number of G0 items in the slate; limit α'·K = {cfg['alpha_prime']:g}·{k} = "
                   f"{cfg['alpha_prime'] * k:g} G0 items per step, i.e. {cfg['alpha_prime'] * k * env['horizon']:g} per "
                   f"{env['horizon']}-step episode (CPO uses the γ_c-discounted sum of the per-step limit)")
        if not cfg.get("constrained", True):
            msg.append(f"{PROG}: this agent is unconstrained; the limit is only reported")
    print("\n".join(msg), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
