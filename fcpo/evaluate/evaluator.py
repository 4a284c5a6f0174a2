"""One evaluator for every policy: RL agents, rankers, and later DPO or LLM policies.

It runs on any registered slate env, named by an :class:`fcpo.envs.EnvSpec` (the replay env
``fcpo/MovieLensFair-v0`` or the simulator ``fcpo/MovieLensSim-v0``), through the same episode loop
as the agents (:func:`fcpo.agents.rollout.run_slate_episodes`).  Two protocols over the users of a split:

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

import numpy as np
import torch

from fcpo.agents.rollout import run_slate_episodes
from fcpo.envs.contract import EnvSpec
from fcpo.metrics import (exposure_counts, f1_at_k, gini_fcpo, hit_rate_at_k, item_coverage, ndcg_at_k,
                          popularity_rate, precision_at_k, recall_at_k, relevance_matrix)
from fcpo.policies.base import SlateState

PROTOCOLS = ("ranking", "rollout")


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
def _run_once(policy, env, protocol: str, k: int, steps: int, mode: str, seed: int, device):
    """One pass over every user of ``env`` (one sub-env per user): the recommendations [U, K·L] and the
    popular share per step (rollout) or the top-K lists [U, K] (ranking)."""
    rows = np.arange(env.n_users)
    train_items = torch.as_tensor(env.env_data.split.train_items().to_mask(env.n_items, rows), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    if protocol == "ranking":
        obs, _ = env.reset(seed=seed, options={"users": rows})
        user_ids = env.env_data.split.user_ids[env.user_rows]
        exclude = train_items | torch.as_tensor(~env.item_mask(), device=device)
        state = SlateState.from_numpy(obs, env.history, user_ids, device)
        return policy.act(state, k, mode=mode, exclude=exclude, generator=generator).cpu().numpy(), None
    slates, per_step_popular = [], []

    def act(state, exclude, t):
        return policy.act(state, k, mode=mode, exclude=exclude, generator=generator)

    def record(step):
        slates.append(step.slate.cpu().numpy())
        per_step_popular.append(float(step.info["cost"].mean() / k))

    # every user keeps receiving slates for all L steps (cut-offs t·K), even after their episode ended
    run_slate_episodes(env, rows, act, device, steps=steps, seed=seed, extra_exclude=train_items, until_done=False,
                       on_step=record)
    return np.concatenate(slates, axis=1), np.array(per_step_popular)


def evaluate(policy, env: EnvSpec, protocol: str = "rollout", k: int | None = None,
             steps: int | None = None, mode: str = "greedy", seeds: tuple[int, ...] = (0,),
             device: torch.device | str = "cpu", split: str = "test", grouping: str | None = None) -> dict:
    """Evaluate ``policy`` on every user of ``split`` ("test" or "train") of ``env`` and return one report.

    ``env`` is an :class:`fcpo.envs.EnvSpec` (any registered slate env); it is built with
    ``mode=split``, ``slate_size=k``, ``horizon=steps`` and ``grouping`` (``None``: the spec's or the
    env's default).  ``k`` is the slate size; ``steps`` the rollout length L; cut-offs are reported at
    every step.  The popularity metrics use G0 as it stands at the start of an episode (fixed from the
    training counts), whatever the grouping does during the rollout.
    """
    from fcpo.agents.base import as_env_spec

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    spec = as_env_spec(env)
    vec = spec.make_vector(cover_all_users=True, mode=split, slate_size=k, horizon=steps, grouping=grouping)
    k, steps = vec.slate_size, vec.horizon
    device = torch.device(device)
    policy = policy.to(device) if hasattr(policy, "to") else policy
    if hasattr(policy, "eval"):
        policy.eval()
    vec.reset(options={"users": np.arange(vec.n_users)})  # a full reset puts G0 back to the training-count groups
    static_popular = np.asarray(vec.is_popular, dtype=bool).copy()  # G0 of the report, fixed
    targets = vec.env_data.split.targets(split)
    relevant = relevance_matrix(targets.indptr, targets.values, vec.n_items)
    if mode == "greedy":
        seeds = seeds[:1]
    runs = []
    for seed in seeds:
        rec, per_step = _run_once(policy, vec, protocol, k, steps, mode, seed, device)
        if not runs:
            first_rec = rec
        metrics = {}
        if protocol == "ranking":
            metrics.update(_accuracy(rec, relevant, k))
        else:
            for t in range(1, steps + 1):
                metrics.update(_accuracy(rec[:, : t * k], relevant, t * k))
            metrics["popular_share_per_step"] = per_step.tolist()
        metrics.update(_fairness(rec, static_popular, vec.n_items))
        runs.append(metrics)
    report = {"protocol": protocol, "split": split, "k": k, "steps": steps if protocol == "rollout" else 1,
              "mode": mode, "seeds": list(seeds), "users": int(vec.n_users), "env": spec.id,
              "dataset": vec.env_data.data.name, "grouping": grouping or spec.option("grouping", "static"),
              "log_prob_kind": getattr(policy, "log_prob_kind", "")}
    keys = [key for key, v in runs[0].items() if isinstance(v, float)]
    report["metrics"] = {key: float(np.mean([r[key] for r in runs])) for key in keys}
    if len(runs) > 1:
        report["std"] = {key: float(np.std([r[key] for r in runs])) for key in keys}
    report["exposure_counts"] = exposure_counts(first_rec, vec.n_items).tolist()  # first seed; Lorenz curves
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
