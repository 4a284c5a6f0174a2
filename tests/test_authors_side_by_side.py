"""benchmarks/authors_side_by_side.py without the authors' code: the --authors-dir errors, the alternating
schedule, the ratio/median arithmetic, the JSON record, and the shims and worker protocol driven against a
small stand-in "authors" folder written here (our own code mimicking the interface the harness calls)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from benchmark_scripts import BENCHMARKS, load_benchmark

SCRIPT = BENCHMARKS / "authors_side_by_side.py"
REPO = BENCHMARKS.parent


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("authors_side_by_side")


def _run_script(*args, **env):
    environ = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=environ,
                          timeout=120)


# ------------------------------------------------------------------ --authors-dir errors
def test_missing_authors_dir_flag_names_flag_and_clone_command(tmp_path):
    out = _run_script("--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "--authors-dir is required" in out.stderr
    assert "git clone https://github.com/TobyGE/FCPO" in out.stderr


def test_nonexistent_authors_dir(tmp_path):
    out = _run_script("--authors-dir", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert f"--authors-dir {tmp_path / 'nope'}: no such folder" in out.stderr
    assert "git clone https://github.com/TobyGE/FCPO" in out.stderr


def test_folder_that_is_not_their_repository(tmp_path):
    (tmp_path / "fcpo").mkdir()
    (tmp_path / "fcpo" / "cpo.py").write_text("")
    out = _run_script("--authors-dir", str(tmp_path))
    assert out.returncode == 2
    assert "does not look like the FCPO authors' repository" in out.stderr
    missing = out.stderr.split("(missing ")[1].split(")")[0]
    assert missing.startswith("fcpo/fair_env.py, fcpo/simulators.py, fcpo/models.py, fcpo/memory.py and ")
    assert "fcpo/cpo.py" not in missing  # present, so not listed
    assert "git clone https://github.com/TobyGE/FCPO" in out.stderr


def test_check_authors_dir_accepts_the_stand_in(bench, authors_dir):
    assert bench.check_authors_dir(str(authors_dir)) == authors_dir
    (authors_dir / "data" / "ml-100k" / "test_data.csv").unlink()
    with pytest.raises(bench.AuthorsDirError, match=r"missing data/ml-100k/test_data.csv\)"):
        bench.check_authors_dir(str(authors_dir))
    with pytest.raises(bench.AuthorsDirError, match="--authors-dir is required"):
        bench.check_authors_dir(None)


def test_our_data_dir_is_checked_after_theirs(authors_dir, tmp_path):
    out = _run_script("--authors-dir", str(authors_dir), "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 2
    assert f"--data-dir '{tmp_path / 'none'}' holds no ml-100k/" in out.stderr


# ------------------------------------------------------------------ schedule and arithmetic
def test_alternating_schedule(bench):
    assert bench.alternating_schedule(3) == [("ours", 0), ("theirs", 0), ("ours", 1), ("theirs", 1),
                                             ("ours", 2), ("theirs", 2)]
    assert bench.alternating_schedule(1, sides=("a", "b")) == [("a", 0), ("b", 0)]
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.alternating_schedule(0)


def test_compare_medians_and_ratios(bench):
    ours = [{"wall_s": 2.0, "cpu_s": 1.0, "work": {"users": 932}}, {"wall_s": 6.0, "cpu_s": 3.0},
            {"wall_s": 4.0, "cpu_s": 2.0}]
    theirs = [{"wall_s": 20.0, "cpu_s": 10.0, "work": {"users": 943}, "info": {"episode": 3}},
              {"wall_s": 60.0, "cpu_s": 30.0}, {"wall_s": 9.0, "cpu_s": 4.0}]
    row = bench.compare(ours, theirs)
    assert row["ours"]["median_cpu_s"] == 2.0 and row["ours"]["median_wall_s"] == 4.0
    assert row["theirs"]["median_cpu_s"] == 10.0 and row["theirs"]["median_wall_s"] == 20.0
    assert row["ratio_cpu"] == 5.0 and row["ratio_wall"] == 5.0
    assert row["pair_ratio_cpu"] == [10.0, 10.0, 2.0]
    assert row["pair_ratio_wall"] == [10.0, 10.0, 2.25]
    assert row["ours"]["work"] == {"users": 932} and row["theirs"]["per_repeat"] == [{"episode": 3}, {}, {}]
    even = bench.compare([{"wall_s": 1.0, "cpu_s": 1.0}, {"wall_s": 3.0, "cpu_s": 2.0}],
                         [{"wall_s": 4.0, "cpu_s": 6.0}, {"wall_s": 8.0, "cpu_s": 6.0}])
    assert even["ratio_wall"] == 3.0 and even["ratio_cpu"] == 4.0  # medians 2 and 6 (wall), 1.5 and 6 (cpu)
    assert np.isnan(bench.ratio(1.0, 0.0))
    with pytest.raises(ValueError, match="as many runs"):
        bench.compare(ours, theirs[:2])


def test_cases_and_adaptations(bench):
    got = bench.cases(["eval", "iteration", "env"], ["mlp", "gru"], [1, 10])
    assert [c["name"] for c in got] == ["iteration/mlp", "iteration/gru", "env/K=1", "env/K=10", "eval/mlp",
                                        "eval/gru"]
    mlp_only = bench.adaptations_for(bench.cases(["iteration"], ["mlp"], [1]))
    both = bench.adaptations_for(got)
    gru_items = bench.ADAPTATIONS["iteration/gru"]
    assert not set(gru_items) & set(mlp_only) and set(gru_items) <= set(both)
    assert len(both) == len(set(both))  # each once
    assert mlp_only[:len(bench.ADAPTATIONS["common"])] == bench.ADAPTATIONS["common"]


def test_iteration_cases_per_our_shape(bench):
    got = bench.cases(["iteration", "eval"], ["mlp", "gru"], [1], ["default", "authors"])
    assert [(c["name"], c.get("our_shape")) for c in got] == [
        ("iteration/mlp", "default"), ("iteration/mlp/ours-authors", "authors"),
        ("iteration/gru", "default"), ("iteration/gru/ours-authors", "authors"), ("eval/mlp", None),
        ("eval/gru", None)]
    assert bench.OUR_SHAPES["authors"] == ["--slate-size", "1", "--constraint", "expected"]
    authors_items = bench.UNEQUAL["iteration/ours-authors"]
    assert set(authors_items) <= set(bench.adaptations_for(got, bench.UNEQUAL))
    default_only = bench.adaptations_for(bench.cases(["iteration"], ["mlp"], [1], ["default"]), bench.UNEQUAL)
    assert not set(authors_items) & set(default_only)
    with pytest.raises(ValueError, match="our shapes must be a non-empty subset"):
        bench.cases(["iteration"], ["mlp"], [1], ["k1"])
    with pytest.raises(ValueError, match="our shapes must be a non-empty subset"):
        bench.cases(["iteration"], ["mlp"], [1], [])
    assert bench.build_parser().parse_args(["--our-shapes", "authors"]).our_shapes == ["authors"]
    assert bench.build_parser().parse_args([]).our_shapes == ["default", "authors"]


def test_our_worker_times_both_shapes(bench, ml100k_dir):
    """Our side in its own process on real ml-100k: one agent per shape, each continuing its own iterations;
    the authors' shape is K = 1 with the expected constraint, active, so both systems are solved."""
    config = {"dataset": "ml-100k", "warmup": 0, "repeats": 1, "env_steps": 1, "data_dir": str(ml100k_dir.parent)}
    worker = bench.WorkerProcess("ours", config)
    try:
        out = {}
        for shape in ("authors", "default", "authors"):
            case = {"name": "iteration/mlp", "measure": "iteration", "policy": "mlp", "our_shape": shape}
            assert worker.send("prepare", case) == {"ok": True}
            out.setdefault(shape, []).append(worker.send("run", case))
    finally:
        worker.close()
    assert worker.proc.returncode == 0
    k1, again, k5 = out["authors"][0], out["authors"][1], out["default"][0]
    assert [k1["info"]["iteration"], again["info"]["iteration"], k5["info"]["iteration"]] == [0, 1, 0]
    assert k1["work"]["slate_size_K"] == 1 and k1["work"]["constraint"] == "expected"
    assert k5["work"]["slate_size_K"] == 5 and k5["work"]["constraint"] == "per-slate"
    assert k1["work"]["fcpo_train_flags"].endswith("--slate-size 1 --constraint expected")
    assert k1["work"]["item_slots"] == k1["work"]["samples"] and k5["work"]["item_slots"] == 5 * k5["work"]["samples"]
    for row in (k1, again, k5):
        assert row["wall_s"] > 0 and row["cpu_s"] > 0
        # 10 CG products for H x = g, and 10 more for H x = b when the constraint is active
        assert row["work"]["fisher_products"] == (20 if row["info"]["cpo_case"] in
                                                   ("feasible_boundary", "infeasible_recoverable") else 10)


def test_record_shape(bench, tmp_path, monkeypatch):
    """run_benchmark with stand-in workers: alternation, per-measure rows, adaptations, written by write_json."""
    calls = []

    class StandInWorker:
        def __init__(self, side, config, cwd=None):
            self.side, self.n = side, 0

        def send(self, op, case=None):
            calls.append((self.side, op, case["name"]))
            if op == "prepare":
                return {"ok": True}
            self.n += 1
            scale = 10.0 if self.side == "theirs" else 1.0
            return {"wall_s": scale * self.n, "cpu_s": scale * self.n / 2, "work": {"side": self.side}}

        def close(self):
            calls.append((self.side, "close", None))

    monkeypatch.setattr(bench, "WorkerProcess", StandInWorker)
    args = bench.build_parser().parse_args(["--authors-dir", str(tmp_path), "--repeats", "3", "--measures", "env",
                                            "--env-slate-sizes", "1", "--out", str(tmp_path / "out.json")])
    payload = bench.run_benchmark(args)
    runs = [c[:2] for c in calls if c[1] == "run"]
    assert runs == [("ours", "run"), ("theirs", "run")] * 3
    row = payload["measures"]["env/K=1"]
    assert row["ours"]["cpu_s"] == [0.5, 1.0, 1.5] and row["theirs"]["wall_s"] == [10.0, 20.0, 30.0]
    assert row["ratio_cpu"] == 10.0 and row["pair_ratio_wall"] == [10.0, 10.0, 10.0]
    assert len(row["load_1min_after_each_run"]) == 6
    assert payload["adaptations"] == bench.adaptations_for(bench.cases(["env"], ["mlp", "gru"], [1]))
    assert ("theirs", "close", None) in calls and ("ours", "close", None) in calls
    path = bench.write_json(tmp_path / "out.json", payload)
    stored = json.loads(Path(path).read_text())
    assert {"machine", "measures", "adaptations", "instrumentation", "load_avg_start", "load_avg_end"} <= set(stored)
    assert stored["machine"]["threads"] is not None and len(stored["machine"]["load_avg"]) == 3
    assert set(stored["measures"]["env/K=1"]) >= {"ours", "theirs", "ratio_cpu", "ratio_wall", "pair_ratio_cpu"}


# ------------------------------------------------------------------ a stand-in authors folder
STAND_IN = {
    "data_util.py": """
        import json
        import numpy as np
        import pandas as pd

        def read_file(filename):
            df = pd.read_csv(filename)
            out = pd.DataFrame()
            out['user'] = df['user'].tolist()
            out['state'] = [json.loads(s) for s in df['state']]
            out['history'] = [np.array(json.loads(s)) for s in df['history']]
            return out
    """,
    "fair_env.py": """
        import numpy as np
        import torch

        class Environment:
            def __init__(self, data, nb_user, nb_item, item_embeddings, user_embeddings, item_indicator, gamma,
                         device, frac):
                self.data, self.nb_item, self.item_embeddings = data, nb_item, item_embeddings
                self.item_indicator = torch.from_numpy(item_indicator).float()
                self.frac = frac
                self.reset()

            def reset(self):
                rows = self.data.sample(frac=self.frac)
                self.current_user = rows['user'].to_list()
                self.nb_user = len(self.current_user)
                self.current_state = self.item_embeddings[rows['state'].to_list()]
                self.current_user_history = torch.zeros(self.nb_user, self.nb_item)
                for i, h in enumerate(rows['history'].values):
                    self.current_user_history[i, torch.as_tensor(h)] = 1
                return self.current_state

            def step(self, actions, item_idxes):
                hit = torch.gather(self.current_user_history, 1, item_idxes)
                self.current_user_history.scatter_(1, item_idxes, 0)
                costs = torch.sum(self.item_indicator[item_idxes], 1)
                return self.current_state, hit.sum(1), costs, hit
    """,
    "models.py": """
        import torch
        from torch.distributions import Independent, Normal

        class Gauss(torch.nn.Module):
            def __init__(self, state_dim, hidden_dims, action_dim):
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Linear(state_dim, hidden_dims[0]), torch.nn.Tanh(),
                                               torch.nn.Linear(hidden_dims[0], action_dim))
                self.log_std = torch.nn.Parameter(torch.zeros(action_dim))

            def forward(self, x):
                assert x.dim() == 2, 'flat states'
                return Independent(Normal(self.net(x), self.log_std.exp()), 1)

        def build_diag_gauss_policy(state_dim, hidden_dims, action_dim):
            return Gauss(state_dim, hidden_dims, action_dim)

        def build_mlp(input_dim, hidden_dims, output_dim):
            return torch.nn.Sequential(torch.nn.Linear(input_dim, hidden_dims[0]), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden_dims[0], output_dim))

        class Actor(torch.nn.Module):
            def __init__(self, input_size, hidden_size, state_dim, hidden_dims, action_dim):
                super().__init__()
                self.gru = torch.nn.GRU(input_size=input_size, hidden_size=hidden_size, batch_first=True)
                self.policy = Gauss(state_dim, hidden_dims, action_dim)

            def forward(self, x):
                assert x.dim() == 3, 'Actor takes [B, history, dim]'
                out, _ = self.gru(x.transpose(1, 2))
                return self.policy(out.reshape(x.shape[0], -1))

        class Critic(torch.nn.Module):
            def __init__(self, input_size, hidden_size, input_dim, hidden_dims, output_dim):
                super().__init__()
                self.gru = torch.nn.GRU(input_size=input_size, hidden_size=hidden_size, batch_first=True)
                self.mlp = build_mlp(input_dim, hidden_dims, output_dim)

            def forward(self, x, y):
                out, _ = self.gru(x.transpose(1, 2))
                return self.mlp(torch.cat([out.reshape(x.shape[0], -1), y], dim=1))
    """,
    "simulators.py": """
        import torch

        class SinglePathSimulator:
            def __init__(self, env, policy, n_trajectories, trajectory_len, **env_args):
                self.env, self.policy = env, policy
                self.n_trajectories, self.trajectory_len = n_trajectories, trajectory_len
                self.item_embeds = torch.from_numpy(env_args['item_embeddings']).float()

            def run_sim(self):
                obs, acts, rewards = [], [], []
                with torch.no_grad():
                    states = self.env.reset()
                    for t in range(self.trajectory_len):
                        flat = torch.FloatTensor(states).view(self.n_trajectories, -1)
                        w = self.policy(flat).sample()
                        idx = torch.argmax(w @ self.item_embeds.T, dim=1, keepdim=True)
                        states, r, c, info = self.env.step(self.item_embeds[idx], idx)
                        obs.append(flat), acts.append(w), rewards.append(r)
                return torch.cat(obs), torch.cat(acts), torch.cat(rewards)
    """,
    "cpo.py": """
        import os
        import torch

        def get_Hvp_fun(kl, params):
            return lambda v, retain_graph=True: v

        def line_search(search_dir, max_step_len, criterion, coef=0.9, max_iter=10):
            return torch.tensor(max_step_len * coef)

        class CPO:
            def __init__(self, policy, value_fun, cost_fun, simulator, device, max_kl=1e-2, cg_max_iters=10,
                         **settings):
                self.policy, self.value_fun, self.cost_fun, self.simulator = policy, value_fun, cost_fun, simulator
                self.cg_max_iters, self.episode_num = cg_max_iters, 0
                self.mean_rewards, self.mean_costs = [], []
                self.settings = settings

            def train(self, n_episodes):
                while self.episode_num < n_episodes:
                    self.episode_num += 1
                    if os.environ.get('STAND_IN_FAIL_EPISODE') == str(self.episode_num):
                        raise RuntimeError('stand-in failure in episode %d' % self.episode_num)
                    obs, actions, rewards = self.simulator.run_sim()
                    with_time = torch.cat([obs, torch.zeros(len(obs), 1)], dim=1)
                    self.value_fun(with_time), self.cost_fun(with_time)
                    kl = self.policy(obs).log_prob(actions).mean()
                    hvp = get_Hvp_fun(kl, self.policy.parameters())
                    for _ in range(2 * self.cg_max_iters):
                        hvp(torch.ones(3))
                    line_search(None, 1.0, None)
                    self.mean_rewards.append(rewards.mean())
                    self.mean_costs.append(torch.tensor(0.0))
                    self.print_update()

            def print_update(self):
                print('episode', self.episode_num)
    """,
    "gini.py": """
        import numpy as np

        def gini(array):
            a = np.sort(array.flatten()) + 1e-7
            i = np.arange(1, a.shape[0] + 1)
            return float(np.sum((2 * i - a.shape[0] - 1) * a) / (a.shape[0] * np.sum(a)))
    """,
    "test_ranking.py": """
        import numpy as np

        def get_test_results(test_res, user_history_length, gini_index, max_k):
            hits = np.cumsum(test_res, axis=1)[:, :max_k]
            return {'recall': hits / np.maximum(user_history_length[:, None], 1), 'hit_rate': (hits > 0) * 1.0,
                    'precision': hits / np.arange(1, max_k + 1), 'ndcg': hits * 0.0, 'gini_index': gini_index}
    """,
    "memory.py": "",
}


@pytest.fixture
def authors_dir(tmp_path):
    root = tmp_path / "authors"
    code, data = root / "fcpo", root / "data" / "ml-100k"
    code.mkdir(parents=True)
    data.mkdir(parents=True)
    for name, text in STAND_IN.items():
        (code / name).write_text(textwrap.dedent(text))
    rng = np.random.default_rng(0)
    n_users, n_items, dim = 6, 12, 4
    np.save(data / "pmf_item_embed.npy", rng.normal(size=(n_items, dim)))
    np.save(data / "pmf_user_embed.npy", rng.normal(size=(n_users, dim)))
    np.save(data / "item_cost_indicator_28.npy", (np.arange(n_items) < 3).astype(float))
    for split in ("train", "test"):
        lines = ["user,state,history"]
        for u in range(n_users):
            state = [int(i) for i in rng.choice(n_items, 5, replace=False)]
            history = [int(i) for i in rng.choice(n_items, 4, replace=False)]
            lines.append(f'{u},"{state}","{history}"')
        (data / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_their_worker_drives_the_stand_in(bench, authors_dir, tmp_path):
    """Their side in its own process: CPO.train paused between episodes, the GRU shims, env and eval."""
    config = {"dataset": "ml-100k", "warmup": 1, "repeats": 2, "env_steps": 3, "authors_dir": str(authors_dir)}
    worker = bench.WorkerProcess("theirs", config, cwd=str(tmp_path))
    try:
        for policy in ("mlp", "gru"):
            case = {"name": f"iteration/{policy}", "measure": "iteration", "policy": policy}
            assert worker.send("prepare", case) == {"ok": True}
            first, second = worker.send("run", case), worker.send("run", case)
            assert [first["info"]["episode"], second["info"]["episode"]] == [2, 3]  # after 1 warm-up episode
            for out in (first, second):
                assert out["wall_s"] > 0 and out["cpu_s"] > 0
                assert out["info"]["hvp"] == 20 and out["work"]["fisher_products"] == 20
                assert out["info"]["step_len"] == pytest.approx(0.9)
                work = out["work"]
                assert (work["users"], work["horizon"], work["samples"], work["slate_size_K"]) == (6, 10, 60, 1)
            expected = 20 * 64 + 64 + 64 * 4 + 4 + 4 if policy == "mlp" else None
            if expected is not None:
                assert first["work"]["actor_parameters"] == expected
        env_case = {"name": "env/K=2", "measure": "env", "k": 2}
        worker.send("prepare", env_case)
        out = worker.send("run", env_case)
        assert out["work"] == {"users": 6, "items": 12, "slate_size_K": 2, "steps": 3, "user_steps": 18,
                               "item_slots": 36}
        for policy in ("mlp", "gru"):
            case = {"name": f"eval/{policy}", "measure": "eval", "policy": policy}
            worker.send("prepare", case)
            out = worker.send("run", case)
            assert out["work"]["users"] == 6 and out["work"]["steps_L"] == 200 and out["cpu_s"] > 0
            assert out["info"]["ndcg@200"] == 0.0
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_their_training_failure_is_reported(bench, authors_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STAND_IN_FAIL_EPISODE", "2")
    config = {"dataset": "ml-100k", "warmup": 1, "repeats": 1, "env_steps": 1, "authors_dir": str(authors_dir)}
    worker = bench.WorkerProcess("theirs", config, cwd=str(tmp_path))
    case = {"name": "iteration/mlp", "measure": "iteration", "policy": "mlp"}
    try:
        worker.send("prepare", case)
        with pytest.raises(RuntimeError, match="stand-in failure in episode 2"):
            worker.send("run", case)
    finally:
        worker.close()


def test_broken_authors_module_stops_the_worker(bench, authors_dir, tmp_path):
    (authors_dir / "fcpo" / "cpo.py").write_text("raise ImportError('broken stand-in')\n")
    config = {"dataset": "ml-100k", "warmup": 0, "repeats": 1, "env_steps": 1, "authors_dir": str(authors_dir)}
    with pytest.raises(RuntimeError, match=r"(?s)theirs worker failed:.*ImportError: broken stand-in"):
        bench.WorkerProcess("theirs", config, cwd=str(tmp_path))
