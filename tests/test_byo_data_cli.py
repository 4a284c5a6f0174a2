"""Bring your own interactions, the way a user does it: a table file → ``fcpo-train --data PATH --columns ...``
(fresh process) → ``fcpo-eval RUN_DIR`` (another fresh process).  Three shapes of log: Amazon-review style
(string ids, ISO dates, no genres), a RecBole ``.inter`` file, and an implicit-feedback log (no rating)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fcpo.data.synthetic import SyntheticConfig, generate

pytestmark = pytest.mark.slow

LOG = generate(SyntheticConfig(n_users=60, n_items=90, mean_ratings_per_user=30.0, seed=3))


def _amazon(path: Path) -> str:
    days = np.datetime64("2015-01-01") + (LOG["timestamps"] // 86400).astype("timedelta64[D]")
    lines = ["reviewerID,asin,overall,reviewTime"]
    lines += [f"A{u:05d}X,B00{i:04d}Q,{r:.1f},{d}" for u, i, r, d in zip(LOG["users"], LOG["items"], LOG["ratings"], days)]
    path.write_text("\n".join(lines) + "\n")
    return "user=reviewerID,item=asin,rating=overall,timestamp=reviewTime"


def _recbole(path: Path) -> None:
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"u{u}\ti{i}\t{r:g}\t{t}" for u, i, r, t in zip(LOG["users"], LOG["items"], LOG["ratings"], LOG["timestamps"])]
    path.write_text("\n".join(lines) + "\n")


def _implicit(path: Path) -> str:
    keep = LOG["ratings"] >= 4  # only the interactions: no rating column at all
    lines = ["user\titem\tts"] + [f"{u}\t{i}\t{t}" for u, i, t in zip(LOG["users"][keep], LOG["items"][keep],
                                                                       LOG["timestamps"][keep])]
    path.write_text("\n".join(lines) + "\n")
    return "user=user,item=item,timestamp=ts"


def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kind", ["amazon", "recbole", "implicit"])
def test_a_table_file_trains_fcpo_and_evaluates(kind, tmp_path):
    if kind == "amazon":
        data = tmp_path / "reviews.csv"
        columns = ["--columns", _amazon(data)]
    elif kind == "recbole":
        data = tmp_path / "log.inter"
        _recbole(data)
        columns = []
    else:
        data = tmp_path / "clicks.tsv"
        columns = ["--columns", _implicit(data)]
    train = _run(["fcpo.cli.train", "--data", str(data), *columns, "--iterations", "2", "--slate-size", "3",
                  "--horizon", "4", "--alpha", "0.4", "--env-option", "embedding_dim=8", "--threads", "1",
                  "--run-dir", str(tmp_path / "runs"), "--name", kind, "--no-progress"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    run_dir = tmp_path / "runs" / kind
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"]["dataset"] == str(data.resolve())  # the run folder remembers its data
    if columns:
        assert config["env"]["columns"].startswith("user=")
    evaluation = _run(["fcpo.cli.evaluate", str(run_dir)], cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    report = json.loads((run_dir / "eval-test.json").read_text())
    assert report["users"] > 0 and 0.0 <= report["metrics"]["popularity_rate"] <= 1.0


def test_bad_columns_flag_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "reviews.csv"
    _amazon(data)
    out = _run(["fcpo.cli.train", "--data", str(data), "--columns", "user=reviewerID", "--run-dir",
                str(tmp_path / "runs")], cwd=tmp_path)
    assert out.returncode == 2
    assert "--columns" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
    missing = _run(["fcpo.cli.train", "--data", str(data), "--columns", "user=nope,item=asin", "--run-dir",
                    str(tmp_path / "runs"), "--iterations", "1"], cwd=tmp_path)
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "runs").exists()


def test_list_datasets_names_the_registry():
    out = _run(["fcpo.cli.train", "--list-datasets"], cwd=None)
    assert out.returncode == 0
    for name in ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "synthetic"):
        assert name in out.stdout
