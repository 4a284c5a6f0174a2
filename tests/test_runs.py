"""fcpo.runs: atomic files with the user's permissions, RunConfig validation, run folders, the training loop."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import yaml

from fcpo import runs


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_umask_permissions_and_leave_no_temp_files(tmp_path, umask_022):
    runs.atomic_write(tmp_path / "a.txt", "héllo")
    runs.atomic_write(tmp_path / "b.bin", b"\x00\x01")
    runs.write_json(tmp_path / "c.json", {"x": float("nan"), "y": [1, 2]})
    runs.save_checkpoint(tmp_path / "d.pt", {"w": torch.ones(2)})
    for name in ("a.txt", "b.bin", "c.json", "d.pt"):
        assert _mode(tmp_path / name) == 0o644, name
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": None, "y": [1, 2]}
    assert torch.equal(runs.load_checkpoint(tmp_path / "d.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json", "d.pt"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    runs.atomic_write(target, "old")
    with pytest.raises(RuntimeError):
        with runs.atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_run_config_round_trips_and_names_file_and_key_on_bad_values(tmp_path):
    cfg = runs.RunConfig(agent="trpo", seed=3, iterations=7, threads=2,
                         env={"id": "fcpo/MovieLensFair-v0", "dataset": "synthetic"}, agent_config={"max_kl": 0.02})
    path = cfg.to_yaml(tmp_path / "config.yaml")
    assert runs.RunConfig.from_yaml(path) == cfg
    assert yaml.safe_load(path.read_text())["env"] == {"id": "fcpo/MovieLensFair-v0", "dataset": "synthetic"}
    for text, key in (("iterations: 0\n", "'iterations'"), ("seed: x\n", "'seed'"), ("threads: 0\n", "'threads'"),
                      ("env: [1]\n", "'env'"), ("bogus: 1\n", "['bogus']")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError) as exc:
            runs.RunConfig.from_yaml(bad)
        assert str(bad) in str(exc.value) and key in str(exc.value)
    (tmp_path / "broken.yaml").write_text("agent: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        runs.RunConfig.from_yaml(tmp_path / "broken.yaml")


def test_resolve_fills_every_default_and_rejects_unknown_options():
    cfg = runs.resolve(runs.RunConfig(env={"dataset": "synthetic"}, agent_config={"alpha_prime": 0.5}))
    assert cfg.env["id"] == "fcpo/MovieLensFair-v0" and cfg.env["slate_size"] == 5 and "mode" not in cfg.env
    assert cfg.agent_config["alpha_prime"] == 0.5 and len(cfg.agent_config) > 5
    assert cfg.threads == 1  # synthetic data: a small problem
    with pytest.raises(ValueError, match="unknown agent hyper-parameter"):
        runs.resolve(runs.RunConfig(agent_config={"nonsense": 1}))
    with pytest.raises(ValueError, match="unexpected keyword argument .colour."):
        runs.resolve(runs.RunConfig(env={"dataset": "synthetic", "colour": "red"}))
    with pytest.raises(ValueError, match="unknown env id"):
        runs.resolve(runs.RunConfig(env={"id": "fcpo/Nope-v0"}))
    with pytest.raises(ValueError, match="unknown agent 'nope'"):
        runs.resolve(runs.RunConfig(agent="nope"))


@pytest.mark.parametrize("cpus,dataset,threads", [(1, "ml-1m", 1), (2, "ml-1m", 1), (16, "synthetic", 1),
                                                  (16, "ml-100k", 1), (16, "ml-1m", 8), (6, "ml-1m", 3)])
def test_default_threads_rule(cpus, dataset, threads):
    assert runs.default_threads({"dataset": dataset}, cpu_count=cpus) == threads


def test_create_run_refuses_an_existing_folder_and_leaves_no_staging(tmp_path, umask_022):
    cfg = runs.RunConfig(env={"dataset": "synthetic"})
    run_dir = runs.create_run(tmp_path, "r1", cfg, record_environment=False)
    assert _mode(run_dir) == 0o755 and _mode(run_dir / runs.CONFIG) == 0o644
    assert runs.load_config(run_dir) == cfg
    before = (run_dir / runs.CONFIG).read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        runs.create_run(tmp_path, "r1", runs.RunConfig(seed=9), record_environment=False)
    assert (run_dir / runs.CONFIG).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r1"]


class _CountingAgent:
    """A stand-in agent: one weight that counts iterations; fails on demand."""

    def __init__(self, interrupt_at=None):
        self.w = torch.zeros(1)
        self.interrupt_at = interrupt_at

    def train_iteration(self, it):
        if it == self.interrupt_at:
            raise KeyboardInterrupt
        self.w += 1
        return {"reward": float(self.w), "cpo_case": "feasible", "flag": True}

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, state):
        self.w = state["w"].clone()


def test_train_loop_logs_then_checkpoints_and_stops_cleanly_on_ctrl_c(tmp_path):
    seen = []
    records = runs.train_loop(_CountingAgent(), tmp_path, 0, 3, progress=False, on_record=seen.append,
                              tensorboard=False)
    assert [r["iteration"] for r in records] == [0, 1, 2] and seen == records
    assert [r["reward"] for r in runs.read_jsonl(tmp_path / runs.LOG)] == [1.0, 2.0, 3.0]
    assert "flag" not in records[0] and records[0]["cpo_case"] == "feasible"  # bools are not metrics
    ckpt = runs.load_checkpoint(tmp_path / runs.CHECKPOINT)
    assert ckpt["iteration"] == 2 and float(ckpt["agent"]["w"]) == 3.0
    # a record written after the checkpoint (crash between the two) is dropped on resume
    runs.append_jsonl(tmp_path / runs.LOG, {"iteration": 3, "reward": 99.0})
    agent = _CountingAgent(interrupt_at=4)
    agent.load_state_dict(ckpt["agent"])
    with pytest.raises(runs.RunInterrupted) as exc:
        runs.train_loop(agent, tmp_path, 3, 6, progress=False, tensorboard=False)
    assert exc.value.last_done == 3
    log = runs.read_jsonl(tmp_path / runs.LOG)
    assert [r["iteration"] for r in log] == [0, 1, 2, 3] and log[-1]["reward"] == 4.0
    assert runs.load_checkpoint(tmp_path / runs.CHECKPOINT)["iteration"] == 3


def test_train_loop_writes_tensorboard_scalars(tmp_path):
    runs.train_loop(_CountingAgent(), tmp_path, 0, 2, progress=False)
    assert any((tmp_path / "tensorboard").iterdir())
