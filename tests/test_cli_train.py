"""fcpo-train / fcpo-eval end to end on the synthetic data: run folder, resume, errors."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from fcpo.cli import evaluate as eval_cli
from fcpo.cli import train as train_cli

FAST = ["--dataset", "synthetic", "--horizon", "4", "--no-progress", "--set", "users_per_iteration=0.5",
        "--set", "critic_epochs=1"]


def _run(tmp_path, *extra):
    return train_cli.main([*FAST, "--run-dir", str(tmp_path), *extra])


def test_smoke_train_writes_a_complete_run_folder(tmp_path, capsys):
    assert _run(tmp_path, "--alpha", "0.6", "--iterations", "3", "--name", "smoke", "--eval-protocol", "ranking") == 0
    run = tmp_path / "smoke"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["agent"] == "fcpo" and cfg["agent_config"]["alpha_prime"] == 0.6 and cfg["seed"] == 0
    assert cfg["env"]["dataset"] == "synthetic" and "torch" in cfg["environment"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [0, 1, 2]
    assert {"reward", "cost", "cost_limit", "kl", "cpo_case", "popular_share", "gini"} <= set(log[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["protocol"] == "ranking" and 0 <= metrics["test"]["metrics"]["popularity_rate"] <= 1
    assert (run / "training_curves.png").stat().st_size > 1000
    assert any((run / "tensorboard").iterdir())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 2
    err = capsys.readouterr().err
    assert "limit α'·K = 0.6·5 = 3 G0 items per step" in err
    # fcpo-eval on the run
    assert eval_cli.main([str(run), "--split", "test", "--device", "cpu"]) == 0
    report = json.loads((run / "eval-test.json").read_text())
    assert report["protocol"] == "rollout" and "f1@20" in report["metrics"]


def test_resume_ends_at_the_same_metrics(tmp_path):
    assert _run(tmp_path, "--iterations", "4", "--name", "full", "--no-eval", "--seed", "3") == 0
    assert _run(tmp_path, "--iterations", "2", "--name", "part", "--no-eval", "--seed", "3") == 0
    assert train_cli.main(["--resume", str(tmp_path / "part"), "--iterations", "4", "--no-eval", "--no-progress"]) == 0
    full = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    part = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in part] == [0, 1, 2, 3]
    for a, b in zip(full, part):
        for key in ("reward", "cost", "kl", "popular_share", "value_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["iteration"], key)
    wa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["agent"]["policy"]
    wb = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["agent"]["policy"]
    assert all(torch.allclose(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("flags,msg", [
    (["--alpha", "1.5"], "alpha"),
    (["--alpha", "0"], "alpha"),
    (["--slate-size", "100000"], "exceeds the number of items"),
    (["--set", "nonsense=1"], "unknown agent hyper-parameter"),
    (["--iterations", "0"], "iterations"),
])
def test_bad_flags_fail_clearly_and_write_nothing(tmp_path, capsys, flags, msg):
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, *flags, "--name", "bad")
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "a failed start must leave no run folder"


def test_unknown_dataset_and_missing_data(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        train_cli.main(["--dataset", "netflix"])
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FCPO_ML_1M_URL", "http://127.0.0.1:9/ml-1m.zip")  # closed port: no download
    monkeypatch.delenv("FCPO_DATA_DIR", raising=False)
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--dataset", "ml-1m", "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "FCPO_DATA_DIR" in err
    assert not (tmp_path / "runs").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit):
        _run(tmp_path, "--name", "taken", "--iterations", "1")
    assert "--resume" in capsys.readouterr().err


def test_config_file_and_resume_flag_rules(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agent: trpo\nseed: 5\nenv: {slate_size: 3}\nagent_config: {critic_epochs: 1}\nbogus: 1\n")
    with pytest.raises(SystemExit):
        _run(tmp_path, "--config", str(cfg))
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
    cfg.write_text("agent: trpo\nseed: 5\nenv: {slate_size: 3}\nagent_config: {critic_epochs: 1}\n")
    assert _run(tmp_path, "--config", str(cfg), "--iterations", "1", "--name", "fromfile", "--no-eval") == 0
    saved = yaml.safe_load((tmp_path / "fromfile" / "config.yaml").read_text())
    assert saved["agent"] == "trpo" and saved["seed"] == 5 and saved["env"]["slate_size"] == 3
    with pytest.raises(SystemExit):
        train_cli.main(["--resume", str(tmp_path / "fromfile"), "--alpha", "0.5"])
    assert "drop --alpha" in capsys.readouterr().err


def test_baseline_evaluation(tmp_path):
    out = tmp_path / "pop.json"
    assert eval_cli.main(["--baseline", "popularity", "--dataset", "synthetic", "--out", str(out), "--protocol",
                          "ranking", "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["metrics"]["popularity_rate"] == pytest.approx(1.0)


def test_ctrl_c_keeps_the_last_checkpoint_and_exits_cleanly(tmp_path, monkeypatch, capsys):
    from fcpo.agents.cpo import FCPOAgent

    real = FCPOAgent.train_iteration

    def interrupted(self, iteration):
        if iteration == 2:
            raise KeyboardInterrupt
        return real(self, iteration)

    monkeypatch.setattr(FCPOAgent, "train_iteration", interrupted)
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, "--iterations", "5", "--name", "cc", "--no-eval")
    assert exc.value.code == 130
    assert torch.load(tmp_path / "cc" / "checkpoint.pt", weights_only=True)["iteration"] == 1
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(FCPOAgent, "train_iteration", real)
    assert train_cli.main(["--resume", str(tmp_path / "cc"), "--iterations", "3", "--no-eval", "--no-progress"]) == 0
    log = [json.loads(x) for x in (tmp_path / "cc" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [0, 1, 2]


def test_env_options_and_threads_are_stored_and_threads_reused_on_resume(tmp_path):
    assert _run(tmp_path, "--iterations", "1", "--name", "opts", "--no-eval", "--env-option", "popular_ratio=0.1",
                "--env-option", "regroup-every=2", "--threads", "1") == 0
    cfg = yaml.safe_load((tmp_path / "opts" / "config.yaml").read_text())
    assert cfg["env"]["id"] == "fcpo/MovieLensFair-v0" and cfg["env"]["popular_ratio"] == 0.1
    assert cfg["env"]["regroup_every"] == 2 and cfg["threads"] == 1
    assert train_cli.main(["--resume", str(tmp_path / "opts"), "--iterations", "2", "--threads", "2", "--no-eval",
                           "--no-progress"]) == 0
    assert torch.get_num_threads() == 2
    cfg = yaml.safe_load((tmp_path / "opts" / "config.yaml").read_text())
    assert cfg["threads"] == 2 and cfg["iterations"] == 2
    torch.set_num_threads(1)
    with pytest.raises(SystemExit) as exc:  # --env-option is a setting of the run: not allowed with --resume
        train_cli.main(["--resume", str(tmp_path / "opts"), "--iterations", "3", "--env-option", "horizon=2"])
    assert exc.value.code == 2
