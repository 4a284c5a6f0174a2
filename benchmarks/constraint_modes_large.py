"""Per-slate vs expected constraint modes for the large-action-space agents (Wolpertinger, TPGR).

For each agent, mode (``per-slate`` | ``expected``) and α': train ``--iterations`` iterations on
ml-100k (seed 0), then roll out every test user with the policy's deployed mode
(``policy.deploy_mode``: greedy, or the trained stochastic policy) and report F1@50 (K = 5,
L = 10, :func:`fcpo.evaluate.evaluate`), the mean G0 share, the largest per-step share, the
per-step profile and the per-slate statistics of :func:`fcpo.evaluate.constraint.constraint_report`
(from our own rollout over the same users, recording each slate's G0 count under the groups in
force).  Prints a table and writes JSON atomically after every run.

    FCPO_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/constraint_modes_large.py
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_data_dir, write_json  # noqa: E402

from fcpo.agents.base import make_agent  # noqa: E402
from fcpo.agents.rollout import run_slate_episodes  # noqa: E402
from fcpo.agents.tpgr import TPGRConfig  # noqa: E402
from fcpo.agents.wolpertinger import WolpertingerConfig  # noqa: E402
from fcpo.envs import EnvSpec  # noqa: E402
from fcpo.evaluate import evaluate  # noqa: E402
from fcpo.evaluate.constraint import constraint_report  # noqa: E402

CONFIGS = {"wolpertinger": WolpertingerConfig, "tpgr": TPGRConfig}


@torch.no_grad()
def test_popular_counts(policy, spec: EnvSpec, mode: str, seed: int = 0) -> np.ndarray:
    """[U, L] G0 items in each test slate (every test user, training items excluded, as the evaluator)."""
    vec = spec.make_vector(cover_all_users=True, mode="test")
    rows = np.arange(vec.n_users)
    train_items = torch.as_tensor(vec.env_data.split.train_items().to_mask(vec.n_items, rows))
    generator = torch.Generator().manual_seed(seed)
    counts = []

    def act(state, exclude, t):
        popular = np.asarray(vec.is_popular, dtype=bool)
        policy.set_groups(popular)  # the groups in force at this step
        slate = policy.act(state, vec.slate_size, mode, exclude, generator)
        counts.append(popular[slate.numpy()].sum(1))
        return slate

    run_slate_episodes(vec, rows, act, "cpu", seed=seed, extra_exclude=train_items, until_done=False)
    return np.stack(counts, 1)


def run(agent_name: str, constraint: str, alpha: float, iterations: int, spec: EnvSpec, seed: int,
        deploy: str | None = None) -> dict:
    extra = {} if deploy is None else {"deploy": deploy}
    cfg = CONFIGS[agent_name](alpha_prime=alpha, constraint=constraint, **extra)
    agent = make_agent(agent_name, cfg, spec, "cpu", seed)
    start = time.perf_counter()
    history = [agent.train_iteration(it) for it in range(iterations)]
    train_s = time.perf_counter() - start
    policy = agent.policy
    mode = policy.deploy_mode
    report = evaluate(policy, spec, protocol="rollout", mode=mode)
    k, steps = report["k"], report["steps"]
    counts = test_popular_counts(policy, spec, mode, seed)
    policy.set_groups(np.asarray(agent.env.is_popular, dtype=bool))
    cons = constraint_report(counts, k, alpha)
    return {
        "agent": agent_name, "constraint": constraint, "alpha_prime": alpha, "deploy_mode": mode, "seed": seed,
        "iterations": iterations, "train_seconds": train_s,
        f"f1@{k * steps}": report["metrics"][f"f1@{k * steps}"],
        "evaluator_popularity_rate": report["metrics"]["popularity_rate"],
        "popular_share": cons["popular_share"], "max_step_share": cons["max_step_share"],
        "popular_share_per_step": cons["popular_share_per_step"], "max_slate_popular": cons["max_slate_popular"],
        "fraction_above_cap": cons["fraction_above_cap"], "cap": cons["cap"],
        "lambda_per_iteration": [h["lambda"] for h in history],
        "train_popular_share": [h["popular_share"] for h in history],
        "deployed_popular_share_train": [h.get("deployed_popular_share") for h in history],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", nargs="+", default=["wolpertinger", "tpgr"], choices=sorted(CONFIGS))
    ap.add_argument("--modes", nargs="+", default=["per-slate", "expected"], choices=["per-slate", "expected"])
    ap.add_argument("--alphas", nargs="+", type=float, default=[0.4, 1.0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deploy", choices=["sample", "greedy"], default=None,
                    help="expected mode: the deployed policy (default: each agent's own default)")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--out", default=str(RESULTS / "constraint_modes_large.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    spec = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": args.dataset, "data_dir": default_data_dir()})
    rows = []
    print(f"{'agent':<13}{'mode':<10}{'α′':>5}{'deploy':>8}{'F1@50 %':>9}{'share':>7}{'max step':>9}"
          f"{'max/slate':>10}{'cap':>4}{'λ end':>7}{'train s':>8}")
    for agent_name in args.agents:
        for constraint in args.modes:
            for alpha in args.alphas:
                r = run(agent_name, constraint, alpha, args.iterations, spec, args.seed, args.deploy)
                rows.append(r)
                f1 = next(v for key, v in r.items() if key.startswith("f1@"))
                print(f"{agent_name:<13}{constraint:<10}{alpha:>5.1f}{r['deploy_mode']:>8}{100 * f1:>9.2f}"
                      f"{r['popular_share']:>7.3f}{r['max_step_share']:>9.3f}{r['max_slate_popular']:>10d}"
                      f"{r['cap']:>4d}{r['lambda_per_iteration'][-1]:>7.2f}{r['train_seconds']:>8.0f}", flush=True)
                write_json(args.out, {"benchmark": "constraint_modes_large", "args": vars(args), "runs": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
