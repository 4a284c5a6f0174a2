"""One evaluator for every policy: RL agents, rankers, and later DPO or LLM policies.

Two protocols over the test users of a split:

* ``ranking``: one top-K list per user from the test initial state, the user's
  training-period items excluded; Precision/Recall/F1/NDCG/HR@K against the
  test positives.
* ``rollout`` (the FCPO authors' interactive protocol, with their bugs fixed):
  K items per step for L steps through the env in test mode, hits folded into
  the state, training-period items and earlier recommendations excluded;
  metrics at cut-offs t·K along the concatenated list.  Recall's and NDCG's
  denominators are the number of test positives *before* the rollout (the
  authors' code shrank them as items were hit, inflating recall about 2x), and
  F1 is computed (theirs never was).

Fairness: ``popularity_rate`` (share of G0 items, G0 fixed from training
counts), Gini of item exposure over the whole catalogue (FCPO eq. 23), item
coverage.  Greedy by default; ``mode="sample"`` with several ``seeds`` gives
mean ± std.
"""
from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import torch

from fcpo.data.groups import popular_mask
from fcpo.envs.config import FairEnvConfig
from fcpo.envs.vector import MovieLensFairVectorEnv
from fcpo.metrics import (exposure_counts, f1_at_k, gini_fcpo, hit_rate_at_k, item_coverage, ndcg_at_k,
                          popularity_rate, precision_at_k, recall_at_k, relevance_matrix)
from fcpo.policies.base import SlateState

PROTOCOLS = ("ranking", "rollout")


def _state(env: MovieLensFairVectorEnv, obs: np.ndarray, device) -> SlateState:
    core = env.core
    return SlateState.from_numpy(obs, core.history, core.split.user_ids[core.rows], device)


def _accuracy(rec: np.ndarray, relevant: np.ndarray, k: int) -> dict:
    return {
        f"precision@{k}": precision_at_k(rec, relevant, k), f"recall@{k}": recall_at_k(rec, relevant, k),
        f"f1@{k}": f1_at_k(rec, relevant, k), f"ndcg@{k}": ndcg_at_k(rec, relevant, k),
        f"hit_rate@{k}": hit_rate_at_k(rec, relevant, k),
    }


def _fairness(rec: np.ndarray, is_popular: np.ndarray, n_items: int) -> dict:
    counts = exposure_counts(rec, n_items)
    return {"popularity_rate": popularity_rate(rec, is_popular), "gini": gini_fcpo(counts),
            "coverage": item_coverage(rec, n_items)}


@torch.no_grad()
def _run_once(policy, env: MovieLensFairVectorEnv, protocol: str, k: int, steps: int, mode: str, seed: int, device):
    core = env.core
    split = core.split
    rows = np.arange(core.n_users)
    obs, _ = env.reset(seed=seed, options={"users": rows})
    train_items = torch.as_tensor(split.train_items().to_mask(core.n_items, rows), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    if protocol == "ranking":
        exclude = train_items | torch.as_tensor(~env.action_masks(), device=device)
        rec = policy.act(_state(env, obs, device), k, mode=mode, exclude=exclude, generator=generator)
        return rec.cpu().numpy(), None
    slates, per_step_popular = [], []
    for _ in range(steps):  # steps of the rollout; users are batched
        exclude = train_items | torch.as_tensor(~env.action_masks(), device=device)
        items = policy.act(_state(env, obs, device), k, mode=mode, exclude=exclude, generator=generator).cpu().numpy()
        slates.append(items)
        obs, _, _, _, info = env.step(items)
        per_step_popular.append(float(info["cost"].mean() / k))
    return np.concatenate(slates, axis=1), np.array(per_step_popular)


def evaluate(policy, env_config: FairEnvConfig, protocol: str = "rollout", k: int | None = None,
             steps: int | None = None, mode: str = "greedy", seeds: tuple[int, ...] = (0,),
             device: torch.device | str = "cpu", split: str = "test", grouping: str | None = None) -> dict:
    """Evaluate ``policy`` on every user of ``split`` ("test" or "train") and return one report.

    ``k`` is the slate size (default: the env's); ``steps`` the rollout length L
    (default: the env's horizon); cut-offs are reported at every step.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    k = int(k or env_config.slate_size)
    steps = int(steps or env_config.horizon)
    cfg = replace(env_config, mode=split, slate_size=k, horizon=steps, grouping=grouping or env_config.grouping)
    env = MovieLensFairVectorEnv(cover_all_users=True, **asdict(cfg))
    core = env.core
    device = torch.device(device)
    policy = policy.to(device) if hasattr(policy, "to") else policy
    if hasattr(policy, "eval"):
        policy.eval()
    static_popular = popular_mask(core.data.train_counts, cfg.popular_ratio)  # G0 of the report, fixed
    targets = core.split.targets(split)
    relevant = relevance_matrix(targets.indptr, targets.values, core.n_items)
    if mode == "greedy":
        seeds = seeds[:1]
    runs = []
    for seed in seeds:
        rec, per_step = _run_once(policy, env, protocol, k, steps, mode, seed, device)
        if not runs:
            first_rec = rec
        metrics = {}
        if protocol == "ranking":
            metrics.update(_accuracy(rec, relevant, k))
        else:
            for t in range(1, steps + 1):
                metrics.update(_accuracy(rec[:, : t * k], relevant, t * k))
            metrics["popular_share_per_step"] = per_step.tolist()
        metrics.update(_fairness(rec, static_popular, core.n_items))
        runs.append(metrics)
    report = {"protocol": protocol, "split": split, "k": k, "steps": steps if protocol == "rollout" else 1,
              "mode": mode, "seeds": list(seeds), "users": int(core.n_users), "dataset": cfg.dataset,
              "grouping": cfg.grouping, "log_prob_kind": getattr(policy, "log_prob_kind", "")}
    keys = [key for key, v in runs[0].items() if isinstance(v, float)]
    report["metrics"] = {key: float(np.mean([r[key] for r in runs])) for key in keys}
    if len(runs) > 1:
        report["std"] = {key: float(np.std([r[key] for r in runs])) for key in keys}
    report["exposure_counts"] = exposure_counts(first_rec, core.n_items).tolist()  # first seed; Lorenz curves
    if protocol == "rollout":
        report["popular_share_per_step"] = np.mean([r["popular_share_per_step"] for r in runs], axis=0).tolist()
    return report


def format_report(report: dict, keys: list[str] | None = None) -> str:
    """A two-column table of the headline metrics (percentages for accuracy and fairness)."""
    m = report["metrics"]
    k_last = report["k"] * report["steps"]
    keys = keys or [f"precision@{k_last}", f"recall@{k_last}", f"f1@{k_last}", f"ndcg@{k_last}",
                    f"hit_rate@{k_last}", "popularity_rate", "gini", "coverage"]
    lines = [f"{report['dataset']} · {report['split']} · {report['protocol']} protocol · "
             f"K={report['k']} · L={report['steps']} · {report['users']} users",
             f"{'metric':<18}{'value (%)':>12}"]
    for key in keys:
        if key in m:
            std = report.get("std", {}).get(key)
            lines.append(f"{key:<18}{100 * m[key]:>12.3f}" + (f" ± {100 * std:.3f}" if std is not None else ""))
    return "\n".join(lines)
