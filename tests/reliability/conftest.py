"""Shared pieces of the reliability suite: calling a console script in-process, the one-line-error
contract, a tiny trained run folder (trained once per session, copied per test), folder snapshots."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

TINY = ["--dataset", "synthetic", "--horizon", "3", "--threads", "1", "--no-progress", "--device", "cpu",
        "--set", "users_per_iteration=0.25", "--set", "critic_epochs=1", "--no-eval"]


def call(main, argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` of a console script in this process: ``(exit status, stdout, stderr)``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code or 0, out, err


def assert_one_line_error(code: int, err: str, *expected: str) -> str:
    """Exit status 2, exactly one ``error:`` line on stderr, no traceback, each ``expected`` text in it."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict:
    """``{relative path: sha256}`` of every file under ``folder`` (the lock file aside)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every case runs in its own folder, single-threaded, with no injected faults unless it sets them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FCPO_INJECT_OSERROR", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A 2-iteration fcpo run on synthetic data (trained once; copy it with :func:`run_copy`)."""
    import torch

    from fcpo.cli import train

    torch.set_num_threads(1)
    parent = tmp_path_factory.mktemp("base-runs")
    old = os.getcwd()
    os.chdir(parent)
    try:
        try:
            code = train.main([*TINY, "--iterations", "2", "--run-dir", str(parent), "--name", "base"])
        except SystemExit as exc:
            code = exc.code
        assert code in (0, None), code
    finally:
        os.chdir(old)
    return parent / "base"


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of :func:`trained_run` under this case's folder."""
    dest = tmp_path / "runs" / "r"
    shutil.copytree(trained_run, dest)
    (dest / ".lock").unlink(missing_ok=True)
    return dest
