"""The reproduction grid: which jobs (method × α' × seed × data set) to run, and :func:`run_job`, the
one top-level function that trains (RL methods, through :func:`fcpo.runs.train_loop`) and evaluates one
grid cell, so that a process pool or Ray can run it.

Evaluation: the rollout protocol (K = 5 items per step, L = 10 steps, test hits folded into the
state); "@5" is the first slate and "@50" the whole rollout.  Popular share = share of recommended
items from G0 (fixed from training counts).
"""
from __future__ import annotations

import os
import time
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
