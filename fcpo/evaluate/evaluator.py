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

List metrics: every metric of the registry (:func:`fcpo.metrics.register_metric`), computed on the
whole recommended list of every user; built in: ``popularity_rate`` (share of G0 items, G0 fixed from
training counts), Gini of item exposure over the whole catalogue (FCPO eq. 23), item coverage.

Which policy is evaluated: the DEPLOYED one.  ``mode=None`` (default) takes the policy's
``deploy_mode`` ("greedy" if it has none): a per-slate-constrained agent deploys its greedy capped
actor, an expected-mode agent the stochastic policy it was trained as, evaluated sampled and
averaged over ``seeds`` (default (0, 1, 2) when sampling, (0,) when greedy; mean ± std).

The constraint's view (rollout protocol): the number of G0 items (under the groups in force at each
step, ``info["cost"]``) of every user's slate at every step, [U, L] with the episodes' ``alive`` mask,
summarised by :func:`fcpo.evaluate.constraint.constraint_report` into ``report["constraint"]``: mean
popular share, per-step profile, maximum per-step share, fraction of slates above the cap ⌊α'K⌋,
the cap and ``per_slate_ok``.  α' is ``alpha_prime=`` or the policy's own ``alpha_prime``; without
one the cap-based fields are left out.  A policy that can take groups (``set_groups``: the capped slate
actor, TPGR's tree, Wolpertinger) gets the env's groups before every step, as in training.
"""
from __future__ import annotations

import numpy as np
import torch

from fcpo.agents.rollout import run_slate_episodes
from fcpo.envs.contract import EnvSpec
from fcpo.evaluate.constraint import constraint_report
from fcpo.metrics import (ListContext, accuracy_by_cutoff, exposure_counts, f1_at_k, hit_rate_at_k, list_metrics,
                          ndcg_at_k, precision_at_k, recall_at_k, relevance_matrix)
from fcpo.policies.base import SlateState

PROTOCOLS = ("ranking", "rollout")
#: evaluation seeds when the deployed policy is sampled and no seeds are given
SAMPLE_SEEDS = (0, 1, 2)
#: constraint_report fields that need α' (left out when the policy's α' is unknown)
CAP_FIELDS = ("fraction_above_cap", "cap", "alpha_prime", "per_slate_ok")


def _accuracy(rec: np.ndarray, relevant: np.ndarray, k: int) -> dict:
    return {
        f"precision@{k}": precision_at_k(rec, relevant, k), f"recall@{k}": recall_at_k(rec, relevant, k),
        f"f1@{k}": f1_at_k(rec, relevant, k), f"ndcg@{k}": ndcg_at_k(rec, relevant, k),
        f"hit_rate@{k}": hit_rate_at_k(rec, relevant, k),
    }


def _sync_groups(policy, env, last: np.ndarray | None = None) -> np.ndarray | None:
    """Give a capped policy the env's G0 in force now (dynamic groupings change it every step); returns the
    groups given.  ``last``: the groups given at the previous step (unchanged groups are not copied again)."""
    if not hasattr(policy, "set_groups"):  # every capped policy (slate actor, tree, Wolpertinger) follows them
        return None
    groups = np.asarray(env.is_popular, dtype=bool)
    if last is not None and np.array_equal(groups, last):
        return last
    policy.set_groups(groups)
    return groups.copy()


@torch.no_grad()
def _run_once(policy, env, protocol: str, k: int, steps: int, mode: str, seed: int, device):
    """One pass over every user of ``env`` (one sub-env per user): the recommendations [U, K·L], the
    G0 count of every slate [U, L] and the episodes' alive mask [U, L] (rollout), or the top-K lists
    [U, K] (ranking)."""
    rows = np.arange(env.n_users)
    train_items = torch.as_tensor(env.env_data.split.train_items().to_mask(env.n_items, rows), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    if protocol == "ranking":
        obs, _ = env.reset(seed=seed, options={"users": rows})
        _sync_groups(policy, env)
        user_ids = env.env_data.split.user_ids[env.user_rows]
        exclude = train_items | torch.as_tensor(~env.item_mask(), device=device)
        state = SlateState.from_numpy(obs, env.history, user_ids, device)
        return policy.act(state, k, mode=mode, exclude=exclude, generator=generator).cpu().numpy(), None, None
    slates, counts, alive = [], [], []
    given = [None]  # the groups the policy holds

    def act(state, exclude, t):
        given[0] = _sync_groups(policy, env, given[0])
        return policy.act(state, k, mode=mode, exclude=exclude, generator=generator)

    def record(step):
        slates.append(step.slate.cpu().numpy())
        counts.append(np.asarray(step.info["cost"]))
        alive.append(np.asarray(step.alive, dtype=bool))

    # every user keeps receiving slates for all L steps (cut-offs t·K), even after their episode ended
    run_slate_episodes(env, rows, act, device, steps=steps, seed=seed, extra_exclude=train_items, until_done=False,
                       on_step=record)
    return np.concatenate(slates, axis=1), np.stack(counts, axis=1), np.stack(alive, axis=1)


def evaluate(policy, env: EnvSpec, protocol: str = "rollout", k: int | None = None,
             steps: int | None = None, mode: str | None = None, seeds: tuple[int, ...] | None = None,
             device: torch.device | str = "cpu", split: str = "test", grouping: str | None = None,
             alpha_prime: float | None = None) -> dict:
    """Evaluate ``policy`` on every user of ``split`` ("test" or "train") of ``env`` and return one report.

    ``env`` is an :class:`fcpo.envs.EnvSpec` (any registered slate env); it is built with
    ``mode=split``, ``slate_size=k``, ``horizon=steps`` and ``grouping`` (``None``: the spec's or the
    env's default).  ``k`` is the slate size; ``steps`` the rollout length L; cut-offs are reported at
    every step.  ``mode`` None: the policy's ``deploy_mode`` (else "greedy"); ``seeds`` None: (0,)
    greedy, :data:`SAMPLE_SEEDS` sampled.  ``alpha_prime`` None: the policy's ``alpha_prime`` if it has
    one.  The popularity metrics use G0 as it stands at the start of an episode (fixed from the
    training counts); ``report["constraint"]`` uses the groups in force at each step.
    """
    from fcpo.agents.base import as_env_spec

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if mode is None:
        mode = getattr(policy, "deploy_mode", "greedy")
    if mode not in ("greedy", "sample"):
        raise ValueError(f"mode must be 'greedy' or 'sample' (or None: the policy's deploy_mode), got {mode!r}")
    if seeds is None:
        seeds = (0,) if mode == "greedy" else SAMPLE_SEEDS
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    if alpha_prime is None:
        alpha_prime = getattr(policy, "alpha_prime", None)
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
    runs, constraint_runs = [], []
    for seed in seeds:
        rec, counts, alive = _run_once(policy, vec, protocol, k, steps, mode, seed, device)
        if not runs:
            first_rec = rec
        metrics = {}
        if protocol == "ranking":
            metrics.update(_accuracy(rec, relevant, k))
        else:
            metrics.update(accuracy_by_cutoff(rec, relevant, k, steps))
            metrics["popular_share_per_step"] = (counts.mean(axis=0) / k).tolist()
            constraint_runs.append(constraint_report(counts, k, 1.0 if alpha_prime is None else alpha_prime, alive))
        metrics.update(list_metrics(rec, ListContext(static_popular, vec.n_items)))  # the registry's list metrics
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
        report["constraint"] = _merge_constraint(constraint_runs, alpha_prime is not None)
    return report


def _merge_constraint(runs: list[dict], with_cap: bool) -> dict:
    """One constraint view over the seeds: shares averaged, worst case (maxima, any violation) kept."""
    out = {"popular_share": float(np.mean([r["popular_share"] for r in runs])),
           "popular_share_per_step": np.nanmean([r["popular_share_per_step"] for r in runs], axis=0).tolist(),
           "max_step_share": float(max(r["max_step_share"] for r in runs)),
           "max_slate_popular": int(max(r["max_slate_popular"] for r in runs)),
           "k": runs[0]["k"], "slates": int(runs[0]["slates"])}
    if with_cap:
        out.update(fraction_above_cap=float(np.mean([r["fraction_above_cap"] for r in runs])),
                   cap=runs[0]["cap"], alpha_prime=runs[0]["alpha_prime"],
                   per_slate_ok=bool(all(r["per_slate_ok"] for r in runs)))
    return out


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
    lines.extend(format_constraint(report))
    return "\n".join(lines)


def format_constraint(report: dict) -> list[str]:
    """The constraint lines of a rollout report (none for the ranking protocol)."""
    c = report.get("constraint")
    if not c:
        return []
    lines = [f"constraint ({report.get('mode', 'greedy')} policy): mean popular share {100 * c['popular_share']:.2f} %, "
             f"max per-step share {100 * c['max_step_share']:.2f} %",
             "popular share per step (%): " + " ".join(f"{100 * x:.1f}" for x in c["popular_share_per_step"])]
    if "cap" in c:
        lines.append(f"per-slate cap {c['cap']} of K={c['k']} (α'={c['alpha_prime']:g}): "
                     f"{100 * c['fraction_above_cap']:.2f} % of slates above it, "
                     f"per_slate_ok={c['per_slate_ok']}")
    return lines
