"""Benchmark: online return over interaction steps for no pre-training, iALP, A-iALP_ft and A-iALP_ap.

iALP-style reproduction of arXiv 2501.13816's online experiment (no public code; every design
choice is ours and listed in ``fcpo.agents.ialp``): one oracle → reward model → offline pre-training
per seed (it does not depend on the simulator), then each method runs online in the three
``fcpo/MovieLensSim-v0`` configurations (``noisy``, ``impatient``, ``popular``):

* ``none``: the same actor and PPO update, no pre-training (the actor starts knowing nothing);
* ``iALP``: the pre-trained policy deployed without updates;
* ``A-iALP_ft``: the pre-trained policy fine-tuned online;
* ``A-iALP_ap``: mixture of the frozen pre-trained and an online policy, learned weight, exploration
  bonus (our adaptive design);
* ``MF prior`` (reference; ``--no-mf-prior`` drops it): no pre-training, but FCPO's actor whose untrained
  greedy policy is the MF ranker of the logged data.

Return = clicks per simulated user episode (T steps of K items; users may leave early), measured on
the rollouts the method itself collects (exploration included).  Prints a table, writes
``results/benchmarks/ialp.json`` and ``ialp.png`` (mean ± std over seeds against interactions).

    python benchmarks/ialp.py --dataset ml-100k --data-dir ../shared/data --oracle tfidf --seeds 0 1 2
    python benchmarks/ialp.py --smoke       # seconds: synthetic data, tiny settings
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, default_data_dir, markdown_table, write_json  # noqa: E402

from fcpo.agents.ialp import IALPAgent, IALPConfig, build_oracle  # noqa: E402
from fcpo.envs.contract import EnvSpec  # noqa: E402
from fcpo.envs.simulator import SIM_PRESETS  # noqa: E402

METHODS = ("none", "iALP", "A-iALP_ft", "A-iALP_ap")
REFERENCE = "MF prior"


def _agent(method: str, cfg: IALPConfig, env_cfg: EnvSpec, seed: int, pretrained: dict) -> IALPAgent:
    if method == "none":
        agent = IALPAgent(replace(cfg, pretrain_iterations=0), env_cfg, seed=seed, variant="ialp-ft")
    elif method == REFERENCE:
        agent = IALPAgent(replace(cfg, pretrain_iterations=0, residual_user=True), env_cfg, seed=seed,
                          variant="ialp-ft")
    else:
        agent = IALPAgent(cfg, env_cfg, seed=seed, variant="ialp-ap" if method == "A-iALP_ap" else "ialp-ft")
        agent.load_pretrained(pretrained)
        return agent
    agent.start_online()
    return agent


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    env_cfg = EnvSpec(kwargs={"dataset": args.dataset, "data_dir": args.data_dir, "slate_size": args.slate_size,
                              "horizon": args.horizon, "embedding_dim": args.embedding_dim})
    import yaml

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
    base = IALPConfig(**{**dict(oracle=args.oracle, oracle_model=args.oracle_model, oracle_states=args.oracle_states,
                                pretrain_iterations=args.pretrain_iterations, pretrain_users=args.users,
                                online_users=args.users), **overrides})
    methods = list(METHODS) + ([REFERENCE] if args.mf_prior else [])
    oracle = None
    pretraining, curves = {}, {p: {m: {"reward": [], "cost": [], "interactions": []} for m in methods}
                               for p in args.presets}
    calibration = None
    for seed in args.seeds:
        ts = time.perf_counter()
        pre_agent = IALPAgent(replace(base, sim_preset=args.presets[0]), env_cfg, seed=seed, variant="ialp-ft")
        calibration = pre_agent.sim_env.sim_data.calibration
        oracle = oracle or build_oracle(base, pre_agent.env_data.data)  # item texts embedded once
        to = time.perf_counter()
        stats = pre_agent.learn_reward(oracle)
        stats["oracle_seconds"] = time.perf_counter() - to
        offline = [pre_agent.offline_iteration()["offline_reward"] for _ in range(args.pretrain_iterations)]
        pretrained = pre_agent.pretrained_state()
        pretraining[str(seed)] = {**stats, "offline_reward_curve": offline, "seconds": time.perf_counter() - ts}
        print(f"seed {seed}: oracle {oracle.name} (LLM: {oracle.is_llm}); reward model held-out pair accuracy "
              f"{stats.get('reward_val_pair_acc', float('nan')):.3f}, vs random {stats.get('reward_val_vs_random', float('nan')):.3f}; "
              f"offline return {offline[0] if offline else float('nan'):.2f} -> {offline[-1] if offline else float('nan'):.2f}",
              flush=True)
        for preset in args.presets:
            cfg = replace(base, sim_preset=preset)
            for method in methods:
                agent = _agent(method, cfg, env_cfg, seed, pretrained)
                rec = [agent.online_iteration(update=method != "iALP") for _ in range(args.iterations)]
                c = curves[preset][method]
                c["reward"].append([r["reward"] for r in rec])
                c["cost"].append([r["cost"] for r in rec])
                c["interactions"].append([r["interactions"] for r in rec])
                if method == "A-iALP_ap":
                    c.setdefault("mix_weight", []).append([r["mix_weight"] for r in rec])
            print(f"  {preset}: " + ", ".join(f"{m} {np.mean(curves[preset][m]['reward'][-1]):.2f}" for m in methods),
                  flush=True)
    rows = summarise(curves, args.window)
    return {"command": "python benchmarks/ialp.py " + " ".join(args.argv), "dataset": args.dataset,
            "oracle": {"name": oracle.name, "is_llm": oracle.is_llm, "description": oracle.description,
                       "model": args.oracle_model},
            "seeds": list(args.seeds), "presets": {p: asdict(SIM_PRESETS[p]) for p in args.presets},
            "methods": methods, "agent_config": asdict(base), "env_config": asdict(env_cfg),
            "simulator_calibration": calibration, "pretraining": pretraining, "curves": curves, "rows": rows,
            "window": args.window, "seconds": time.perf_counter() - t0,
            "labels": "iALP-style (arXiv 2501.13816 has no public code): simulator, prompts, reward model, "
                      "offline user model, PPO update and A-iALP_ap are our designs"}


def summarise(curves: dict, window: int) -> list[dict]:
    """Per (simulator, method): mean ± std over seeds of the first-``window`` / last-``window`` /
    all-iteration mean return, and of the mean cost."""
    rows = []
    for preset, by_method in curves.items():
        for method, c in by_method.items():
            r = np.asarray(c["reward"], dtype=np.float64)  # [seeds, iterations]
            cost = np.asarray(c["cost"], dtype=np.float64)
            w = max(1, min(window, r.shape[1]))
            first, last, auc = r[:, :w].mean(1), r[:, -w:].mean(1), r.mean(1)
            rows.append({"simulator": preset, "method": method, "seeds": int(r.shape[0]),
                         "initial_return": float(first.mean()), "initial_std": float(first.std()),
                         "final_return": float(last.mean()), "final_std": float(last.std()),
                         "mean_return": float(auc.mean()), "mean_std": float(auc.std()),
                         "cost": float(cost.mean()), "interactions": float(np.mean(c["interactions"], axis=0)[-1])})
    return rows


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(result["curves"])
    fig, axes = plt.subplots(1, len(presets), figsize=(4.6 * len(presets), 3.6), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        for method, c in result["curves"][preset].items():
            r = np.asarray(c["reward"], dtype=np.float64)
            x = np.mean(c["interactions"], axis=0)
            ax.plot(x, r.mean(0), label=method, ls="--" if method == REFERENCE else "-")
            ax.fill_between(x, r.mean(0) - r.std(0), r.mean(0) + r.std(0), alpha=0.2)
        ax.set_title(f"MovieLensSim-v0 · {preset}")
        ax.set_xlabel("interaction steps (user-steps)")
        ax.set_ylabel("clicks per episode")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    o = result["oracle"]
    fig.suptitle(f"{result['dataset']} · oracle {o['name']}{'' if o['is_llm'] else ' (not an LLM)'} · "
                 f"{len(result['seeds'])} seeds · iALP-style", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def table(result: dict) -> str:
    rows = [{**r, "initial": f"{r['initial_return']:.2f} ± {r['initial_std']:.2f}",
             "final": f"{r['final_return']:.2f} ± {r['final_std']:.2f}",
             "mean": f"{r['mean_return']:.2f} ± {r['mean_std']:.2f}"} for r in result["rows"]]
    return markdown_table(rows, ["simulator", "method", "initial", "final", "mean", "cost"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-1m", "synthetic"))
    p.add_argument("--data-dir", default=None, help="default: $FCPO_DATA_DIR or ../shared/data")
    p.add_argument("--oracle", default="tfidf", choices=("tfidf", "minilm", "lm"))
    p.add_argument("--oracle-model", default=None, help="minilm: model folder; lm: load_causal_lm name/path")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--presets", nargs="+", default=list(SIM_PRESETS), choices=list(SIM_PRESETS))
    p.add_argument("--iterations", type=int, default=15, help="online iterations per run")
    p.add_argument("--pretrain-iterations", type=int, default=30)
    p.add_argument("--users", type=int, default=128, help="users per online / offline iteration")
    p.add_argument("--oracle-states", type=int, default=512)
    p.add_argument("--slate-size", type=int, default=5)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--embedding-dim", type=int, default=32)
    p.add_argument("--window", type=int, default=3, help="iterations averaged for initial / final return")
    p.add_argument("--mf-prior", action=argparse.BooleanOptionalAction, default=True,
                   help="add the MF-prior reference (no pre-training, FCPO's residual-user actor)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an IALPConfig field, e.g. --set entropy_coef=0.01 (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "ialp.json"))
    p.add_argument("--smoke", action="store_true", help="seconds: synthetic data, 1 seed, tiny settings")
    return p


SMOKE = ["--dataset", "synthetic", "--seeds", "0", "--iterations", "2", "--pretrain-iterations", "2",
         "--users", "32", "--oracle-states", "64", "--embedding-dim", "8"]


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.smoke:
        args = build_parser().parse_args(SMOKE + [a for a in argv if a != "--smoke"])
    args.argv = argv
    if args.dataset != "synthetic" and args.data_dir is None:
        args.data_dir = default_data_dir()
    result = run(args)
    out = Path(args.out)
    result["files"] = {"json": str(out), "plot": str(plot(result, out.with_suffix(".png")))}
    write_json(out, result)
    print(table(result))
    print(f"wrote {out} and {out.with_suffix('.png')} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
