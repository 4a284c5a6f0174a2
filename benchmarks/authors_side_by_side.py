"""Side by side with the FCPO authors' published code on ml-100k (issue 17): speed ratios theirs / ours.

Measured, one torch thread on each side, in alternating pairs (ours, theirs, ours, theirs, ...):

* ``iteration`` -- one training iteration.  Ours: what ``fcpo-train --dataset ml-100k --alpha 0.4`` does
  per iteration (the agent is built as ``benchmarks/time_to_target.py`` builds it, then
  ``agent.train_iteration(it)`` after ``--warmup`` iterations).  Theirs: one episode of their own loop,
  ``cpo.CPO.train``, driven by their ``simulators.SinglePathSimulator`` over their
  ``fair_env.Environment`` with the hyper-parameters of their notebook ``README_CPO-ml-100k.ipynb``
  (all 943 users, 10 steps, one item per step, max_kl 1e-4, ...).  ``CPO.train`` runs once for
  ``warmup + repeats`` episodes, so the later episodes fit the critics on the current and the previous
  batch as their loop does; each timed episode is the span between two of their ``print_update`` calls.
  ``--our-shapes`` times ours in fcpo-train's default shape (K = 5 items per step, the per-slate cap:
  case ``iteration/<policy>``) and/or in the shape of their work (``--slate-size 1 --constraint expected``:
  one item per step, the popular-item cost constrained in expectation as their CPO does; case
  ``iteration/<policy>/ours-authors``).
* ``env`` -- ``--env-steps`` steps of the env over all users with random items, slate size K from
  ``--env-slate-sizes``.  Ours: ``MovieLensFairVectorEnv`` built as ``benchmarks/env_throughput.py``
  builds it.  Theirs: ``fair_env.Environment.step`` (the env their notebook trains and tests on).
* ``eval`` -- the test evaluation at K = 1, L = 200 (one item per step, 200 steps per test user).
  Ours: ``benchmarks/eval_speed.py``'s ml-100k case (its ``time_evaluation``, imported).  Theirs: their
  notebook's test cell (cell 6) and the metric part of cell 8 (``test_ranking.get_test_results``) -- a
  notebook cell is no callable entry point, so this script has its own driving code making the same
  calls on their classes in the same order (test env construction, 200 steps of policy mean, scores
  against every item, argmax over unseen items, ``Environment.step``, the per-step Gini and popular
  rate, then the ranking metrics); loading the CSV and ``.npy`` files is outside the timing on both
  sides (ours reads its cache).  Both sides evaluate an untrained policy (the cost does not depend on
  the weights; the notebook loads a trained pickle that is not published).

The authors' policy comes in two forms (``--authors-policy``): ``mlp`` -- ``models.build_diag_gauss_policy``
over the flattened 5-item state (500 -> 64 -> 100) and ``models.build_mlp`` critics, the pipeline their
published ``simulators.py`` and ``cpo.py`` run unchanged and the architecture of the one model they
ship (``fcpo/model/tempmodel_ml-1m.pkl``: a Sequential, 500 inputs, 64 hidden); ``gru`` -- their notebook's
``models.Actor`` / ``models.Critic`` (a GRU over the history), reached through thin shims.
The notebook's own Actor/Critic took a user input as well; that version is not published.

What had to be adapted (their files are untouched; nothing was needed for Python 3.11 / torch 2 / numpy 2):

* training: the notebook's ``line_search_max_step_len=1`` is dropped (the published ``CPO.__init__`` has no
  such parameter) and ``CPO.train(n)`` gets one argument (not the notebook's ``(n, modelPath)``); the
  published ``SinglePathSimulator`` replaces the notebook's cell-2 simulator, which needs an unpublished
  two-argument Actor, a 5-value ``Environment.step`` and ``Trajectory.users``; ``gru`` only: the Actor is
  wrapped to reshape the flat observations back to [B, 5, 100] and the Critic to split cpo.py's
  state-with-time into its two arguments;
* evaluation: the notebook's cell is driving code here; ``model(states, users)`` goes through a wrapper
  that ignores the users; the published ``Environment.step`` returns 4 values where the notebook unpacks
  5; an untrained policy replaces the unpublished trained pickle;
* env: nothing.

Every adaptation is listed in the output (``adaptations``) with its reason and printed, as is what
differs in the work of the two sides (``unequal_work``).  Their folder is put on ``sys.path`` of a
separate worker process: each side runs in its own process, with ``OMP_NUM_THREADS=1`` and
``torch.set_num_threads(1)``, so their module names and globals never meet ours.  Per measure the
output holds both sides' wall and process-CPU seconds per repeat, their medians, the ratios theirs/ours
(CPU and wall, of the medians, and per pair) and the work each side does per unit, plus the machine's
thread count and load average (``_common.write_json``).

Getting their code (GPL: never copy it into this repository)::

    git clone https://github.com/TobyGE/FCPO /tmp/authors-fcpo

Command::

    python benchmarks/authors_side_by_side.py --authors-dir /tmp/authors-fcpo --dataset ml-100k \\
        [--repeats 3] [--warmup 2] [--measures iteration env eval] [--authors-policy mlp gru] \\
        [--our-shapes default authors] \\
        [--env-slate-sizes 1 10] [--env-steps 50] [--out results/benchmarks/authors_side_by_side.json]

(about 2.5 minutes with ``--repeats 2`` on a quiet 2-core machine; the ``gru`` iteration dominates).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, RESULTS, default_data_dir, machine_info, write_json  # noqa: E402

CLONE_COMMAND = "git clone https://github.com/TobyGE/FCPO"
#: the files of their repository this harness imports or reads (relative to --authors-dir)
AUTHORS_CODE = ("fcpo/cpo.py", "fcpo/fair_env.py", "fcpo/simulators.py", "fcpo/models.py", "fcpo/memory.py",
                "fcpo/data_util.py", "fcpo/gini.py", "fcpo/test_ranking.py")
AUTHORS_DATA = ("train_data.csv", "test_data.csv", "pmf_item_embed.npy", "pmf_user_embed.npy",
                "item_cost_indicator_28.npy")
MEASURES = ("iteration", "env", "eval")
POLICIES = ("mlp", "gru")
#: our agent's shape in the iteration measure: fcpo-train's flags on top of ``--dataset ml-100k --alpha 0.4``
OUR_SHAPES = {
    "default": [],  # fcpo-train's defaults: K = 5, the per-slate cap
    "authors": ["--slate-size", "1", "--constraint", "expected"],  # their work's shape: one item per step,
    # the popular-item cost constrained in expectation (their CPO's constraint)
}
SIDES = ("ours", "theirs")

#: their notebook's settings (README_CPO-ml-100k.ipynb, cells 1, 4 and 6)
NOTEBOOK = {"history_length": 5, "ra_length": 1, "hidden_dims": [64], "trajectory_len": 10, "gamma": 0.95,
            "frac": 1, "test_trajectory_len": 200,
            "cpo": {"model_name": "cpo", "max_kl": 1e-4, "max_val_step": 5e-2, "max_cost_step": 5e-2,
                    "max_constraint_val": 10, "val_l2_reg": 1e-3, "cost_l2_reg": 1e-3, "discount_val": 0.99,
                    "discount_cost": 0.99, "line_search_coef": 0.9, "line_search_max_iter": 20,
                    "line_search_accept_ratio": 1e-2, "continue_from_file": False}}

ADAPTATIONS = {
    "common": [
        "run on CPU with torch.set_num_threads(1) and OMP_NUM_THREADS=1 (the notebook used cuda:3)",
        "their folder fcpo/ is put first on sys.path of a separate worker process; the worker's cwd is a "
        "temporary folder, so CPO.save_session (every 5 episodes, save-dir/cpo.pt) writes there",
        "seeds: numpy.random.seed and torch.manual_seed set once in their worker (the notebook sets none)",
    ],
    "iteration": [
        "CPO(...) is called without the notebook's line_search_max_step_len=1: the published CPO.__init__ has "
        "no such parameter (TypeError); its update_policy starts the line search at step 1.0 anyway",
        "CPO.train(n) is called with one argument: the notebook's cpo.train(n_episodes, modelPath) does not match "
        "the published CPO.train(self, n_episodes)",
        "the published simulators.SinglePathSimulator drives the rollout (it matches the published fair_env step's "
        "4 return values and cpo.py's flat observations); the notebook's cell-2 simulator needs an unpublished "
        "Actor(states, users), a 5-value Environment.step and Trajectory.users, and explores epsilon-greedily "
        "(a random item on 10-20 % of the steps, skipping the policy there)",
        "one timed iteration = the span between two consecutive print_update calls of one CPO.train run "
        "(instance attribute wrapping print_update; their loop itself is untouched)",
    ],
    "iteration/gru": [
        "models.Actor(5, 1, 100, [64], 100) is wrapped to reshape the flat [B, 500] observations "
        "simulators.py feeds it back to [B, 5, 100]; its MLP sees the GRU output only (100 inputs; the "
        "notebook's unpublished Actor also took the user: user + 2 x item = 300 inputs)",
        "models.Critic(5, 1, 101, [64], 1) is wrapped to split cpo.py's [N, 501] state-with-time into the GRU "
        "input [N, 5, 100] and the time column (the published Critic.forward(x, y) needs two arguments; "
        "cpo.py calls value_fun(states_w_time) with one)",
    ],
    "eval": [
        "the notebook's test cell (cell 6) and the metric part of cell 8 are re-written as driving code in this "
        "script calling their classes and functions in the same order (plots and np.save left out)",
        "model(states, users): the policy is wrapped to accept and ignore the user argument (no published "
        "policy takes one); the mlp policy gets the state flattened to [B, 500] as simulators.py flattens it",
        "the published fair_env.Environment.step returns 4 values (states, rewards, costs, info); the notebook "
        "unpacks 5 (with users_prime): the driving code unpacks 4 and keeps the users from reset",
        "an untrained policy (seeded) instead of the notebook's trained pickle "
        "model/ml-100k/tempmodel_ml-100k_1.0413574.pkl, which is not published",
    ],
    "env": [
        "no adaptation: fair_env.Environment(**notebook env args).step(actions, item_idxes) on random items; "
        "reset() before each timed block is outside the timing",
    ],
}

#: what differs in the work the two sides do (the numbers are in each row's ``work``)
UNEQUAL = {
    "common": [
        "their notebook ran on a GPU (cuda:3); here both sides run on the CPU with one thread",
        "users: ours 932 (our split of ml-100k), theirs 943 (their preprocessed train/test CSVs)",
    ],
    "iteration": [
        "slate size: ours K = 5 items per user-step (fcpo-train's default), theirs K = 1",
        "Fisher products: ours on a 20 % subsample of the states (fvp_subsample 0.2), damping 0.1; theirs on the "
        "full batch, undamped (CPO's cg_damping is never passed to get_Hvp_fun)",
        "CG: both at most 10 iterations per solve; theirs always solves for g and b (20 products), ours skips "
        "the cost solve when the constraint is inactive and solves jointly otherwise",
        "critics: ours Adam, 2 epochs of 2048-sample minibatches on the current batch; theirs LBFGS "
        "(max_iter 25) on the current and the previous batch",
        "line search: theirs at most 10 trials (the notebook's line_search_max_iter=20 is never used by "
        "update_policy), ours at most 10 backtracks",
        "policies differ in form and size (actor_parameters in work): theirs mlp is the form of their shipped "
        "model, gru the notebook's Actor without its (unpublished) user input",
    ],
    "iteration/ours-authors": [
        "ours at the authors' shape (case iteration/<policy>/ours-authors): K = 1 and the expected constraint "
        "(mean G0 share <= alpha', active here: both systems are solved, as theirs always does); ours still "
        "projects the deployed policy onto the constraint after each update (calibrate_offset: one sampled "
        "rollout of a third of the users, up to a few per update), work theirs does not do; Fisher subsample, critics and line search as above",
    ],
    "env": [
        "ours returns the Gymnasium observation, reward, cost and info of every user; theirs the state array, "
        "discounted hits, popular-item costs and hits (it updates the state only for users with a hit)",
    ],
    "eval": [
        "metrics: ours precision/recall/F1/NDCG/HR at every cut-off and exposure; theirs recall/HR/precision/NDCG "
        "at every cut-off plus a Gini coefficient and popular rate per step",
        "ours ranks with the mean of its K = 5 actor rows (one product with the item matrix), theirs with its "
        "single mean action (one product); both mask items already shown",
        "ours builds its test env from the cache inside the timing; theirs builds fair_env.Environment inside "
        "the timing (CSV and .npy reading outside)",
    ],
}

INSTRUMENTATION = [
    "theirs: cpo.get_Hvp_fun and cpo.line_search are wrapped (in their cpo module's namespace) to count "
    "Hessian-vector products and record the accepted step; behaviour unchanged",
    "ours: fcpo.agents.cpo.fisher_vector_product is wrapped to count Fisher-vector products; behaviour unchanged",
]


class AuthorsDirError(ValueError):
    """--authors-dir is missing or does not hold the authors' repository."""


# ------------------------------------------------------------------ arguments and arithmetic
def check_authors_dir(path, dataset: str = "ml-100k") -> Path:
    """The root of a clone of the authors' repository, or :class:`AuthorsDirError` saying what is wrong."""
    if path is None or str(path) == "":
        raise AuthorsDirError(f"--authors-dir is required: get the authors' code with `{CLONE_COMMAND}` "
                              "and pass the clone's folder")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise AuthorsDirError(f"--authors-dir {root}: no such folder; get the authors' code with "
                              f"`{CLONE_COMMAND}` and pass the clone's folder")
    wanted = list(AUTHORS_CODE) + [f"data/{dataset}/{name}" for name in AUTHORS_DATA]
    missing = [rel for rel in wanted if not (root / rel).is_file()]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise AuthorsDirError(f"--authors-dir {root} does not look like the FCPO authors' repository "
                              f"(missing {shown}); get it with `{CLONE_COMMAND}` and pass the clone's folder")
    return root


def alternating_schedule(repeats: int, sides=SIDES) -> list[tuple[str, int]]:
    """The run order: ``[(sides[0], 0), (sides[1], 0), (sides[0], 1), ...]``, ``repeats`` pairs."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return [(side, r) for r in range(repeats) for side in sides]


def ratio(theirs: float, ours: float) -> float:
    """theirs / ours (how many times faster ours is); nan when ours is not positive."""
    return theirs / ours if ours > 0 else float("nan")


def summarise(runs: list[dict]) -> dict:
    """Per-repeat wall and CPU seconds of one side, their medians, and the work of the first run."""
    wall = [float(r["wall_s"]) for r in runs]
    cpu = [float(r["cpu_s"]) for r in runs]
    return {"wall_s": wall, "cpu_s": cpu, "median_wall_s": statistics.median(wall),
            "median_cpu_s": statistics.median(cpu), "work": runs[0].get("work", {}),
            "per_repeat": [r.get("info", {}) for r in runs]}


def compare(ours_runs: list[dict], theirs_runs: list[dict]) -> dict:
    """Both sides summarised, the ratios of their medians and the per-pair ratios (theirs / ours)."""
    if len(ours_runs) != len(theirs_runs) or not ours_runs:
        raise ValueError(f"need as many runs of each side (>= 1), got {len(ours_runs)} and {len(theirs_runs)}")
    ours, theirs = summarise(ours_runs), summarise(theirs_runs)
    return {"ours": ours, "theirs": theirs,
            "ratio_cpu": ratio(theirs["median_cpu_s"], ours["median_cpu_s"]),
            "ratio_wall": ratio(theirs["median_wall_s"], ours["median_wall_s"]),
            "pair_ratio_cpu": [ratio(t, o) for t, o in zip(theirs["cpu_s"], ours["cpu_s"])],
            "pair_ratio_wall": [ratio(t, o) for t, o in zip(theirs["wall_s"], ours["wall_s"])]}


def cases(measures, policies, env_slate_sizes, our_shapes=("default",)) -> list[dict]:
    """The (measure, variant) pairs to time, in the order run.  Iteration cases come once per policy of
    theirs and shape of ours (:data:`OUR_SHAPES`); the default shape keeps the plain name."""
    unknown = [s for s in our_shapes if s not in OUR_SHAPES]
    if unknown or not our_shapes:
        raise ValueError(f"our shapes must be a non-empty subset of {sorted(OUR_SHAPES)}, got {list(our_shapes)}")
    out = []
    for measure in MEASURES:
        if measure not in measures:
            continue
        if measure == "env":
            out += [{"name": f"env/K={k}", "measure": "env", "k": int(k)} for k in env_slate_sizes]
        elif measure == "iteration":
            out += [{"name": f"iteration/{p}" + ("" if shape == "default" else f"/ours-{shape}"),
                     "measure": measure, "policy": p, "our_shape": shape} for p in policies for shape in our_shapes]
        else:
            out += [{"name": f"{measure}/{p}", "measure": measure, "policy": p} for p in policies]
    return out


def adaptations_for(case_list, table=None) -> list[str]:
    """Every entry of ``table`` (default :data:`ADAPTATIONS`) behind the cases run, common ones first, each once."""
    table = ADAPTATIONS if table is None else table
    keys = ["common"]
    for case in case_list:
        keys += [case["measure"]] + ([f"{case['measure']}/{case['policy']}"] if "policy" in case else [])
        keys += [f"{case['measure']}/ours-{case['our_shape']}"] if case.get("our_shape", "default") != "default" else []
    out = []
    for key in keys:
        for item in table.get(key, []):
            if item not in out:
                out.append(item)
    return out


def _clock():
    return time.perf_counter(), time.process_time()


def _since(mark) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - mark[0], cpu - mark[1]


def _n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# ------------------------------------------------------------------ our side (runs in its own worker)
class OursWorker:
    """fcpo's agent, env and evaluator, timed one unit at a time."""

    def __init__(self, config: dict):
        self.config = config
        self.state: dict = {}
        import torch

        torch.set_num_threads(1)

    def prepare(self, case: dict) -> dict:
        measure = case["measure"]
        if measure == "iteration" and case.get("our_shape", "default") not in self.state.setdefault("agents", {}):
            self._prepare_agent(case.get("our_shape", "default"))
        elif measure == "env":
            self._prepare_env(case["k"])
        elif measure == "eval" and "eval" not in self.state:
            import eval_speed

            from fcpo.agents import make_agent
            from fcpo.agents.cpo import FCPOConfig
            from fcpo.envs import EnvSpec

            (case_row,) = [c for c in eval_speed.EVAL_CASES if c[0] == self.config["dataset"]]
            # the agent time_evaluation builds (for its parameter count only)
            spec = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": case_row[0], "data_dir": self.config["data_dir"]})
            n_params = _n_params(make_agent("fcpo", FCPOConfig(), spec, "cpu", 0).policy)
            self.state["eval"] = eval_speed, case_row, n_params
        return {"ok": True}

    def _prepare_agent(self, shape: str = "default"):
        from fcpo import runs
        from fcpo.agents import cpo as agent_module
        from fcpo.cli.train import build_parser, config_from_args

        flags = ["--dataset", self.config["dataset"], "--alpha", "0.4", "--seed", "0", "--device", "cpu",
                 "--threads", "1", "--data-dir", self.config["data_dir"]] + OUR_SHAPES[shape]
        config = config_from_args(build_parser().parse_args(flags))
        runs.set_threads(config.threads)
        agent = runs.build_agent(config, "cpu")
        counter = {"fisher_products": 0}
        original = agent_module.fisher_vector_product

        def counting_fvp(*args, **kwargs):
            hvp = original(*args, **kwargs)

            def counted(v, *a, **kw):
                counter["fisher_products"] += 1 if getattr(v, "dim", lambda: 1)() == 1 else int(v.shape[0])
                return hvp(v, *a, **kw)
            return counted

        if not getattr(agent_module.fisher_vector_product, "counts_products", False):
            counting_fvp.counts_products = True
            agent_module.fisher_vector_product = counting_fvp
        else:  # a second shape: the counting wrapper is in place already, share its counter
            counter = self.state["fvp_counter"]
        for it in range(self.config["warmup"]):
            agent.train_iteration(it)
        self.state["agents"][shape] = {"agent": agent, "config": config, "next_iteration": self.config["warmup"],
                                       "flags": flags}
        self.state["fvp_counter"] = counter

    def _prepare_env(self, k: int):
        from fcpo.envs import MovieLensFairVectorEnv
        import numpy as np

        folder = os.path.join(self.config["data_dir"], self.config["dataset"])
        env = MovieLensFairVectorEnv(cover_all_users=True, autoreset_mode="NextStep", dataset=self.config["dataset"],
                                     data_dir=folder, slate_size=k, horizon=10**6)
        rng = np.random.default_rng(0)
        actions = [rng.integers(0, env.n_items, (env.num_envs, k)) for _ in range(8)]
        env.reset(seed=0)
        env.step(actions[0])  # warm-up
        self.state[f"env{k}"] = env, actions

    def run(self, case: dict) -> dict:
        measure = case["measure"]
        if measure == "iteration":
            return self._run_iteration(case.get("our_shape", "default"))
        if measure == "env":
            return self._run_env(case["k"])
        return self._run_eval()

    def _run_iteration(self, shape: str = "default") -> dict:
        entry, counter = self.state["agents"][shape], self.state["fvp_counter"]
        agent = entry["agent"]
        it = entry["next_iteration"]
        entry["next_iteration"] += 1
        counter["fisher_products"] = 0
        mark = _clock()
        stats = agent.train_iteration(it)
        wall, cpu = _since(mark)
        cfg = agent.config
        samples = int(stats["samples"])
        work = {"users": int(agent.n_rollout), "horizon": int(entry["config"].env["horizon"]),
                "our_shape": shape, "fcpo_train_flags": " ".join(entry["flags"][:4] + OUR_SHAPES[shape]),
                "constraint": agent.config.constraint,
                "slate_size_K": int(agent.slate_size), "samples": samples,
                "item_slots": samples * int(agent.slate_size), "actor_parameters": _n_params(agent.policy),
                "critic_parameters_each": _n_params(agent.value_r), "critics": 2,
                "critic_fit": f"Adam, {cfg.critic_epochs} epochs of minibatches of {cfg.critic_batch} (current batch)",
                "fisher_batch": max(1, int(cfg.fvp_subsample * samples)), "fvp_subsample": cfg.fvp_subsample,
                "cg_iters_max": cfg.cg_iters, "actor_mode": cfg.actor_mode}
        info = {"iteration": it, "fisher_products": counter["fisher_products"],
                "cg_iterations": stats.get("cg_iterations"), "backtracks": stats.get("backtracks"),
                "cpo_case": stats.get("cpo_case"), "reward": stats.get("reward"), "cost": stats.get("cost")}
        work["fisher_products"] = counter["fisher_products"]
        return {"wall_s": wall, "cpu_s": cpu, "work": work, "info": info}

    def _run_env(self, k: int) -> dict:
        env, actions = self.state[f"env{k}"]
        steps = self.config["env_steps"]
        env.reset(seed=0)
        mark = _clock()
        for s in range(steps):
            env.step(actions[s % len(actions)])
        wall, cpu = _since(mark)
        work = {"users": int(env.num_envs), "items": int(env.n_items), "slate_size_K": k, "steps": steps,
                "user_steps": int(env.num_envs) * steps, "item_slots": int(env.num_envs) * steps * k}
        return {"wall_s": wall, "cpu_s": cpu, "work": work}

    def _run_eval(self) -> dict:
        eval_speed, (dataset, k, steps, label, _), n_params = self.state["eval"]
        row = eval_speed.time_evaluation(dataset, k, steps, self.config["data_dir"], 1, None)
        work = {"users": row["users"], "slate_size_K": row["k"], "steps_L": row["steps"],
                "actor_K": row["actor_k"], "scores": row["scores"], "case": label, "actor_parameters": n_params,
                "items_ranked_per_step": "all items (masked: shown ones)",
                "metrics": "precision/recall/F1/NDCG/HR at every cut-off t*K, exposure"}
        info = {"act_s": row["act_median_s"], "metrics_s": row["metrics_median_s"]}
        return {"wall_s": row["seconds"][0], "cpu_s": row["cpu_seconds"][0], "work": work, "info": info}


# ------------------------------------------------------------------ their side (runs in its own worker)
def _shims():
    """The thin torch modules that adapt their models to the calls their code makes (see ADAPTATIONS)."""
    import torch

    class FlatStateActor(torch.nn.Module):
        """models.Actor fed flat [B, h*d] (or [B, h, d]) states; an optional user argument is ignored."""

        def __init__(self, actor, history: int, dim: int):
            super().__init__()
            self.actor, self.history, self.dim = actor, history, dim

        def forward(self, states, users=None):
            return self.actor(states.reshape(states.shape[0], self.history, self.dim))

    class TimeColumnCritic(torch.nn.Module):
        """models.Critic fed cpo.py's [N, h*d + 1] state-with-time: GRU input [N, h, d], time column as y."""

        def __init__(self, critic, history: int, dim: int):
            super().__init__()
            self.critic, self.history, self.dim = critic, history, dim

        def forward(self, states_w_time):
            width = self.history * self.dim
            seq = states_w_time[:, :width].reshape(states_w_time.shape[0], self.history, self.dim)
            return self.critic(seq, states_w_time[:, width:])

    class UserArgumentPolicy(torch.nn.Module):
        """A flat-state policy called as model(states, users), as the notebook's test cell calls it."""

        def __init__(self, policy):
            super().__init__()
            self.policy = policy

        def forward(self, states, users=None):
            return self.policy(states.reshape(states.shape[0], -1))

    return FlatStateActor, TimeColumnCritic, UserArgumentPolicy


class TheirsWorker:
    """The authors' modules, imported from ``<authors-dir>/fcpo`` in this (separate) process."""

    def __init__(self, config: dict):
        self.config = config
        root = Path(config["authors_dir"])
        self.code_dir = root / "fcpo"
        self.data_dir = root / "data" / config["dataset"]
        sys.path.insert(0, str(self.code_dir))
        import numpy as np
        import torch

        torch.set_num_threads(1)
        np.random.seed(0)
        torch.manual_seed(0)
        self.np, self.torch = np, torch
        import cpo as cpo_module
        import data_util
        import fair_env
        import gini as gini_module
        import models
        import simulators
        import test_ranking

        self.m = {"cpo": cpo_module, "data_util": data_util, "fair_env": fair_env, "gini": gini_module,
                  "models": models, "simulators": simulators, "test_ranking": test_ranking}
        self.item_embeddings = np.load(self.data_dir / "pmf_item_embed.npy")
        self.user_embeddings = np.load(self.data_dir / "pmf_user_embed.npy")
        self.item_indicator = np.load(self.data_dir / "item_cost_indicator_28.npy")
        self.history = NOTEBOOK["history_length"]
        self.dim = int(self.item_embeddings.shape[1])
        self.n_items = int(self.item_embeddings.shape[0])
        self.device = torch.device("cpu")
        self.data: dict = {}
        self.iterations: dict = {}
        self.envs: dict = {}
        self.evals: dict = {}

    # ---- construction, as the notebook's cells 1 and 4 do it
    def _read(self, split: str):
        if split not in self.data:
            self.data[split] = self.m["data_util"].read_file(str(self.data_dir / f"{split}_data.csv"))
        return self.data[split]

    def env_args(self, split: str) -> dict:
        return {"data": self._read(split), "nb_user": int(self.user_embeddings.shape[0]), "nb_item": self.n_items,
                "item_embeddings": self.item_embeddings, "user_embeddings": self.user_embeddings,
                "item_indicator": self.item_indicator, "device": self.device, "gamma": NOTEBOOK["gamma"],
                "frac": NOTEBOOK["frac"]}

    def build_models(self, policy: str):
        """(actor, value critic, cost critic) in the form their training loop calls them."""
        models, h, d, hidden = self.m["models"], self.history, self.dim, NOTEBOOK["hidden_dims"]
        if policy == "mlp":
            return (models.build_diag_gauss_policy(h * d, list(hidden), d),
                    models.build_mlp(h * d + 1, list(hidden), 1), models.build_mlp(h * d + 1, list(hidden), 1))
        FlatStateActor, TimeColumnCritic, _ = _shims()
        ra = NOTEBOOK["ra_length"]
        actor = FlatStateActor(models.Actor(h, ra, d, list(hidden), d), h, d)
        critics = [TimeColumnCritic(models.Critic(h, ra, d + 1, list(hidden), 1), h, d) for _ in range(2)]
        return actor, critics[0], critics[1]

    def eval_model(self, policy: str):
        """The model the notebook's test cell calls as model(states, users)."""
        FlatStateActor, _, UserArgumentPolicy = _shims()
        actor, _, _ = self.build_models(policy)
        return actor if isinstance(actor, FlatStateActor) else UserArgumentPolicy(actor)

    # ---- protocol
    def prepare(self, case: dict) -> dict:
        if case["measure"] == "iteration":
            self._prepare_iteration(case["policy"])
        elif case["measure"] == "env":
            self._prepare_env(case["k"])
        else:
            self._read("test")
            self.evals[case["policy"]] = self.eval_model(case["policy"])
            self._evaluate(self.evals[case["policy"]])  # warm-up, as ours
        return {"ok": True}

    def run(self, case: dict) -> dict:
        if case["measure"] == "iteration":
            return self._run_iteration(case["policy"])
        if case["measure"] == "env":
            return self._run_env(case["k"])
        mark = _clock()
        out = self._evaluate(self.evals[case["policy"]])
        wall, cpu = _since(mark)
        work = {"users": out["users"], "slate_size_K": NOTEBOOK["ra_length"],
                "steps_L": NOTEBOOK["test_trajectory_len"], "actor_parameters": out["actor_parameters"],
                "items_ranked_per_step": "all items (masked: shown ones)",
                "metrics": "recall/hit rate/precision/NDCG at every cut-off, Gini and popular rate per step",
                "policy": case["policy"]}
        return {"wall_s": wall, "cpu_s": cpu, "work": work, "info": {"ndcg@200": out["ndcg@200"]}}

    # ---- one training iteration: their CPO.train, paused between episodes
    def _prepare_iteration(self, policy: str):
        m = self.m
        args = self.env_args("train")
        env = m["fair_env"].Environment(**args)
        actor, value_fun, cost_fun = self.build_models(policy)
        n_trajectories = env.nb_user  # the notebook: n_trajectories = env.nb_user (all users, frac = 1)
        simulator = m["simulators"].SinglePathSimulator(env, actor, n_trajectories, NOTEBOOK["trajectory_len"],
                                                        **args)
        counters = {"hvp": 0, "step_len": None}
        cpo_module = m["cpo"]
        get_hvp, line_search = cpo_module.get_Hvp_fun, cpo_module.line_search

        def counting_get_hvp(*a, **kw):
            fun = get_hvp(*a, **kw)

            def counted(v, *aa, **kww):
                counters["hvp"] += 1
                return fun(v, *aa, **kww)
            return counted

        def recording_line_search(*a, **kw):
            step = line_search(*a, **kw)
            counters["step_len"] = float(step)
            return step

        cpo_module.get_Hvp_fun, cpo_module.line_search = counting_get_hvp, recording_line_search
        agent = cpo_module.CPO(actor, value_fun, cost_fun, simulator, self.device, **NOTEBOOK["cpo"])
        total = self.config["warmup"] + self.config["repeats"]
        go, done = queue.Queue(), queue.Queue()
        state = {"mark": None}
        original_print = agent.print_update
        warmup = self.config["warmup"]

        def episode_end():
            original_print()
            timing = _since(state["mark"]) if state["mark"] is not None else None
            ep = agent.episode_num
            if ep > warmup:
                done.put({"wall_s": timing[0], "cpu_s": timing[1], "episode": ep, "hvp": counters["hvp"],
                          "step_len": counters["step_len"], "reward": float(agent.mean_rewards[-1]),
                          "cost": float(agent.mean_costs[-1])})
                if ep < total:
                    go.get()
            counters["hvp"] = 0
            state["mark"] = _clock()

        agent.print_update = episode_end  # instance attribute: their train() calls self.print_update()

        def loop():
            try:
                state["mark"] = _clock()
                agent.train(total)
            except BaseException as exc:  # noqa: BLE001 -- handed to the worker's protocol
                done.put({"error": "".join(traceback.format_exception(exc))})

        thread = threading.Thread(target=loop, name="authors-cpo-train", daemon=True)
        self.iterations[policy] = {"agent": agent, "simulator": simulator, "thread": thread, "go": go, "done": done,
                                   "started": False, "actor": actor, "value_fun": value_fun}

    def _run_iteration(self, policy: str) -> dict:
        it = self.iterations[policy]
        if not it["started"]:
            it["started"] = True
            it["thread"].start()
        else:
            it["go"].put(True)
        out = it["done"].get()
        if "error" in out:
            raise RuntimeError(f"their CPO.train failed:\n{out['error']}")
        sim, agent = it["simulator"], it["agent"]
        n = int(sim.n_trajectories) * int(sim.trajectory_len)
        work = {"users": int(sim.n_trajectories), "horizon": int(sim.trajectory_len),
                "slate_size_K": NOTEBOOK["ra_length"], "samples": n, "item_slots": n * NOTEBOOK["ra_length"],
                "actor_parameters": _n_params(it["actor"]), "critic_parameters_each": _n_params(it["value_fun"]),
                "critics": 2,
                "critic_fit": "LBFGS (max_iter 25) on the current and the previous batch (2 x samples after "
                              "the first episode)",
                "fisher_batch": n, "fvp_subsample": 1.0, "cg_iters_max": int(agent.cg_max_iters),
                "cg_solves": 2, "fisher_products": out["hvp"], "policy": policy}
        info = {k: out[k] for k in ("episode", "hvp", "step_len", "reward", "cost")}
        return {"wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "work": work, "info": info}

    # ---- env steps
    def _prepare_env(self, k: int):
        torch = self.torch
        env = self.m["fair_env"].Environment(**self.env_args("train"))
        gen = torch.Generator().manual_seed(0)
        idxes = [torch.randint(0, self.n_items, (env.nb_user, k), generator=gen) for _ in range(8)]
        item_embeds = torch.from_numpy(self.item_embeddings).float()
        steps = [(item_embeds[i], i) for i in idxes]
        env.step(*steps[0])  # warm-up
        self.envs[k] = env, steps

    def _run_env(self, k: int) -> dict:
        env, steps = self.envs[k]
        n = self.config["env_steps"]
        env.reset()
        mark = _clock()
        for s in range(n):
            env.step(*steps[s % len(steps)])
        wall, cpu = _since(mark)
        work = {"users": int(env.nb_user), "items": self.n_items, "slate_size_K": k, "steps": n,
                "user_steps": int(env.nb_user) * n, "item_slots": int(env.nb_user) * n * k}
        return {"wall_s": wall, "cpu_s": cpu, "work": work}

    # ---- the notebook's test cell (cell 6) and the metric part of cell 8
    def _evaluate(self, model) -> dict:
        np, torch, m = self.np, self.torch, self.m
        steps, ra = NOTEBOOK["test_trajectory_len"], NOTEBOOK["ra_length"]
        gini = m["gini"].gini
        with torch.no_grad():
            test_env = m["fair_env"].Environment(**self.env_args("test"))
            states = test_env.reset()
            users = test_env.current_user
            item_embeds = torch.from_numpy(self.item_embeddings).float()
            n_users = test_env.nb_user
            shown = torch.zeros(n_users, self.n_items)
            picks, hits, ginis, pop_running = [], [], [], []
            clicks, cost = 0, 0
            for t in range(steps):
                dist = model(torch.FloatTensor(states), torch.FloatTensor(users))
                mean = dist.mean
                scores = torch.mm(mean.view(-1, self.dim), item_embeds.transpose(0, 1)).view(n_users, ra, -1)
                scores = torch.mul(scores.transpose(0, 1), 1 - shown).reshape(states.shape[0], ra, -1)
                idx = torch.argmax(scores, dim=2)
                actions = item_embeds[idx]
                picks.append(idx.squeeze())
                shown = shown.scatter_(1, idx, 1)
                states, _rewards, costs, info = test_env.step(actions, idx)
                clicks += torch.sum(info)
                cost += torch.sum(costs)
                pop_running.append(cost / ((t + 1) * states.shape[0]))
                _, counts = torch.unique(torch.stack(picks), return_counts=True)
                hits.append(info.squeeze())
                ginis.append(gini(torch.cat((counts.float(), torch.zeros(self.n_items - len(counts)))).numpy()))
            indicator = self.item_indicator[torch.stack(picks).transpose(0, 1).numpy()]
            pop_rate = [np.sum(indicator[:, :i + 1]) / ((i + 1) * indicator.shape[0])
                        for i in range(indicator.shape[1])]
            history_length = torch.sum(test_env.current_user_history, 1).numpy()
            report = m["test_ranking"].get_test_results(torch.stack(hits).transpose(0, 1).numpy(), history_length,
                                                       ginis, steps)
            curves = {key: np.mean(report[key], 0) for key in ("recall", "hit_rate", "precision", "ndcg")}
        return {"users": int(n_users), "ndcg@200": float(curves["ndcg"][-1]), "pop_rate@200": float(pop_rate[-1]),
                "actor_parameters": _n_params(model)}


# ------------------------------------------------------------------ worker processes
def serve(worker, commands, reply) -> None:
    """The worker's loop: ``prepare``/``run`` commands in, one JSON reply each out, until ``quit``."""
    for line in commands:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            reply({"ok": True})
            return
        try:
            out = worker.prepare(cmd["case"]) if cmd["op"] == "prepare" else worker.run(cmd["case"])
        except Exception as exc:  # noqa: BLE001 -- reported to the parent, which stops
            reply({"error": "".join(traceback.format_exception(exc))})
            return
        reply(out)


def worker_main(side: str, config: dict) -> None:
    """Entry of a worker process: replies go to the original stdout, everything printed goes to stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # their print() calls (and ours) go to stderr, never into the protocol

    def reply(obj):
        channel.write(json.dumps(obj, default=float) + "\n")
        channel.flush()

    try:
        worker = OursWorker(config) if side == "ours" else TheirsWorker(config)
    except Exception as exc:  # noqa: BLE001
        reply({"error": "".join(traceback.format_exception(exc))})
        return
    reply({"ok": True, "side": side})
    serve(worker, sys.stdin, reply)


class WorkerProcess:
    """One side's worker: a child process running this script with ``--worker SIDE``."""

    def __init__(self, side: str, config: dict, cwd: str | None = None):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.side = side
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", side,
                                      "--worker-config", json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            raise RuntimeError(f"{self.side} worker exited (rc {rc}) without replying; see its stderr above")
        out = json.loads(line)
        if "error" in out:
            self.close()
            raise RuntimeError(f"{self.side} worker failed:\n{out['error']}")
        return out

    def send(self, op: str, case: dict | None = None) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "case": case}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------ the benchmark
def run_benchmark(args) -> dict:
    case_list = cases(args.measures, args.authors_policy, args.env_slate_sizes, args.our_shapes)
    adaptations = adaptations_for(case_list)
    print("adaptations made to run the authors' code:")
    for item in adaptations:
        print(f"  - {item}")
    base = {"dataset": args.dataset, "warmup": args.warmup, "repeats": args.repeats, "env_steps": args.env_steps}
    start = machine_info()
    print(f"threads 1 per side; load avg {' '.join(f'{x:.2f}' for x in start['load_avg'])}", flush=True)
    measures = {}
    with tempfile.TemporaryDirectory(prefix="authors-fcpo-cwd-") as cwd:
        ours = WorkerProcess("ours", {**base, "data_dir": args.data_dir})
        try:
            theirs = WorkerProcess("theirs", {**base, "authors_dir": str(args.authors_dir)}, cwd=cwd)
            try:
                for case in case_list:
                    workers = {"ours": ours, "theirs": theirs}
                    for side in SIDES:
                        workers[side].send("prepare", case)
                    runs = {side: [] for side in SIDES}
                    loads = []
                    for side, r in alternating_schedule(args.repeats):
                        runs[side].append(workers[side].send("run", case))
                        loads.append(os.getloadavg()[0])
                        last = runs[side][-1]
                        print(f"{case['name']:<16s} {side:<6s} #{r}: wall {last['wall_s']:8.3f} s  "
                              f"cpu {last['cpu_s']:8.3f} s  load {loads[-1]:.2f}", flush=True)
                    row = {**case, **compare(runs["ours"], runs["theirs"]), "load_1min_after_each_run": loads}
                    measures[case["name"]] = row
                    print(f"{case['name']:<16s} theirs/ours: cpu {row['ratio_cpu']:.2f}x  "
                          f"wall {row['ratio_wall']:.2f}x "
                          f"(medians: ours {row['ours']['median_cpu_s']:.3f} / theirs "
                          f"{row['theirs']['median_cpu_s']:.3f} CPU-s)", flush=True)
            finally:
                theirs.close()
        finally:
            ours.close()
    end = machine_info()
    return {"benchmark": "authors_side_by_side",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "authors": {"dir": str(args.authors_dir), "git_commit": _git_commit(args.authors_dir),
                        "source": "https://github.com/TobyGE/FCPO", "notebook_settings": NOTEBOOK},
            "threads_per_side": 1, "schedule": "alternating pairs: ours, theirs, ours, theirs, ...",
            "ratio": "theirs / ours (> 1: ours is faster), of the medians; pair_ratio_*: per pair",
            "adaptations": adaptations, "instrumentation": INSTRUMENTATION,
            "unequal_work": adaptations_for(case_list, UNEQUAL),
            "load_avg_start": start["load_avg"], "load_avg_end": end["load_avg"], "measures": measures}


def _git_commit(path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors-dir", help=f"a clone of the authors' repository ({CLONE_COMMAND})")
    ap.add_argument("--dataset", default="ml-100k", choices=["ml-100k"],
                    help="the data set (their repository ships ml-100k only)")
    ap.add_argument("--data-dir", default=default_data_dir(), help="our data folder, holding ml-100k/")
    ap.add_argument("--repeats", type=int, default=3, help="alternating pairs per measure (medians reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training iterations per side before timing")
    ap.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    ap.add_argument("--authors-policy", nargs="+", choices=POLICIES, default=list(POLICIES),
                    help="their policy: mlp (published pipeline, shipped model's form) and/or gru (notebook's Actor)")
    ap.add_argument("--our-shapes", nargs="+", choices=list(OUR_SHAPES), default=list(OUR_SHAPES),
                    help="our agent in the iteration measure: default (fcpo-train's K = 5, per-slate cap) and/or "
                         "authors (their work's shape: K = 1, the expected constraint)")
    ap.add_argument("--env-slate-sizes", nargs="+", type=int, default=[1, 10], help="K of the env measure")
    ap.add_argument("--env-steps", type=int, default=50, help="env steps per timed block (env_throughput.py: 50)")
    ap.add_argument("--out", default=str(RESULTS / "authors_side_by_side.json"))
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--worker-config", help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> dict | None:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.worker_config))
        return None
    try:
        args.authors_dir = check_authors_dir(args.authors_dir, args.dataset)
    except AuthorsDirError as exc:
        ap.error(str(exc))
    if not args.data_dir or not os.path.isdir(os.path.join(args.data_dir, args.dataset)):
        ap.error(f"--data-dir {args.data_dir!r} holds no {args.dataset}/ (set it or FCPO_DATA_DIR)")
    for flag, value in (("--repeats", args.repeats), ("--env-steps", args.env_steps)):
        if value < 1:
            ap.error(f"{flag} must be >= 1, got {value}")
    if args.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {args.warmup}")
    if any(k < 1 for k in args.env_slate_sizes):
        ap.error(f"--env-slate-sizes must be >= 1, got {args.env_slate_sizes}")
    payload = run_benchmark(args)
    path = write_json(args.out, payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
