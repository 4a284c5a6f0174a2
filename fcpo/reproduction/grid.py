"""The reproduction grid: which jobs (method × constraint mode × α' × seed × data set) to run, and
:func:`run_job`, the one top-level function that trains (RL methods, through :func:`fcpo.runs.train_loop`)
and evaluates one grid cell, so that a process pool or Ray can run it.

Two presets (:data:`PRESETS`): ``table``, the FCPO table of the README (Ge et al. 2021, Table 2; jobs
carry no constraint mode, agents use their default), and ``front``, the accuracy–fairness front over
α' ∈ {0.2, 0.4, 0.6, 0.8, 1.0} in both constraint modes (:data:`fcpo.policies.base.CONSTRAINT_MODES`):
``per-slate`` (at most ⌊α'K⌋ G0 items in every slate, enforced in decoding) and ``expected`` (the CMDP
constraint E[Σ_t c_t] ≤ d, eq. 7-9, evaluated as the deployed policy).  At α' = 1 the cap is K and the
limit never binds, so that cell runs once and stands for both modes (``job["modes"]``).

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
CONSTRAINED_METHODS = ("fcpo",) + LAGRANGIAN_ROWS  # RL agents that take a constraint mode (--constraint)
PRESETS = ("table", "front")
FRONT_ALPHAS = (0.2, 0.4, 0.6, 0.8, 1.0)
FRONT_METHODS = ("fcpo", "trpo", "ppo-lagrangian", "wolpertinger", "tpgr", "fair-mf", "mf", "popularity")
UNCONSTRAINED = "none"  # the mode label of TRPO, MF, popularity and random (no constraint at all)
RERANKER_MODE = "per-slate"  # the α'-fair re-ranker caps every slate by construction
FRONT_ITERATIONS = {"fcpo": 40, "trpo": 40, "ppo-lagrangian": 30, "wolpertinger": 20, "tpgr": 16}
FRONT_OVERRIDES = {"fcpo": {"users_per_iteration": 0.5}, "trpo": {"users_per_iteration": 0.5},
                   "ppo-lagrangian": {"users_per_iteration": 0.5},
                   "wolpertinger": {"updates_per_iteration": 32}, "tpgr": {"rollouts_per_user": 2}}
# One-thread CPU seconds per job part on ml-100k at the front preset's settings (FRONT_OVERRIDES), measured
# with time.process_time on a loaded 2-core machine (CPU time ≈ the wall time of an idle core): setup
# (data in a fresh worker, agent), one training iteration, and the 10-step rollout evaluation plus the
# ranking pass.  ESTIMATE_MARGIN covers two workers sharing memory bandwidth and per-slate decoding.
JOB_COST_ML100K = {"fcpo": {"setup": 0.5, "iteration": 0.61, "eval": 0.60},
                   "trpo": {"setup": 0.5, "iteration": 0.61, "eval": 0.59},
                   "ppo-lagrangian": {"setup": 0.5, "iteration": 0.47, "eval": 0.63},
                   "wolpertinger": {"setup": 0.5, "iteration": 0.90, "eval": 3.61},
                   "tpgr": {"setup": 0.5, "iteration": 1.47, "eval": 0.49},
                   "ranker": {"setup": 0.5, "iteration": 0.0, "eval": 1.0}}
ESTIMATE_MARGIN = 1.2
# expected mode's deployed-cost projection (RolloutConfig.calibrate_offset): one estimate rollout on a third of the
# training users per iteration on average, ~0.2 CPU-s on ml-100k (measured by the expected-mode front benchmark)
CALIBRATED_METHODS = ("fcpo", "ppo-lagrangian")
CALIBRATION_ITERATION_COST = 0.2
# the knob an iteration's cost is proportional to, per method (JOB_COST_ML100K holds it at FRONT_OVERRIDES)
COST_KNOBS = {"fcpo": "users_per_iteration", "trpo": "users_per_iteration", "ppo-lagrangian": "users_per_iteration",
              "wolpertinger": "updates_per_iteration", "tpgr": "rollouts_per_user"}
# per-job cost relative to ml-100k (ml-1m measured the same way: an FCPO iteration 10.8x, an evaluation 14x)
DATASET_COST_SCALE = {"ml-100k": 1.0, "ml-1m": 12.0, "synthetic": 0.05}


@dataclass
class GridSpec:
    """What to run; defaults are the full FCPO table on one data set (:meth:`front`: the front preset).

    ``constraint_modes`` empty (the table) leaves ``constraint`` out of every job, so agents keep their
    default; non-empty (the front) runs every constrained method in each mode.  ``method_iterations``
    overrides ``iterations`` per method; ``agent_overrides`` maps a method to agent hyper-parameters.
    """

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
    constraint_modes: tuple[str, ...] = ()  # () = table grid; the front: CONSTRAINT_MODES
    method_iterations: dict = field(default_factory=dict)
    preset: str = "table"

    def __post_init__(self):
        from fcpo.policies.base import check_constraint_mode

        if self.preset not in PRESETS:
            raise ValueError(f"GridSpec: preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for mode in self.constraint_modes:
            check_constraint_mode(mode, "GridSpec.constraint_modes")
        if len(set(self.constraint_modes)) != len(self.constraint_modes):
            raise ValueError(f"GridSpec.constraint_modes: duplicate mode in {self.constraint_modes}")

    @classmethod
    def front(cls, **changes) -> "GridSpec":
        """The accuracy–fairness front: :data:`FRONT_ALPHAS` × both constraint modes × :data:`FRONT_METHODS`,
        3 seeds, per-method budgets :data:`FRONT_ITERATIONS` / :data:`FRONT_OVERRIDES` (sized so that the
        ml-100k front fits 30 minutes on 2 one-thread workers)."""
        from fcpo.policies.base import CONSTRAINT_MODES

        values = {"alphas": FRONT_ALPHAS, "ppo_alphas": FRONT_ALPHAS, "methods": FRONT_METHODS,
                  "constraint_modes": CONSTRAINT_MODES, "method_iterations": dict(FRONT_ITERATIONS),
                  "agent_overrides": {m: dict(o) for m, o in FRONT_OVERRIDES.items()}, "preset": "front"}
        values.update(changes)
        return cls(**values)

    def iterations_of(self, method: str) -> int:
        return int(self.method_iterations.get(method, self.iterations))

    def quick(self) -> "GridSpec":
        """This grid as a pipeline check: one seed, 3 iterations, 4-step rollouts (``fcpo-bench --quick``)."""
        self.seeds, self.iterations, self.horizon, self.eval_steps, self.long_term_steps = self.seeds[:1], 3, 4, 4, 6
        self.method_iterations = {}
        return self

    def jobs(self) -> list[dict]:
        return self._front_jobs() if self.constraint_modes else self._table_jobs()

    def _base(self) -> dict:
        return {"dataset": self.dataset, "data_dir": self.data_dir, "iterations": self.iterations,
                "slate_size": self.slate_size, "horizon": self.horizon, "eval_steps": self.eval_steps,
                "overrides": dict(self.agent_overrides)}

    def _table_jobs(self) -> list[dict]:
        base = self._base()
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
        return [dict(j, iterations=self.iterations_of(j["method"])) for j in jobs]

    def _front_jobs(self) -> list[dict]:
        """Every constrained method at every α' in every mode (α' = 1 once, ``modes`` = all of them),
        TRPO once per seed, the re-ranker per α' (per-slate), MF and popularity once; deterministic
        rankers run on the first seed only.  ``modes`` lists the row labels a job's result stands for."""
        base = self._base()
        modes = tuple(self.constraint_modes)

        def constrained(method, alpha, seed, **extra):
            if alpha >= 1.0:  # cap = K: the limit never binds, one run labelled for every mode
                return [dict(base, method=method, alpha=alpha, seed=seed, constraint=modes[0], modes=modes, **extra)]
            return [dict(base, method=method, alpha=alpha, seed=seed, constraint=m, modes=(m,), **extra)
                    for m in modes]

        jobs = []
        for seed in self.seeds:
            for method in RL_METHODS:
                if method not in self.methods:
                    continue
                if method in CONSTRAINED_METHODS:
                    alphas = self.alphas if method == "fcpo" else self.ppo_alphas
                    for a in alphas:
                        jobs += constrained(method, a, seed)
                else:  # TRPO: unconstrained, once per seed
                    jobs.append(dict(base, method=method, alpha=1.0, seed=seed, constraint=None,
                                     modes=(UNCONSTRAINED,)))
            if self.long_term_alpha is not None and "fcpo" in self.methods:
                jobs += constrained("fcpo", self.long_term_alpha, seed, grouping="dynamic", long_term=True,
                                    eval_steps=self.long_term_steps)
        for name in RANKER_METHODS:
            if name not in self.methods:
                continue
            seeds = self.seeds if name == "random" else self.seeds[:1]
            if name == "fair-mf":
                jobs += [dict(base, method=name, alpha=a, seed=s, constraint=None, modes=(RERANKER_MODE,))
                         for a in self.alphas for s in seeds]
                if self.long_term_alpha is not None:
                    jobs.append(dict(base, method=name, alpha=self.long_term_alpha, seed=seeds[0], constraint=None,
                                     modes=(RERANKER_MODE,), grouping="dynamic", long_term=True,
                                     eval_steps=self.long_term_steps))
            else:
                jobs += [dict(base, method=name, alpha=1.0, seed=s, constraint=None, modes=(UNCONSTRAINED,))
                         for s in seeds]
        return [dict(j, iterations=self.iterations_of(j["method"])) for j in jobs]

    def estimated_seconds(self, workers: int = 2, cost: dict | None = None) -> float:
        """Wall-clock estimate of the grid on ``workers`` one-thread processes on idle cores: the sum
        of per-job costs (:data:`JOB_COST_ML100K` scaled by :data:`DATASET_COST_SCALE`) over the workers,
        times :data:`ESTIMATE_MARGIN`."""
        return ESTIMATE_MARGIN * sum(job_seconds(j, cost) for j in self.jobs()) / max(1, int(workers))


def job_seconds(job: dict, cost: dict | None = None) -> float:
    """Estimated one-thread CPU seconds of one job: setup + iterations × iteration (scaled by the
    method's :data:`COST_KNOBS` value over the calibrated one) + rollout evaluation (scaled by
    eval_steps / 10) on ml-100k, times the data set's :data:`DATASET_COST_SCALE`."""
    cost = cost or JOB_COST_ML100K
    method = job["method"]
    c = cost[method] if method in RL_METHODS else cost["ranker"]
    iterations = job["iterations"] if method in RL_METHODS else 0
    scale = 1.0
    if method in COST_KNOBS:  # the iteration cost scales with the knob, relative to its calibrated value
        knob = COST_KNOBS[method]
        value = job.get("overrides", {}).get(method, {}).get(knob, _config_default(method, knob))
        scale = float(value) / float(FRONT_OVERRIDES[method][knob])
    iteration = c["iteration"] * scale
    if job.get("constraint") == "expected" and method in CALIBRATED_METHODS:
        iteration += CALIBRATION_ITERATION_COST  # the deployed-share estimate (about one rollout of 1/3 of the users)
    seconds = c["setup"] + iterations * iteration + c["eval"] * job["eval_steps"] / 10
    return seconds * DATASET_COST_SCALE.get(job["dataset"], 1.0)


def _config_default(method: str, name: str):
    from dataclasses import MISSING, fields

    from fcpo.runs import agent_config_class

    field_ = next(f for f in fields(agent_config_class(method)) if f.name == name)
    return field_.default if field_.default is not MISSING else field_.default_factory()  # type: ignore[misc]


def job_name(job: dict) -> str:
    """A folder name for one grid cell, e.g. ``fcpo-a0.4-s0``, ``fcpo-a0.4-s0-dynamic`` or, with a
    constraint mode, ``fcpo-per-slate-a0.4-s0``."""
    mode = f"-{job['constraint']}" if job.get("constraint") else ""
    return (f"{job['method']}{mode}-a{job['alpha']:g}-s{job['seed']}" + ("-dynamic" if job.get("long_term") else ""))


def job_config(job: dict):
    """The :class:`fcpo.runs.RunConfig` of one grid cell (rankers use only its ``env``); a job's
    ``constraint`` mode goes into the agent config when the agent's config has that field."""
    from fcpo.runs import DEFAULT_ENV_ID, RunConfig

    env = {"id": DEFAULT_ENV_ID, "dataset": job["dataset"], "data_dir": job["data_dir"],
           "slate_size": job["slate_size"], "horizon": job["horizon"], "grouping": job.get("grouping", "static")}
    overrides = dict(job.get("overrides", {}).get(job["method"], {}))
    agent_config = {"alpha_prime": job["alpha"], **overrides}
    if job.get("constraint") and job["method"] in RL_METHODS and _has_constraint_field(job["method"]):
        agent_config["constraint"] = job["constraint"]
    return RunConfig(agent=job["method"], seed=job["seed"], iterations=job["iterations"], device="cpu",
                     threads=int(os.environ.get("FCPO_JOB_THREADS", "1")), env=env, agent_config=agent_config)


def _has_constraint_field(method: str) -> bool:
    """Whether ``method``'s agent config takes a ``constraint`` mode (agents gain it with issue 11)."""
    from dataclasses import fields

    from fcpo.runs import agent_config_class

    return "constraint" in {f.name for f in fields(agent_config_class(method))}


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
        report = runs.evaluate_policy(policy, config, protocol="rollout", steps=job["eval_steps"], alpha_prime=job["alpha"],
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
