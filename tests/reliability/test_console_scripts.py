"""Every console script, run as its entry point in a fresh interpreter, answers bad input with one line,
exit status 2, no traceback, and leaves no folder behind."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]


def _entry_points() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [x.strip() for x in cfg["options.entry_points"]["console_scripts"].splitlines() if x.strip()]
    return dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in lines))


BAD = {
    "fcpo-train": (["--dataset", "synthetic", "--set", "constrained=flase"], "constrained"),
    "fcpo-eval": (["--baseline", "mf", "--dataset", "synthetic", "--out", "x.json", "--k", "0"], "--k"),
    "fcpo-bench": (["--iterations", "-3"], "--iterations"),
    "fcpo-align": (["--ks", "0"], "--ks"),
    "fcpo-plot": (["definitely-not-a-run"], "definitely-not-a-run"),
}


def test_every_console_script_is_covered():
    assert set(_entry_points()) == set(BAD)


@pytest.mark.parametrize("script", sorted(BAD))
def test_console_script_bad_input_one_line_exit_2(script, tmp_path):
    module, func = _entry_points()[script].split(":")
    args, expected = BAD[script]
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {func}; sys.exit({func}())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, script, expected)
    assert list(tmp_path.iterdir()) == []
