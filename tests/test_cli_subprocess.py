"""The console scripts as a user runs them: each in a fresh process, on synthetic data with tiny sizes.

A fresh process is the point: it catches what in-process tests cannot (a registry filled only by an
import that the script never makes, slow imports behind ``--help``, tracebacks instead of messages,
files left behind, exit codes).  Each script is started the way its console-script wrapper does:
``sys.exit(main())`` of the entry point declared in setup.cfg.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("fcpo-train", "fcpo-eval", "fcpo-bench", "fcpo-align", "fcpo-plot")
TINY_TRAIN = ["--dataset", "synthetic", "--horizon", "3", "--threads", "1", "--no-progress", "--device", "cpu",
              "--set", "users_per_iteration=0.25", "--set", "critic_epochs=1", "--eval-protocol", "ranking"]


def _entry_points() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [x.strip() for x in cfg["options.entry_points"]["console_scripts"].splitlines() if x.strip()]
    return dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in lines))


ENTRY = _entry_points()


def _umask_022():
    os.umask(0o022)


def cli(script: str, *args: str, cwd: Path, timeout: float = 120, wait: bool = True):
    """Run ``script`` as its console-script wrapper would, in a fresh interpreter, from ``cwd``."""
    module, func = ENTRY[script].split(":")
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {func}; sys.exit({func}())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-c", code, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_umask_022)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_umask_022)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(proc, *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_setup_cfg_declares_every_script():
    assert set(ENTRY) == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_without_loading_torch(script, tmp_path):
    proc = cli(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {script}") and not proc.stderr
    module = ENTRY[script].split(":")[0]
    probe = subprocess.run([sys.executable, "-c", f"import sys; from {module} import build_parser; "
                            "build_parser().format_help(); print('torch' in sys.modules)"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert probe.stdout.strip() == "False", "--help must not import torch"
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_train_then_eval_then_resume_in_fresh_processes(tmp_path):
    proc = cli("fcpo-train", *TINY_TRAIN, "--iterations", "2", "--alpha", "0.6", "--run-dir", "runs",
               "--name", "tiny", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "tiny"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["env"]["id"] == "fcpo/MovieLensFair-v0" and cfg["env"]["dataset"] == "synthetic"
    assert cfg["threads"] == 1 and cfg["iterations"] == 2 and cfg["agent_config"]["alpha_prime"] == 0.6
    assert [json.loads(x)["iteration"] for x in (run / "log.jsonl").read_text().splitlines()] == [0, 1]
    for name in ("config.yaml", "checkpoint.pt", "metrics.json", "log.jsonl", "training_curves.png"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name  # the umask's, not mkstemp's 0600
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    # fcpo-eval in another process: the agent registry must fill itself
    proc = cli("fcpo-eval", str(run), "--protocol", "ranking", "--device", "cpu", "--threads", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run / "eval-test.json").read_text())
    assert report["protocol"] == "ranking" and 0 <= report["metrics"]["popularity_rate"] <= 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert report["metrics"] == pytest.approx(metrics["test"]["metrics"])  # same policy, same protocol
    # resume to 3 iterations
    proc = cli("fcpo-train", "--resume", str(run), "--iterations", "3", "--no-progress", "--no-eval", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "at iteration 2 of 3 on cpu, 1 thread(s)" in proc.stderr  # the stored --threads is used again
    assert [json.loads(x)["iteration"] for x in (run / "log.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 3
    # too few iterations: refused, nothing rewritten
    before = _snapshot(run)
    for total in ("3", "0"):
        proc = cli("fcpo-train", "--resume", str(run), "--iterations", total, "--no-progress", cwd=tmp_path)
        _one_line_error(proc, "--iterations")
    proc = cli("fcpo-train", "--resume", str(run), "--no-progress", cwd=tmp_path)  # already complete
    _one_line_error(proc, "already holds 3")
    assert _snapshot(run) == before


def test_list_params_and_print_config_write_nothing(tmp_path):
    proc = cli("fcpo-train", "--list-params", "--agent", "trpo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.startswith("  ") and
             not line.startswith("      ")]
    assert {"alpha_prime", "max_kl", "critic_epochs"} <= set(names)
    assert "default" in proc.stdout
    proc = cli("fcpo-train", "--print-config", "--dataset", "synthetic", "--alpha", "0.4", "--env-option",
               "popular_ratio=0.1", "--set", "max_kl=0.02", "--threads", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["env"]["popular_ratio"] == 0.1 and cfg["env"]["slate_size"] == 5  # defaults filled in
    assert cfg["agent_config"]["alpha_prime"] == 0.4 and cfg["agent_config"]["max_kl"] == 0.02
    assert cfg["threads"] == 2 and "environment" not in cfg
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script,args,expected", [
    ("fcpo-train", ["--dataset", "netflix"], "--dataset"),
    ("fcpo-train", ["--dataset", "synthetic", "--iterations", "0"], "--iterations"),
    ("fcpo-train", ["--dataset", "synthetic", "--alpha", "2"], "--alpha"),
    ("fcpo-train", ["--dataset", "synthetic", "--threads", "0"], "--threads"),
    ("fcpo-train", ["--dataset", "synthetic", "--set", "nonsense=1"], "unknown agent hyper-parameter"),
    ("fcpo-train", ["--dataset", "synthetic", "--env-option", "colour=red"], "colour"),
    ("fcpo-train", ["--env", "fcpo/Nope-v0"], "unknown env id"),
    ("fcpo-train", ["--agent", "nope", "--dataset", "synthetic"], "unknown agent 'nope'"),
    ("fcpo-train", ["--dataset", "synthetic", "--slate-size", "100000"], "exceeds"),
    ("fcpo-eval", ["no-such-run"], "no-such-run"),
    ("fcpo-bench", ["--methods", "nope"], "--methods"),
    ("fcpo-align", ["--negatives", "30", "--dataset", "synthetic"], "negatives"),
    ("fcpo-align", ["--resume", "no-such-run"], "no-such-run"),
])
def test_bad_flags_one_line_exit_2_no_folder(tmp_path, script, args, expected):
    proc = cli(script, *args, cwd=tmp_path)
    _one_line_error(proc, expected)
    assert not any(tmp_path.iterdir()), "a refused start must leave no run folder"


@pytest.mark.slow
def test_bench_quick_writes_a_run_folder_not_the_source_tree(tmp_path):
    proc = cli("fcpo-bench", "--dataset", "synthetic", "--quick", "--methods", "fcpo", "popularity", "--alphas", "0.4",
               "--no-long-term", "--workers", "1", "--ray", "no", "--no-progress", cwd=tmp_path, timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.startswith("bench-synthetic-")
    payload = json.loads((out / "synthetic.json").read_text())
    failed = [c for c in payload["checks"] if not c["holds"]]
    assert proc.returncode == (1 if failed else 0), proc.stderr  # a failed check fails the command
    assert ("check(s) failed" in proc.stderr) == bool(failed)
    assert {r["method"] for r in payload["rows"]} == {"fcpo a'=0.4", "popularity"}
    assert (out / "jobs" / "fcpo-a0.4-s0" / "checkpoint.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_align_tiny_run_refuses_its_name_and_resumes(tmp_path):
    args = ["--method", "dpo", "--dataset", "synthetic", "--dim", "8", "--sft-epochs", "1", "--sft-lr", "0.01",
            "--pref-epochs", "0.5", "--max-train-users", "60", "--max-test-users", "20", "--threads", "1",
            "--run-dir", "runs", "--name", "a1", "--no-progress"]
    proc = cli("fcpo-align", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "a1"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert Path(cfg["data_dir"]).is_absolute() and "torch" in cfg["environment"]
    for name in ("metrics.json", "log.jsonl", "policy.pt", "checkpoint.pt", "training_curves.png"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert 0 <= final["hr1"] <= 1 and final["n_test_users"] == 20
    n_sft_steps = sum(json.loads(x).get("stage") == "sft" for x in (run / "log.jsonl").read_text().splitlines())
    assert n_sft_steps > 0
    before = _snapshot(run)
    _one_line_error(cli("fcpo-align", *args, cwd=tmp_path), "exists")  # the same --name again
    _one_line_error(cli("fcpo-align", "--resume", str(run), cwd=tmp_path), "complete")
    assert _snapshot(run) == before
    # an interrupted run (no metrics.json, extra log lines after the SFT checkpoint) resumes from SFT
    (run / "metrics.json").unlink()
    with open(run / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"stage": "dpo1", "step": 999, "loss": 1.0}) + "\n")
    proc = cli("fcpo-align", "--resume", str(run), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert sum(r.get("after") == "sft" for r in log) == 1 and not any(r.get("step") == 999 for r in log)
    assert sum(r.get("stage") == "sft" for r in log) == n_sft_steps  # SFT came from the checkpoint, not retrained
    metrics = json.loads((run / "metrics.json").read_text())
    sft_eval = next(r for r in log if r.get("after") == "sft")
    assert metrics["after_sft"]["hr1"] == sft_eval["hr1"] and metrics["final"]["n_test_users"] == 20


@pytest.mark.slow
def test_ctrl_c_during_start_up_exits_quietly(tmp_path):
    proc = cli("fcpo-train", *TINY_TRAIN, "--iterations", "500", "--run-dir", "runs", "--name", "cc", cwd=tmp_path,
               wait=False)
    time.sleep(3.0)  # past the imports: argument parsing, data, agent construction or the first iterations
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err.strip().splitlines()[-1]
    run = tmp_path / "runs" / "cc"
    assert not run.exists() or (run / "config.yaml").is_file()  # no half-made folder


def test_constraint_flag_reaches_the_config_and_resume_refuses_it(tmp_path):
    """``--constraint`` is stored in the resolved config (default per-slate); old runs without the key are rebuilt
    in the mode they were trained with (expected)."""
    import yaml as _yaml

    from fcpo import runs as _runs

    out = subprocess.run([sys.executable, "-m", "fcpo.cli.train", "--dataset", "synthetic", "--alpha", "0.4",
                          "--constraint", "expected", "--print-config"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert _yaml.safe_load(out.stdout)["agent_config"]["constraint"] == "expected"
    out = subprocess.run([sys.executable, "-m", "fcpo.cli.train", "--dataset", "synthetic", "--print-config"],
                         capture_output=True, text=True, timeout=300)
    assert _yaml.safe_load(out.stdout)["agent_config"]["constraint"] == "per-slate"
    bad = subprocess.run([sys.executable, "-m", "fcpo.cli.train", "--constraint", "sometimes"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    legacy = _runs.resolve(_runs.RunConfig(agent="fcpo", env={"id": _runs.DEFAULT_ENV_ID, "dataset": "synthetic"}))
    legacy.agent_config.pop("constraint")
    agent = _runs.build_agent(legacy, "cpu")
    assert agent.config.constraint == "expected" and agent.policy.deploy_mode == "sample"
