"""``fcpo.load_run`` on a run that another process trained, ``recommend``, the end-of-training summary,
the training plot, and a light ``import fcpo``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fcpo
from fcpo import runs
from fcpo.evaluate.evaluator import _run_once

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--horizon", "3", "--threads", "1", "--no-progress", "--device", "cpu",
        "--set", "users_per_iteration=0.25", "--set", "critic_epochs=1", "--iterations", "2", "--alpha", "0.4"]


def fresh_process(*args: str, cwd: Path, code: str | None = None, timeout: float = 240):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    code = code or "import sys; sys.argv[0] = 'fcpo-train'; from fcpo.cli.train import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, fcpo-train's stdout) of a tiny FCPO run trained by a separate process."""
    parent = tmp_path_factory.mktemp("api")
    proc = fresh_process(*TINY, "--name", "tiny", cwd=parent)
    assert proc.returncode == 0, proc.stderr
    return parent / "runs" / "tiny", proc.stdout


@pytest.fixture(scope="module")
def run(trained):
    return fcpo.load_run(trained[0])


def test_load_run_restores_config_agent_and_metrics(trained, run):
    folder, _ = trained
    assert run.config.to_dict() == runs.load_config(folder).to_dict()
    assert run.env_spec.id == "fcpo/MovieLensFair-v0" and run.env_spec.option("dataset") == "synthetic"
    assert run.iterations_done == 2 and [r["iteration"] for r in run.records] == [0, 1]
    assert run.metrics == json.loads((folder / "metrics.json").read_text())
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)["agent"]["policy"]
    for name, value in run.policy.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert run.deploy_mode == "greedy" and "tiny" in repr(run)


def test_recommend_is_the_evaluators_ranking_list(run):
    env = run.env_spec.make_vector(cover_all_users=True, mode="test")
    env.reset(options={"users": np.arange(env.n_users)})
    reference = _run_once(run.policy, env, "ranking", 5, 1, "greedy", 0, "cpu")[0]  # [U, 5] dense items
    data = env.env_data
    raw_users = data.data.user_raw_ids[data.split.user_ids]
    for row in (0, 7, env.n_users - 1):
        recs = run.recommend(int(raw_users[row]))
        assert [r.item for r in recs] == reference[row].tolist()
        assert [r.rank for r in recs] == [1, 2, 3, 4, 5]


def test_recommend_rows_name_raw_ids_titles_groups_and_scores(run):
    env = run.env()
    data = env.env_data.data
    user = int(run.users()[3])
    recs = run.recommend(user, k=8)
    assert len(recs) == 8 and len({r.item for r in recs}) == 8
    with torch.no_grad():
        scores = run.policy.scores(_state_of(run, user))[0]
    for r in recs:
        assert r.item_id == int(data.item_raw_ids[r.item]) and r.title == str(data.item_titles[r.item])
        assert r.group == ("G0" if env.is_popular[r.item] else "G1")
        assert r.score == pytest.approx(float(scores[r.item]))
    text = str(recs)
    assert text.splitlines()[0].startswith(f"user {user}: 8 items (greedy)")
    assert len(text.splitlines()) == 10 and recs[0].title in text
    assert list(recs.to_frame().index) == list(range(1, 9))


def _state_of(run, raw_user):
    from fcpo.policies.base import SlateState

    env = run.env()
    row = run._user_row(raw_user)
    obs, _ = env.reset(options={"users": np.array([row])})
    return SlateState.from_numpy(obs, env.history, env.env_data.split.user_ids[env.user_rows])


def test_recommend_leaves_out_what_the_user_has_seen(run):
    env = run.env()
    split, data = env.env_data.split, env.env_data.data
    for user in run.users()[:20]:
        dense = int(np.flatnonzero(data.user_raw_ids == user)[0])
        rated_in_train = set(data.items[(data.users == dense) & split.train_mask].tolist())
        row = int(np.flatnonzero(split.user_ids == dense)[0])
        history = set(split.test_initial[row].tolist())
        items = {r.item for r in run.recommend(int(user), k=20)}
        assert not items & (rated_in_train | history)
        assert not {r.item for r in run.recommend(int(user), k=20, exclude_seen=False)} & history


def test_recommend_errors_name_the_user(run):
    with pytest.raises(ValueError, match=r"user 987654 is not in synthetic"):
        run.recommend(987654)
    with pytest.raises(ValueError, match="integer raw id"):
        run.recommend("abc")
    with pytest.raises(ValueError, match="k must lie in"):
        run.recommend(int(run.users()[0]), k=0)


def test_recommend_refuses_a_user_the_split_dropped(run, monkeypatch):
    real = run.env().env_data
    first = int(real.data.user_raw_ids[real.split.user_ids[0]])
    without_first = SimpleNamespace(env_data=SimpleNamespace(
        data=real.data, split=SimpleNamespace(user_ids=real.split.user_ids[1:], threshold=4.0)))
    monkeypatch.setattr(run, "env", lambda: without_first)
    with pytest.raises(ValueError, match=rf"user {first} of synthetic has too few positive ratings \(>= 4\)"):
        run.recommend(first)


def test_recommend_uses_the_policys_deploy_mode(run, monkeypatch):
    seen = []
    original = run.policy.act

    def spy(state, k, mode="greedy", exclude=None, generator=None):
        seen.append(mode)
        return original(state, k, mode=mode, exclude=exclude, generator=generator)

    monkeypatch.setattr(run.policy, "act", spy)
    monkeypatch.setattr(run.policy, "deploy_mode", "sample", raising=False)
    user = int(run.users()[0])
    a, b = run.recommend(user, seed=3), run.recommend(user, seed=3)
    assert seen == ["sample", "sample"] and a.item_ids() == b.item_ids() and a.mode == "sample"


def test_train_prints_the_summary(trained):
    folder, stdout = trained
    metrics = json.loads((folder / "metrics.json").read_text())
    last = runs.read_jsonl(folder / "log.jsonl")[-1]
    assert f"final training cost       {last['cost']:.4g} G0 items per episode vs limit {last['cost_limit']:.4g}" \
        in stdout
    view = metrics["constraint_on_test"]
    assert f"test popular share        {100 * view['popular_share']:.1f} % vs α' = 40 %" in stdout
    # the default constraint mode is per-slate: judged on the maximum per-step share, which the cap keeps <= α'
    assert view["rule"].startswith("per-slate") and view["max_step_share"] <= 0.4 and view["met"] is True
    assert "constraint met on test:   yes (per-slate: max per-step share" in stdout


# ------------------------------------------------------------------ the summary on hand-made numbers
def _config(**agent):
    return runs.RunConfig(agent="fcpo", iterations=2, env={"id": runs.DEFAULT_ENV_ID, "slate_size": 5, "horizon": 10},
                          agent_config={"alpha_prime": 0.4, **agent})


RECORDS = [{"iteration": 0, "reward": 1.0, "cost": 30.0, "cost_limit": 20.0},
           {"iteration": 1, "reward": 2.5, "cost": 19.0, "cost_limit": 19.2}]


def _test_report(share, per_step, constraint=None):
    report = {"protocol": "rollout", "k": 5, "steps": len(per_step), "metrics": {"popularity_rate": share},
              "popular_share_per_step": per_step}
    if constraint is not None:
        report["constraint"] = constraint
    return report


def test_summary_lines_expected_mode():
    text = runs.training_summary(_config(), RECORDS, {"test": _test_report(0.38, [0.5, 0.26])}, "runs/x")
    assert text.splitlines() == [
        "summary of runs/x (2 iteration(s), α' = 0.4, K = 5)",
        "  final training reward     2.5 per episode",
        "  final training cost       19 G0 items per episode vs limit 19.2 (α'·K = 2 per step × 9.6 steps): within",
        "  test popular share        38.0 % vs α' = 40 % (max per-step share 50.0 %)",
        "  constraint met on test:   yes (expected: mean share 38.0 % ≤ α' 40 %)",
    ]


def test_summary_per_slate_mode_judges_the_worst_step():
    text = runs.training_summary(_config(constraint="per-slate"), RECORDS,
                                 {"test": _test_report(0.38, [0.5, 0.26])})
    assert text.splitlines()[-1] == "  constraint met on test:   no (per-slate: max per-step share 50.0 % > α' 40 %)"
    ok = runs.training_summary(_config(constraint="per-slate"), RECORDS, {"test": _test_report(0.3, [0.4, 0.2])})
    assert ok.splitlines()[-1].startswith("  constraint met on test:   yes")


def test_summary_reads_the_reports_constraint_block_when_present():
    block = {"popular_share": 0.36, "max_step_share": 0.4, "per_slate_ok": False, "popular_share_per_step": [0.4]}
    report = _test_report(0.99, [0.99], constraint=block)
    verdict = runs.constraint_on_test({"alpha_prime": 0.4, "constraint": "per-slate"}, report)
    assert verdict == {"alpha_prime": 0.4, "rule": "per-slate", "popular_share": 0.36, "max_step_share": 0.4,
                       "met": False}  # one slate above the cap ⌊α'K⌋ fails, though the worst step's share is α'
    assert runs.constraint_on_test({"alpha_prime": 0.4}, report)["met"] is True  # expected: 36 % ≤ 40 %


def test_summary_of_an_unconstrained_agent_says_so():
    text = runs.training_summary(_config(constrained=False), RECORDS, {"test": _test_report(0.7, [0.7])})
    assert text.endswith("> α' 40 %; this agent is unconstrained, α' is only reported)")


def test_training_plot_has_reward_cost_and_share_panels(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(runs, "save_figure", lambda fig, path, **kw: titles.extend(
        (ax.get_title(), [tuple(line.get_ydata())[:2] for line in ax.get_lines()]) for ax in fig.axes) or path)
    records = [{**r, "popular_share": s, "cpo_case": c} for r, s, c in
               zip(RECORDS, (0.6, 0.38), ("infeasible_recoverable", "feasible"))]
    runs.plot_training(tmp_path, records, alpha_prime=0.4)
    by_title = dict(titles)
    assert set(by_title) == {"training reward", "training cost vs the limit", "popular share vs α'"}
    cost_lines = by_title["training cost vs the limit"]
    assert cost_lines[0] == (30.0, 19.0) and cost_lines[1] == (20.0, 19.2)  # the logged cost_limit, not α'·K·T
    assert cost_lines[2] == (30.0,)  # the one iteration CPO judged infeasible
    assert by_title["popular share vs α'"][1] == (40.0, 40.0)


def test_import_fcpo_is_light_and_registers_the_envs(tmp_path):
    code = ("import sys, fcpo, gymnasium as gym; heavy = sorted({'torch', 'pandas', 'scipy', 'fcpo.envs'} & "
            "set(sys.modules)); print(heavy); print(sorted(i for i in gym.registry if i.startswith('fcpo/'))); "
            "env = gym.make('fcpo/MovieLensFair-v0', dataset='synthetic'); print(env.reset(seed=0)[0].shape); "
            "print(callable(fcpo.load_run))")
    proc = fresh_process(cwd=tmp_path, code=code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "['fcpo/MovieLensFair-v0', 'fcpo/MovieLensSim-v0']"
    assert lines[3] == "True"
