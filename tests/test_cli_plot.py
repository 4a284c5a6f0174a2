"""``fcpo-plot``: two seeds trained by fcpo-train in other processes, plotted by a fresh fcpo-plot process;
the table and the seed bands on hand-made run folders with known numbers; errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcpo import runs
from fcpo.cli import plot

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--horizon", "3", "--threads", "1", "--no-progress", "--device", "cpu",
        "--set", "users_per_iteration=0.25", "--set", "critic_epochs=1", "--iterations", "2", "--alpha", "0.4"]


def script(name: str, module: str, *args: str, cwd: Path, timeout: float = 240):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    parent = tmp_path_factory.mktemp("plot")
    for seed in (0, 1):
        proc = script("fcpo-train", "fcpo.cli.train", *TINY, "--seed", str(seed), "--name", f"s{seed}", cwd=parent)
        assert proc.returncode == 0, proc.stderr
    return parent


def test_plot_two_seeds_in_a_fresh_process(two_seeds):
    proc = script("fcpo-plot", "fcpo.cli.plot", "runs/s0", "runs/s1", "--out", "cmp.png", cwd=two_seeds)
    assert proc.returncode == 0, proc.stderr
    png = two_seeds / "cmp.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert (two_seeds / "cmp.md").read_text() == proc.stdout
    lines = proc.stdout.splitlines()
    first = json.loads((two_seeds / "runs" / "s0" / "metrics.json").read_text())["test"]
    cut = first["k"] * first["steps"]
    assert lines[0].startswith(f"| run | agent | α' | seed | iterations | F1@{cut} % | NDCG@{cut} % | popular share %")
    assert len(lines) == 4
    for line, name in zip(lines[2:], ("s0", "s1")):
        test = json.loads((two_seeds / "runs" / name / "metrics.json").read_text())["test"]
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:5] == [name, "fcpo", "0.4", name[1], "2/2"]
        assert cells[5] == f"{100 * test['metrics'][f'f1@{cut}']:.2f}"
        view = test.get("constraint") or {"popular_share": test["metrics"]["popularity_rate"],
                                          "max_step_share": max(test["popular_share_per_step"])}
        assert cells[7] == f"{100 * view['popular_share']:.2f}"  # the evaluator's constraint view when it has one
        assert cells[8] == f"{100 * view['max_step_share']:.2f}"


def test_seeds_of_one_setting_are_one_band(two_seeds):
    loaded = [plot.load(str(two_seeds / "runs" / n)) for n in ("s0", "s1")]
    groups = plot.group_runs(loaded)
    assert [(label, len(m)) for label, m in groups] == [("fcpo α'=0.4 synthetic (seeds 0,1: mean ± sd)", 2)]
    its, mean, sd = plot._curve(groups[0][1], "reward")
    rewards = np.array([[r["reward"] for r in run.records] for run in loaded])
    assert its.tolist() == [0, 1]
    np.testing.assert_allclose(mean, rewards.mean(axis=0))
    np.testing.assert_allclose(sd, rewards.std(axis=0))
    assert [len(m) for _, m in plot.group_runs(loaded, grouped=False)] == [1, 1]
    again = plot.load(str(two_seeds / "runs" / "s0"))
    assert [len(m) for _, m in plot.group_runs([loaded[0], again])] == [1, 1]


# ------------------------------------------------------------------ hand-made run folders
def fake_run(parent: Path, name: str, agent="fcpo", seed=0, alpha=0.4, rewards=(1.0, 2.0), test=None,
             constraint_mode=None) -> Path:
    agent_config = {"alpha_prime": alpha, **({"constraint": constraint_mode} if constraint_mode else {})}
    config = runs.RunConfig(agent=agent, seed=seed, iterations=len(rewards),
                            env={"id": runs.DEFAULT_ENV_ID, "dataset": "synthetic"}, agent_config=agent_config)
    folder = runs.create_run(parent, name, config, record_environment=False)
    for it, r in enumerate(rewards):
        runs.append_jsonl(folder / runs.LOG, {"iteration": it, "reward": r, "cost": 10.0 - it, "cost_limit": 8.0,
                                              "popular_share": 0.5 - 0.1 * it})
    if test is not None:
        runs.write_json(folder / runs.METRICS, {"agent": agent, "test": test})
    return folder


def rollout_report(f1, ndcg, share, per_step):
    return {"protocol": "rollout", "k": 5, "steps": 2, "metrics": {"f1@10": f1, "ndcg@10": ndcg,
                                                                   "popularity_rate": share},
            "popular_share_per_step": per_step}


def test_table_rows_on_known_numbers(tmp_path):
    a = fake_run(tmp_path, "a", test=rollout_report(0.1234, 0.5, 0.38, [0.5, 0.26]))
    b = fake_run(tmp_path, "b", seed=1, constraint_mode="per-slate", test=rollout_report(0.2, 0.25, 0.38, [0.5, 0.26]))
    c = fake_run(tmp_path, "c", agent="trpo", alpha=1.0)
    header, rows = plot.table_rows([plot.load(str(p)) for p in (a, b, c)])
    assert header == ["run", "agent", "α'", "seed", "iterations", "F1@10 %", "NDCG@10 %", "popular share %",
                      "max per-step share %", "constraint met"]
    assert rows == [
        ["a", "fcpo", "0.4", "0", "2/2", "12.34", "50.00", "38.00", "50.00", "yes (expected)"],
        ["b", "fcpo", "0.4", "1", "2/2", "20.00", "25.00", "38.00", "50.00", "no (per-slate)"],
        ["c", "trpo", "1", "0", "2/2", "–", "–", "–", "–", "no test metrics"],
    ]
    md = plot.markdown(header, rows).splitlines()
    assert md[1] == "|---|---|---|---|---|---|---|---|---|---|" and md[2].startswith("| a | fcpo | 0.4 |")
    # b differs from a by its constraint mode: not a seed of a, so two groups (and c a third)
    assert [len(m) for _, m in plot.group_runs([plot.load(str(p)) for p in (a, b, c)])] == [1, 1, 1]


def test_seed_band_on_known_numbers(tmp_path):
    loaded = [plot.load(str(fake_run(tmp_path, f"s{s}", seed=s, rewards=r)))
              for s, r in ((0, (1.0, 2.0, 3.0)), (1, (3.0, 4.0)))]
    (label, members), = plot.group_runs(loaded)
    its, mean, sd = plot._curve(members, "reward")
    assert its.tolist() == [0, 1, 2] and mean.tolist() == [2.0, 3.0, 3.0]
    assert sd[:2].tolist() == [1.0, 1.0] and np.isnan(sd[2])  # no band where one seed is left


def test_main_writes_png_and_table(tmp_path, capsys):
    a = fake_run(tmp_path, "a", test=rollout_report(0.1, 0.2, 0.3, [0.3, 0.3]))
    out = tmp_path / "fig.png"
    assert plot.main([str(a), "--out", str(out), "--metric", "reward", "cost"]) == 0
    assert out.is_file() and (tmp_path / "fig.md").read_text() == capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["{tmp}"], "config.yaml: not an fcpo run folder"),
    (["{tmp}/missing"], "missing: no such folder"),
    (["{run}", "--metric", "bogus"], "--metric bogus: not in the runs' log.jsonl; logged keys: cost, cost_limit"),
    (["{run}", "--out", "x.pdf"], "--out x.pdf: give a .png file name"),
])
def test_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    folder = fake_run(tmp_path / "r", "a")
    argv = [a.format(tmp=tmp_path, run=folder) for a in argv]
    with pytest.raises(SystemExit) as exc:
        plot.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("fcpo-plot: error: ") and message in err[0]


def test_not_a_run_folder_in_a_fresh_process(tmp_path):
    proc = script("fcpo-plot", "fcpo.cli.plot", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"fcpo-plot: error: {tmp_path}/config.yaml: not an fcpo run folder (no config.yaml)"
