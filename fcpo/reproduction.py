"""Reproduction of the FCPO table (Ge et al., WSDM 2021, Table 2) and the long-term fairness check.

A grid of jobs (method × α' × seed × data set) is trained and evaluated by one
top-level function, :func:`run_job`, dispatched through Ray when it is
installed (``ray.init()`` locally, or ``address=`` for an existing cluster) and
through one process per job otherwise.  :func:`aggregate` turns the results
into mean ± std rows, :func:`markdown_table` prints them next to the paper's
ML-1M numbers, and :func:`plot_tradeoff` / :func:`plot_lorenz` /
:func:`plot_long_term` draw the trade-off front, the Lorenz curves of item
exposure and the per-step popular share under dynamic groups.

Evaluation: the rollout protocol (K = 5 items per step, L = 10 steps, test
hits folded into the state), greedy; "@5" is the first slate and "@50" the
whole rollout.  Popular share = share of recommended items from G0 (fixed from
training counts).
"""
from __future__ import annotations

import importlib.util
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

PAPER_ML1M = {  # Ge et al. 2021, Table 2 (ML-1M, K = 5); the protocol is ambiguous, see README
    "fcpo a'=1.0": {"recall": 2.033, "f1": 2.668, "gini": 99.81, "popularity_rate": 99.28},
    "fcpo a'=0.8": {"recall": 1.520, "f1": 2.015, "gini": 99.47, "popularity_rate": 99.28},
    "fcpo a'=0.4": {"recall": 0.998, "f1": 1.449, "gini": 99.47, "popularity_rate": 99.28},
}
RL_METHODS = ("fcpo", "trpo", "ppo-lagrangian", "wolpertinger", "tpgr")
LAGRANGIAN_ROWS = ("ppo-lagrangian", "wolpertinger", "tpgr")  # rows at ppo_alphas
RANKER_METHODS = ("popularity", "mf", "random", "fair-mf")


@dataclass
class GridSpec:
    """What to run; defaults are the full FCPO table on one data set."""

    dataset: str = "ml-100k"
    data_dir: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    alphas: tuple[float, ...] = (1.0, 0.8, 0.4)
    iterations: int = 60
    slate_size: int = 5
    horizon: int = 10
    eval_steps: int = 10
    methods: tuple[str, ...] = ("fcpo", "trpo", "ppo-lagrangian", "popularity", "mf", "random", "fair-mf")
    # add "wolpertinger", "tpgr" for the large-action-space rows (fcpo-bench --methods ...)
    ppo_alphas: tuple[float, ...] = (0.8, 0.4)  # α' of the Lagrangian rows (PPO-Lagrangian, Wolpertinger, TPGR)
    long_term_alpha: float | None = 0.4  # None: skip the long-term (dynamic groups) experiment
    long_term_steps: int = 30
    agent_overrides: dict = field(default_factory=dict)

    def jobs(self) -> list[dict]:
        base = {"dataset": self.dataset, "data_dir": self.data_dir, "iterations": self.iterations,
                "slate_size": self.slate_size, "horizon": self.horizon, "eval_steps": self.eval_steps,
                "overrides": dict(self.agent_overrides)}
        jobs = []
        for seed in self.seeds:
            if "fcpo" in self.methods:
                jobs += [dict(base, method="fcpo", alpha=a, seed=seed) for a in self.alphas]
            if "trpo" in self.methods:
                jobs.append(dict(base, method="trpo", alpha=1.0, seed=seed))
            for method in LAGRANGIAN_ROWS:
                if method in self.methods:
                    jobs += [dict(base, method=method, alpha=a, seed=seed) for a in self.ppo_alphas]
            if self.long_term_alpha is not None and "fcpo" in self.methods:
                jobs.append(dict(base, method="fcpo", alpha=self.long_term_alpha, seed=seed, grouping="dynamic",
                                 long_term=True, eval_steps=self.long_term_steps))
        for name in RANKER_METHODS:
            if name not in self.methods:
                continue
            alphas = self.alphas if name == "fair-mf" else (1.0,)
            seeds = self.seeds if name == "random" else self.seeds[:1]
            jobs += [dict(base, method=name, alpha=a, seed=s) for a in alphas for s in seeds]
            if name == "fair-mf" and self.long_term_alpha is not None:
                jobs.append(dict(base, method=name, alpha=self.long_term_alpha, seed=self.seeds[0],
                                 grouping="dynamic", long_term=True, eval_steps=self.long_term_steps))
        return jobs


def job_name(job: dict) -> str:
    """A folder name for one grid cell, e.g. ``fcpo-a0.4-s0`` or ``fcpo-a0.4-s0-dynamic``."""
    return (f"{job['method']}-a{job['alpha']:g}-s{job['seed']}" + ("-dynamic" if job.get("long_term") else ""))


def job_config(job: dict):
    """The :class:`fcpo.runs.RunConfig` of one grid cell (rankers use only its ``env``)."""
    from fcpo.runs import DEFAULT_ENV_ID, RunConfig

    env = {"id": DEFAULT_ENV_ID, "dataset": job["dataset"], "data_dir": job["data_dir"],
           "slate_size": job["slate_size"], "horizon": job["horizon"], "grouping": job.get("grouping", "static")}
    overrides = dict(job.get("overrides", {}).get(job["method"], {}))
    return RunConfig(agent=job["method"], seed=job["seed"], iterations=job["iterations"], device="cpu",
                     threads=int(os.environ.get("FCPO_JOB_THREADS", "1")), env=env,
                     agent_config={"alpha_prime": job["alpha"], **overrides})


def run_job(job: dict) -> dict:
    """Train (RL methods) and evaluate one grid cell; a top-level function so processes and Ray can run it.

    RL methods train through :func:`fcpo.runs.train_loop` into the run folder ``job["run_dir"]``
    (log, checkpoint, TensorBoard, metrics.json) or, without one, into a temporary folder.
    """
    import tempfile
    from pathlib import Path

    from fcpo import runs
    from fcpo.metrics import lorenz_curve

    config = job_config(job)
    runs.set_threads(config.threads)
    t0 = time.perf_counter()
    history: list[dict] = []
    run_dir = None
    with tempfile.TemporaryDirectory(prefix="fcpo-job-") as scratch:
        if job["method"] in RL_METHODS:
            config = runs.resolve(config)
            agent = runs.build_agent(config, "cpu")
            parent, name = (Path(job["run_dir"]).parent, Path(job["run_dir"]).name) if job.get("run_dir") else \
                (Path(scratch), job_name(job))
            run_dir = runs.create_run(parent, name, config)
            history = runs.train_loop(agent, run_dir, 0, config.iterations, progress=False, desc=job_name(job))
            policy = agent.policy
        else:
            policy = runs.ranker_policy(job["method"], config, job["alpha"], seed=job["seed"])
        train_s = time.perf_counter() - t0
        report = runs.evaluate_policy(policy, config, protocol="rollout", steps=job["eval_steps"],
                                      grouping=config.env["grouping"])
        ranking = runs.evaluate_policy(policy, config, protocol="ranking")  # first-slate exposure: Lorenz curves
        x, y = lorenz_curve(np.asarray(report.pop("exposure_counts")))
        ranking.pop("exposure_counts", None)
        if run_dir is not None and job.get("run_dir"):
            runs.write_json(run_dir / runs.METRICS, {"agent": config.agent, "iterations": config.iterations,
                                                      "train": history[-1] if history else {}, "test": report,
                                                      "ranking": ranking})
    idx = np.linspace(0, len(x) - 1, 101).astype(int)
    return {"job": job, "train_seconds": train_s, "eval": report, "ranking": ranking, "history": history,
            "lorenz": {"x": x[idx].tolist(), "y": y[idx].tolist()}}


def dispatch(jobs: list[dict], workers: int = 2, address: str | None = None, use_ray: bool | None = None,
             progress: bool = True) -> list[dict]:
    """Run ``jobs`` through Ray when available (or asked for), else one process per job."""
    from tqdm import tqdm

    if use_ray is None:
        use_ray = importlib.util.find_spec("ray") is not None
    if use_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                     **({} if address else {"num_cpus": workers}))
        remote = ray.remote(num_cpus=1)(run_job)
        refs = [remote.remote(job) for job in jobs]
        pending = list(refs)
        with tqdm(total=len(refs), desc="grid (ray)", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return ray.get(refs)
    if workers <= 1:
        return [run_job(j) for j in tqdm(jobs, desc="grid", disable=not progress)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, j) for j in jobs]
        out = []
        for f in tqdm(futures, desc="grid (processes)", disable=not progress):
            out.append(f.result())
        return out


def run_grid(spec: GridSpec, jobs_dir=None, **dispatch_options) -> list[dict]:
    """Every job of ``spec`` through :func:`dispatch`; trained jobs keep run folders under ``jobs_dir`` if given."""
    from pathlib import Path

    jobs = spec.jobs()
    if jobs_dir is not None:
        for job in jobs:
            job["run_dir"] = str((Path(jobs_dir) / job_name(job)).resolve())
    return dispatch(jobs, **dispatch_options)


def write_report(spec: GridSpec, results: list[dict], out) -> tuple[dict, str]:
    """``<dataset>.json`` (rows, long-term rows, checks, environment, raw results), ``<dataset>.md`` and
    the three plots into ``out``; returns the JSON payload and the Markdown text."""
    from pathlib import Path

    from fcpo.runs import atomic_write, environment_info, write_json

    out = Path(out)
    label_ = "ml-1m (reconstructed)" if spec.dataset == "ml-1m" else spec.dataset
    rows = aggregate(results, spec.slate_size, spec.eval_steps)
    long_rows = long_term_rows(results)
    checks_ = checks(rows)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, label_, spec.eval_steps, spec.slate_size)
    lt = "\n".join(f"- {r['method']}: max popular share {100 * r['max_share']:.1f} %, mean {100 * r['mean_share']:.1f} %, "
                   f"{r['steps_above_alpha']}/{r['steps']} steps above α'={r['alpha']:g}" for r in long_rows)
    ck = "\n".join(f"- [{'x' if c['holds'] else ' '}] {c['check']}: {c['value']:.2f} vs {c['bound']:.2f}"
                   for c in checks_)
    text = table + ("\n\nLong-term fairness (dynamic groups):\n" + lt if lt else "") + \
        ("\n\nChecks:\n" + ck if ck else "")
    payload = {"spec": dict(spec.__dict__), "dataset_label": label_, "rows": rows, "long_term": long_rows,
               "checks": checks_, "environment": environment_info(), "results": results, "out": str(out)}
    write_json(out / f"{spec.dataset}.json", payload)
    atomic_write(out / f"{spec.dataset}.md", text + "\n")
    plot_tradeoff(rows, str(out / f"{spec.dataset}_tradeoff.png"), f"accuracy vs popular share · {label_}")
    plot_lorenz(results, str(out / f"{spec.dataset}_lorenz.png"), f"item exposure · {label_}")
    plot_long_term(long_rows, str(out / f"{spec.dataset}_long_term.png"), f"long-term popular share · {label_}")
    return payload, text


def label(job: dict) -> str:
    if job["method"] in ("fcpo", "fair-mf") + LAGRANGIAN_ROWS:
        return f"{job['method']} a'={job['alpha']:g}" + (" (dynamic)" if job.get("long_term") else "")
    return job["method"] + (" (dynamic)" if job.get("long_term") else "")


def aggregate(results: list[dict], k: int = 5, steps: int = 10) -> list[dict]:
    """Mean ± std over seeds per method row (percentages)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        if r["job"].get("long_term"):
            continue
        groups.setdefault(label(r["job"]), []).append(r)
    rows = []
    last = k * steps
    keys = {"recall@5": f"recall@{k}", "f1@5": f"f1@{k}", "ndcg@5": f"ndcg@{k}",
            f"recall@{last}": f"recall@{last}", f"f1@{last}": f"f1@{last}", f"ndcg@{last}": f"ndcg@{last}",
            "popularity_rate": "popularity_rate", "gini": "gini", "coverage": "coverage"}
    for name, rs in groups.items():
        row = {"method": name, "seeds": len(rs), "alpha": rs[0]["job"]["alpha"],
               "train_seconds": float(np.mean([r["train_seconds"] for r in rs]))}
        for out_key, key in keys.items():
            vals = [100 * r["eval"]["metrics"][key] for r in rs]
            row[out_key] = float(np.mean(vals))
            row[out_key + "_std"] = float(np.std(vals))
        rows.append(row)
    return rows


def long_term_rows(results: list[dict]) -> list[dict]:
    rows = []
    groups: dict[str, list[dict]] = {}
    for r in results:
        if r["job"].get("long_term"):
            groups.setdefault(label(r["job"]), []).append(r)
    for name, rs in groups.items():
        shares = np.array([r["eval"]["popular_share_per_step"] for r in rs])
        alpha = rs[0]["job"]["alpha"]
        mean = shares.mean(axis=0)
        rows.append({"method": name, "alpha": alpha, "seeds": len(rs), "per_step": mean.tolist(),
                     "max_share": float(mean.max()), "mean_share": float(mean.mean()),
                     "steps_above_alpha": int((mean > alpha + 1e-9).sum()), "steps": len(mean)})
    return rows


def checks(rows: list[dict], tolerance: float = 5.0) -> list[dict]:
    """The issue's 'what must hold' statements, evaluated (percent units; tolerance in points)."""
    by = {r["method"]: r for r in rows}
    out = []
    for r in rows:
        if r["method"].startswith("fcpo a'="):
            a = 100 * r["alpha"]
            out.append({"check": f"{r['method']}: popular share <= α' + {tolerance:g} pts",
                        "value": r["popularity_rate"], "bound": a + tolerance,
                        "holds": r["popularity_rate"] <= a + tolerance})
            fair = by.get(f"fair-mf a'={r['alpha']:g}")
            if fair is not None and r["alpha"] < 1.0:
                out.append({"check": f"{r['method']} F1@5 > fair-mf a'={r['alpha']:g} F1@5",
                            "value": r["f1@5"], "bound": fair["f1@5"], "holds": r["f1@5"] > fair["f1@5"]})
    if "fcpo a'=1" in by and "popularity" in by:
        out.append({"check": "fcpo a'=1 F1@5 >= popularity F1@5", "value": by["fcpo a'=1"]["f1@5"],
                    "bound": by["popularity"]["f1@5"], "holds": by["fcpo a'=1"]["f1@5"] >= by["popularity"]["f1@5"]})
    return out


def markdown_table(rows: list[dict], dataset_label: str, steps: int = 10, k: int = 5) -> str:
    last = k * steps
    cols = ["recall@5", "f1@5", "ndcg@5", f"recall@{last}", f"f1@{last}", "popularity_rate", "gini", "coverage"]
    head = "| method | " + " | ".join(c.replace("popularity_rate", "popular share") for c in cols) + " | train s |"
    lines = [f"**{dataset_label}** (test users, rollout protocol K={k}, L={steps}; % mean ± std over seeds)", "",
             head, "|" + "---|" * (len(cols) + 2)]
    order = {m: i for i, m in enumerate(("fcpo", "trpo", "ppo-lagrangian", "wolpertinger", "tpgr", "fair-mf", "mf",
                                         "popularity", "random"))}
    rows = sorted(rows, key=lambda r: (order.get(r["method"].split(" ")[0], 9), -r["alpha"]))
    for r in rows:
        cells = [f"{r[c]:.2f} ± {r[c + '_std']:.2f}" if r["seeds"] > 1 else f"{r[c]:.2f}" for c in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} |")
    lines += ["", "Paper (ML-1M, Ge et al. 2021 Table 2): " + "; ".join(
        f"{m}: Recall {v['recall']}, F1 {v['f1']}, Gini {v['gini']}, popularity rate {v['popularity_rate']}"
        for m, v in PAPER_ML1M.items())]
    return "\n".join(lines)


def _savefig(fig, path):
    from fcpo.runs import save_figure

    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_tradeoff(rows: list[dict], path: str, title: str) -> None:
    """Accuracy (F1@5) against popular share, one marker per method row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    style = {"fcpo": ("o", "tab:red"), "trpo": ("s", "tab:purple"), "ppo-lagrangian": ("^", "tab:orange"),
             "wolpertinger": ("p", "tab:brown"), "tpgr": ("h", "tab:pink"),
             "fair-mf": ("D", "tab:blue"), "mf": ("P", "tab:cyan"), "popularity": ("X", "tab:gray"),
             "random": ("v", "tab:olive")}
    seen = set()
    for r in rows:
        family = r["method"].split(" ")[0]
        marker, color = style.get(family, ("o", "k"))
        ax.errorbar(r["popularity_rate"], r["f1@5"], xerr=r["popularity_rate_std"], yerr=r["f1@5_std"],
                    marker=marker, color=color, linestyle="none", capsize=2, markersize=7,
                    label=None if family in seen else family)
        seen.add(family)
        if "a'=" in r["method"]:
            ax.annotate(r["method"].split(" ")[1], (r["popularity_rate"], r["f1@5"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=7, color=color)
    ax.set(xlabel="popular share of recommendations (%)", ylabel="F1@5 (%)", title=title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    _savefig(fig, path)
    plt.close(fig)


def plot_lorenz(results: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    seen = set()
    for r in results:
        name = label(r["job"])
        if r["job"].get("long_term") or name in seen:
            continue
        seen.add(name)
        ax.plot(r["lorenz"]["x"], r["lorenz"]["y"], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="cumulative share of items", ylabel="cumulative share of exposure", title=title)
    ax.legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)


def plot_long_term(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        ax.plot(range(1, len(r["per_step"]) + 1), r["per_step"], marker=".", label=r["method"])
    ax.axhline(rows[0]["alpha"], color="k", ls="--", lw=1, label="α'")
    ax.set(xlabel="rollout step", ylabel="popular share (dynamic G0)", title=title, ylim=(0, 1))
    ax.legend(fontsize=8)
    _savefig(fig, path)
    plt.close(fig)
