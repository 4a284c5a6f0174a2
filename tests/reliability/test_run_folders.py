"""Run folders: taken names, the run lock, partial logs, checkpoint-less runs, stale temp files,
damaged checkpoints and configs, permissions.  Each case checks the message and what is on disk."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from fcpo import runs
from fcpo.cli import evaluate, train
from tests.reliability.conftest import TINY, assert_one_line_error, call, snapshot


def _iterations(run):
    return [json.loads(x)["iteration"] for x in (run / runs.LOG).read_text().splitlines() if x.strip()]


def _ckpt_iteration(run):
    return torch.load(run / runs.CHECKPOINT, weights_only=True)["iteration"]


def test_taken_name_is_refused_and_the_old_run_is_untouched(run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = call(train.main, [*TINY, "--iterations", "3", "--run-dir", run_copy.parent, "--name", "r"], capsys)
    assert_one_line_error(code, err, "exists", "--resume")
    assert snapshot(run_copy) == before


def test_second_process_on_a_locked_run_gets_one_line_and_changes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    with runs.run_lock(run_copy):  # a new open file description: flock refuses it like another process
        code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "in use", str(run_copy))
    assert snapshot(run_copy) == before


def test_lock_dies_with_a_killed_process(run_copy):
    code = textwrap.dedent(f"""
        import os, sys, time
        from fcpo import runs
        with runs.run_lock({str(run_copy)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunBusy):
            with runs.run_lock(run_copy):
                pass
    finally:
        proc.kill()
        proc.wait()
    with runs.run_lock(run_copy):  # kill -9 released it
        pass


def test_two_concurrent_resumes_one_wins_the_log_is_not_interleaved(run_copy, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "import sys; from fcpo.cli.train import main; sys.exit(main())",
           "--resume", str(run_copy), "--iterations", "4", "--no-progress", "--no-eval"]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert_one_line_error(2, loser, "in use")
    assert _iterations(run_copy) == [0, 1, 2, 3] and _ckpt_iteration(run_copy) == 3


def test_partial_last_log_line_is_dropped_with_a_warning_and_resume_works(run_copy, capsys):
    with open(run_copy / runs.LOG, "a") as fh:
        fh.write('{"iteration": 2, "rew')  # a write cut short
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress", "--no-eval"], capsys)
    assert code == 0, err
    assert "warning" in err and "partial last record" in err and "Traceback" not in err
    assert _iterations(run_copy) == [0, 1, 2]


def test_bad_line_inside_the_log_names_file_and_line(run_copy, capsys):
    lines = (run_copy / runs.LOG).read_text().splitlines()
    (run_copy / runs.LOG).write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    before = snapshot(run_copy)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "log.jsonl", "line 2")
    assert snapshot(run_copy) == before


def test_run_killed_before_its_first_checkpoint_resumes_from_zero(run_copy, capsys):
    (run_copy / runs.CHECKPOINT).unlink()
    (run_copy / runs.LOG).write_text('{"iteration": 0, "reward": 1.0}\n')  # logged, never checkpointed
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "1", "--no-progress", "--no-eval"], capsys)
    assert code == 0, err
    assert "at iteration 0 of 1" in err and "from the beginning" in err
    assert _iterations(run_copy) == [0] and _ckpt_iteration(run_copy) == 0


@pytest.mark.parametrize("total", ["-1", "0"])
def test_resume_with_a_nonpositive_total_is_refused(run_copy, total, capsys):
    before = snapshot(run_copy)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", total, "--no-progress"], capsys)
    assert_one_line_error(code, err, "--iterations")
    assert snapshot(run_copy) == before


def test_resume_refuses_settings_flags(run_copy, capsys):
    code, _, err = call(train.main, ["--resume", run_copy, "--set", "hidden=8"], capsys)
    assert_one_line_error(code, err, "--set")


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = call(train.main, ["--resume", tmp_path / "empty"], capsys)
    assert_one_line_error(code, err, "config.yaml")


def test_stale_temp_files_are_swept_on_resume_and_nothing_else(run_copy, capsys):
    stale = [run_copy / ".checkpoint.pt.x1y2.tmp", run_copy / ".log.jsonl.abc.tmp", run_copy / "data.zip.part"]
    for path in stale:
        path.write_bytes(b"half")
    (run_copy / "notes.txt").write_text("keep")
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress", "--no-eval"], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and (run_copy / "notes.txt").read_text() == "keep"


DAMAGE = {
    "truncated": lambda b: b[: len(b) // 2],
    "garbage": lambda b: b"\x00\x01 not a checkpoint \xff" * 10,
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_checkpoint_is_one_line_naming_it_and_nothing_is_rewritten(run_copy, kind, capsys):
    path = run_copy / runs.CHECKPOINT
    path.write_bytes(DAMAGE[kind](path.read_bytes()))
    before = snapshot(run_copy)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt")
    assert snapshot(run_copy) == before


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_payload_checkpoint_is_refused_without_running_it(run_copy, tmp_path, capsys):
    torch.save({"iteration": 1, "agent": {"x": _Payload()}}, run_copy / runs.CHECKPOINT)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt")
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_of_another_shape_does_not_fit(run_copy, capsys):
    ckpt = torch.load(run_copy / runs.CHECKPOINT, weights_only=True)
    ckpt["agent"] = {k: ({} if isinstance(v, dict) else v) for k, v in ckpt["agent"].items()}
    torch.save(ckpt, run_copy / runs.CHECKPOINT)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt", "does not fit")


def test_checkpoint_without_iteration_is_not_a_run_checkpoint(run_copy, capsys):
    torch.save({"agent": {}}, run_copy / runs.CHECKPOINT)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt", "not a run checkpoint")


def test_non_finite_checkpoint_on_disk_is_refused_on_load(run_copy, capsys):
    ckpt = torch.load(run_copy / runs.CHECKPOINT, weights_only=True)
    value = ckpt["agent"]["value_r"]
    key = next(k for k, v in value.items() if torch.is_tensor(v) and v.is_floating_point())
    value[key] = torch.full_like(value[key], float("nan"))
    torch.save(ckpt, run_copy / runs.CHECKPOINT)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt", "non-finite", f"value_r.{key}")


@pytest.mark.parametrize("text", [b"\xff\xfe\x00\x80", b"agent: [unclosed\n", b"!!python/name:os.system\n",
                                  b"iterations: 2.5\n"])
def test_damaged_config_yaml_is_one_line_naming_it(run_copy, text, capsys):
    (run_copy / runs.CONFIG).write_bytes(text)
    before = snapshot(run_copy)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "config.yaml")
    assert snapshot(run_copy) == before


def test_eval_of_a_damaged_checkpoint_is_one_line(run_copy, capsys):
    (run_copy / runs.CHECKPOINT).write_bytes(b"PK\x03\x04 broken zip")
    code, _, err = call(evaluate.main, [run_copy, "--device", "cpu", "--threads", "1"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt")
    assert not (run_copy / "eval-test.json").exists()


def test_config_yaml_typed_on_load(run_copy):
    cfg = yaml.safe_load((run_copy / runs.CONFIG).read_text())
    cfg["agent_config"]["critic_lr"] = "1e-4"  # what YAML 1.1 makes of 1e-4
    (run_copy / runs.CONFIG).write_text(yaml.safe_dump(cfg))
    assert runs.load_config(run_copy).agent_config["critic_lr"] == 1e-4


def test_run_files_follow_the_umask(trained_run):
    for name in (runs.CONFIG, runs.CHECKPOINT, runs.LOG):
        mode = stat.S_IMODE((trained_run / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
