"""Non-finite state, full and read-only disks (injected ENOSPC/EROFS), Ctrl-C at the worst moment,
kill -9 during training, line-search trials that cannot be evaluated, and env API misuse."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fcpo import runs
from fcpo.agents.checkpoint import Checkpointed, NonFiniteState, check_finite_state
from fcpo.cli import evaluate, train
from fcpo.solvers.line_search import backtracking_line_search
from tests.reliability.conftest import TINY, assert_one_line_error, call, snapshot


def _iterations(run):
    return [json.loads(x)["iteration"] for x in (run / runs.LOG).read_text().splitlines() if x.strip()]


def _ckpt_iteration(run):
    return torch.load(run / runs.CHECKPOINT, weights_only=True)["iteration"]


def _temps(folder):
    return [p.name for p in folder.iterdir() if runs._is_stale_temp(p.name)]


class ToyAgent(Checkpointed):
    """One weight vector; ``blow_up_at`` makes that iteration's update NaN (a diverging critic)."""

    _checkpointed = ("weight", "steps")

    def __init__(self, blow_up_at: int | None = None, hook=None):
        self.weight, self.steps, self.blow_up_at, self.hook = np.zeros(3), 0, blow_up_at, hook

    def train_iteration(self, it):
        self.weight = self.weight + 1.0 if it != self.blow_up_at else self.weight * float("nan")
        self.steps += 1
        if self.hook:
            self.hook(it)
        return {"reward": float(it)}


# ------------------------------------------------------------------ non-finite state
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_save_checkpoint_refuses_non_finite_and_keeps_the_previous(tmp_path, bad):
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint(path, {"iteration": 0, "agent": {"w": torch.ones(2)}})
    before = path.read_bytes()
    with pytest.raises(NonFiniteState, match=r"agent\.opt\.state\[0\]"):
        runs.save_checkpoint(path, {"iteration": 1,
                                    "agent": {"w": torch.ones(2), "opt": {"state": [torch.tensor([bad])]}}})
    assert path.read_bytes() == before and _temps(tmp_path) == []


def test_non_finite_entries_ignores_integer_tensors_and_finds_numpy_and_floats():
    from fcpo.agents.checkpoint import non_finite_entries

    state = {"i": torch.arange(3), "a": np.array([1.0, np.nan]), "f": float("inf"), "ok": 1.5, "s": "nan"}
    assert non_finite_entries(state) == ["a", "f"]
    check_finite_state({"i": torch.arange(3), "ok": 2.0}, "x")  # no error


def test_train_loop_diverging_iteration_writes_nothing_of_it(tmp_path):
    agent = ToyAgent(blow_up_at=2)
    with pytest.raises(NonFiniteState, match="iteration 2.*checkpoint of iteration 1 is kept"):
        runs.train_loop(agent, tmp_path, 0, 4, progress=False, tensorboard=False)
    assert _iterations(tmp_path) == [0, 1] and _ckpt_iteration(tmp_path) == 1
    ckpt = runs.load_checkpoint(tmp_path / runs.CHECKPOINT)
    assert torch.equal(ckpt["agent"]["weight"], torch.full((3,), 2.0, dtype=torch.float64))


def test_diverging_critic_never_reaches_disk_and_resume_still_works(tmp_path, capsys):
    """critic_lr=1e30: whatever the run does, it ends with one line and every checkpoint on disk is finite."""
    code, _, err = call(train.main, [*TINY, "--iterations", "3", "--name", "d", "--set", "critic_lr=1e30"], capsys)
    run = tmp_path / "runs" / "d"
    if code != 0:
        assert_one_line_error(code, err)
    if (run / runs.CHECKPOINT).exists():
        runs.load_checkpoint(run / runs.CHECKPOINT)  # loads: finite
        assert _iterations(run) == list(range(_ckpt_iteration(run) + 1))
    else:
        assert not run.exists()  # a new run that failed before its first checkpoint leaves no folder


def test_diverging_critic_error_names_critic_lr(tmp_path, capsys):
    code, _, err = call(train.main, [*TINY, "--iterations", "3", "--name", "d", "--set", "critic_lr=1e30"], capsys)
    assert_one_line_error(code, err, "critic_lr")


def test_huge_max_kl_trains_instead_of_crashing(tmp_path, capsys):
    code, _, err = call(train.main, [*TINY, "--iterations", "1", "--name", "k", "--set", "max_kl=1e9"], capsys)
    assert code == 0, err
    assert _iterations(tmp_path / "runs" / "k") == [0]


def test_line_search_treats_an_unevaluable_candidate_as_a_rejected_trial():
    theta, direction = torch.zeros(2), torch.tensor([4.0, 0.0])

    def evaluate(p):
        if p[0] > 2.0:  # like a Normal whose scale overflowed: argument validation raises
            torch.distributions.Normal(0.0, torch.tensor(-1.0), validate_args=True)
        return float(p[0]), 0.0, float(p[0]) * 0.01

    result = backtracking_line_search(evaluate, theta, direction, c=-1.0, delta=1.0, backtrack_ratio=0.5)
    assert [t.reason for t in result.trials] == ["invalid", "accepted"]
    assert result.accepted and result.fraction == 0.5 and torch.equal(result.params, torch.tensor([2.0, 0.0]))


def test_line_search_all_invalid_returns_theta():
    def evaluate(p):
        if bool((p != 0).any()):
            raise ValueError("bad candidate")
        return 0.0, 0.0, 0.0

    result = backtracking_line_search(evaluate, torch.zeros(2), torch.ones(2), c=-1.0, delta=1.0, max_backtracks=3)
    assert not result.accepted and [t.reason for t in result.trials] == ["invalid"] * 3
    assert torch.equal(result.params, torch.zeros(2))


# ------------------------------------------------------------------ disks (injected OSError)
def test_enospc_on_checkpoint_during_resume_keeps_the_previous(run_copy, monkeypatch, capsys):
    before = (run_copy / runs.CHECKPOINT).read_bytes()
    monkeypatch.setenv(runs.FAULT_ENV, "ENOSPC:checkpoint.pt")
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress", "--no-eval"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt", "No space left", "--resume")
    assert (run_copy / runs.CHECKPOINT).read_bytes() == before and _temps(run_copy) == []
    monkeypatch.delenv(runs.FAULT_ENV)
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress", "--no-eval"], capsys)
    assert code == 0, err
    assert _iterations(run_copy) == [0, 1, 2] and _ckpt_iteration(run_copy) == 2  # log-then-checkpoint made good


def test_enospc_on_the_log_leaves_log_and_checkpoint_as_they_were(run_copy, monkeypatch, capsys):
    before = snapshot(run_copy)
    monkeypatch.setenv(runs.FAULT_ENV, "ENOSPC:log.jsonl")
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress", "--no-eval"], capsys)
    assert_one_line_error(code, err, "log.jsonl", "No space left")
    after = snapshot(run_copy)
    for name in (runs.LOG, runs.CHECKPOINT):  # (config.yaml records the new total, 3, by design)
        assert after[name] == before[name], name
    assert _temps(run_copy) == []


def test_erofs_on_a_new_run_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(runs.FAULT_ENV, "EROFS:config.yaml")
    code, _, err = call(train.main, [*TINY, "--iterations", "1", "--name", "ro"], capsys)
    assert_one_line_error(code, err, "config.yaml", "Read-only file system")
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_enospc_at_the_first_checkpoint_of_a_new_run_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(runs.FAULT_ENV, "ENOSPC:checkpoint.pt")
    code, _, err = call(train.main, [*TINY, "--iterations", "1", "--name", "full"], capsys)
    assert_one_line_error(code, err, "checkpoint.pt", "No space left")
    assert not (tmp_path / "runs" / "full").exists()


def test_erofs_on_metrics_keeps_the_trained_run(run_copy, monkeypatch, capsys):
    monkeypatch.setenv(runs.FAULT_ENV, "EROFS:metrics.json")
    code, _, err = call(train.main, ["--resume", run_copy, "--iterations", "3", "--no-progress", "--no-eval"], capsys)
    assert_one_line_error(code, err, "metrics.json", "Read-only")
    assert _ckpt_iteration(run_copy) == 2 and _temps(run_copy) == []


def test_eval_output_on_a_full_disk_is_one_line(run_copy, monkeypatch, capsys):
    monkeypatch.setenv(runs.FAULT_ENV, "ENOSPC:eval-test.json")
    code, _, err = call(evaluate.main, [run_copy, "--protocol", "ranking", "--device", "cpu", "--threads", "1"], capsys)
    assert_one_line_error(code, err, "eval-test.json", "No space left")
    assert not (run_copy / "eval-test.json").exists() and _temps(run_copy) == []


@pytest.mark.parametrize("fail_in", ["write", "fsync", "replace"])
def test_atomic_write_failing_midway_leaves_the_old_file(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "f.json"
    path.write_text("old")

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if fail_in == "write":
        real_open = open
        monkeypatch.setattr("builtins.open", lambda p, m="r", *a, **k: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")) if "w" in m and "f.json" in str(p) else
            real_open(p, m, *a, **k))
    else:
        monkeypatch.setattr(os, fail_in, boom)
    with pytest.raises(OSError):
        runs.atomic_write(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and _temps(tmp_path) == []


def test_append_failure_cuts_the_partial_record_back(tmp_path, monkeypatch):
    path = tmp_path / runs.LOG
    runs.append_jsonl(path, {"iteration": 0})
    monkeypatch.setenv(runs.FAULT_ENV, "ENOSPC:log.jsonl")
    with pytest.raises(OSError):
        runs.append_jsonl(path, {"iteration": 1})
    assert path.read_text() == '{"iteration": 0}\n'


def test_lock_on_a_read_only_folder_still_works(run_copy):
    (run_copy / runs.LOCK).touch()
    os.chmod(run_copy / runs.LOCK, 0o444)
    try:
        with runs.run_lock(run_copy):
            pass
    finally:
        os.chmod(run_copy / runs.LOCK, 0o644)


# ------------------------------------------------------------------ interrupts and kills
def test_sigint_is_held_back_until_log_and_checkpoint_are_written(tmp_path, monkeypatch):
    real_save = runs.save_checkpoint

    def save_then_ctrl_c(path, payload):
        real_save(path, payload)
        if payload["iteration"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # lands right after the rename

    monkeypatch.setattr(runs, "save_checkpoint", save_then_ctrl_c)
    with pytest.raises(runs.RunInterrupted) as info:
        runs.train_loop(ToyAgent(), tmp_path, 0, 5, progress=False, tensorboard=False)
    assert info.value.last_done == 1 == _ckpt_iteration(tmp_path)  # the message counts what is on disk
    assert _iterations(tmp_path) == [0, 1]


def test_ctrl_c_during_an_iteration_keeps_the_last_checkpoint(tmp_path):
    def interrupt(it):
        if it == 2:
            raise KeyboardInterrupt

    with pytest.raises(runs.RunInterrupted) as info:
        runs.train_loop(ToyAgent(hook=interrupt), tmp_path, 0, 5, progress=False, tensorboard=False)
    assert info.value.last_done == 1 == _ckpt_iteration(tmp_path) and _iterations(tmp_path) == [0, 1]
    agent = ToyAgent()
    agent.load_state_dict(runs.load_checkpoint(tmp_path / runs.CHECKPOINT)["agent"])
    runs.train_loop(agent, tmp_path, 2, 4, progress=False, tensorboard=False)
    assert _iterations(tmp_path) == [0, 1, 2, 3] and np.array_equal(agent.weight, np.full(3, 4.0))


def test_kill_9_mid_training_then_resume_is_exact(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-c", "import sys; from fcpo.cli.train import main; sys.exit(main())"]
    proc = subprocess.Popen([*base, *TINY, "--iterations", "50", "--name", "k9"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs" / "k9"
    deadline = time.time() + 240
    while time.time() < deadline and not (run / runs.CHECKPOINT).exists():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    assert (run / runs.CHECKPOINT).exists()
    done = _ckpt_iteration(run)
    out = subprocess.run([*base, "--resume", str(run), "--iterations", str(done + 2), "--no-progress", "--no-eval"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert _iterations(run) == list(range(done + 2)) and _ckpt_iteration(run) == done + 1
    assert _temps(run) == []


# ------------------------------------------------------------------ env API misuse (verified, not edited here)
@pytest.fixture(scope="module")
def env():
    import gymnasium as gym

    import fcpo.envs  # noqa: F401 (registers the ids)

    e = gym.make("fcpo/MovieLensFair-v0", dataset="synthetic", horizon=3)
    yield e
    e.close()


def test_env_step_before_reset_is_refused(env):
    import gymnasium as gym

    with pytest.raises(gym.error.ResetNeeded):
        gym.make("fcpo/MovieLensFair-v0", dataset="synthetic", horizon=3).step(np.arange(5))


@pytest.mark.parametrize("action, match", [(np.arange(4), "shape"), (np.array([-1, 1, 2, 3, 4]), "range"),
                                           (np.array([10**6, 1, 2, 3, 4]), "range")])
def test_env_bad_action_is_a_clear_value_error(env, action, match):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_env_unknown_option_names_it():
    import gymnasium as gym

    with pytest.raises((TypeError, ValueError), match="colour"):
        gym.make("fcpo/MovieLensFair-v0", dataset="synthetic", colour="red")
