"""Every command line in README.md's ```bash blocks is one a user can type.

Each fcpo-* command is parsed by its own CLI parser (``build_parser().parse_args``), so a flag the
README names but the tool lacks, or a value the tool refuses, fails here.  Synopsis lines are
expanded first: ``[--x a|b]`` gives one command per alternative, ``<name>`` and upper-case
metavars get a sample value, ``...`` ("the flags above") is dropped.  ``pip install -e ".[extra]"``
must name extras setup.cfg declares.  A few commands then run for real in a fresh process: the
Quickstart's training command with ``--print-config`` (same flags, nothing trained), and the
synthetic pipeline check ``fcpo-bench --dataset synthetic --quick`` that the README says takes seconds.
"""
from __future__ import annotations

import configparser
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fcpo.runs import RunConfig

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: sample values for the metavars the README's synopsis lines use
METAVARS = {"K": "5", "L": "10", "N": "3", "RUN_DIR": "runs/x", "FILE.png": "x.png", "FILE.yaml": "x.yaml"}


def cli(script: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter, as its console-script wrapper runs it."""
    module, func = ENTRY_POINTS[script].split(":")
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {func}; sys.exit({func}())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def console_scripts() -> dict[str, str]:
    return {k: v.split(":")[0] for k, v in _entry_points().items()}


def _entry_points() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [x.strip() for x in cfg["options.entry_points"]["console_scripts"].splitlines() if x.strip()]
    return dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in lines))


ENTRY_POINTS = _entry_points()


def extras() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return set(cfg["options.extras_require"])


def bash_lines(text: str) -> list[tuple[int, str]]:
    """(README line number, command) of every non-empty line of every ```bash block, comments removed."""
    out, in_block = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = stripped == "```bash" if not in_block else False
            continue
        if in_block:
            command = re.split(r"\s#", " " + line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                out.append((number, command))
    return out


def expand(tokens: list[str]) -> list[list[str]]:
    """Synopsis tokens -> concrete argv lists (one per ``a|b`` alternative)."""
    tokens = [t.strip("[]") for t in tokens if t.strip("[]") not in ("", "...")]
    tokens = [re.sub(r"<[^>]*>", "x", t) for t in tokens]
    tokens = [METAVARS.get(t, t) for t in tokens]
    n = max([len(t.split("|")) for t in tokens if "|" in t] or [1])
    return [[t.split("|")[min(i, len(t.split("|")) - 1)] if "|" in t else t for t in tokens] for i in range(n)]


def check_line(line: str, scripts: dict[str, str], known_extras: set[str]) -> list[str]:
    """Problems of one README command line (empty list: every fcpo command in it parses)."""
    problems = []
    for segment in line.split("&&"):
        tokens = shlex.split(segment)
        if not tokens:
            continue
        program = tokens[0]
        if program == "pip":
            for t in tokens:
                for extra in re.findall(r"\.\[([^\]]+)\]", t):
                    missing = set(extra.split(",")) - known_extras
                    if missing:
                        problems.append(f"pip extra(s) {sorted(missing)} not in setup.cfg's extras_require")
            continue
        if program not in scripts:
            continue  # python -m pytest, bash .ci/run, ...
        parser = importlib.import_module(scripts[program]).build_parser()
        for argv in expand(tokens[1:]):
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(argv)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    problems.append(f"{program} {' '.join(argv)}: {err.getvalue().strip()}")
    return problems


def test_readme_has_bash_commands():
    lines = bash_lines(README.read_text())
    assert any(line.startswith("fcpo-train") for _, line in lines), lines


@pytest.mark.parametrize("number,line", bash_lines(README.read_text()), ids=lambda x: str(x)[:60])
def test_readme_command_parses(number, line):
    problems = check_line(line, console_scripts(), extras())
    assert not problems, f"README.md line {number}: " + "; ".join(problems)


def test_checker_catches_a_flag_that_does_not_exist():
    scripts, known = console_scripts(), extras()
    text = "```bash\nfcpo-train --alpha 0.8 --no-such-flag 3\nfcpo-eval runs/x --split sideways\n```\n"
    (n1, bad_flag), (n2, bad_value) = bash_lines(text)
    assert (n1, n2) == (2, 3)
    assert "unrecognized arguments: --no-such-flag" in check_line(bad_flag, scripts, known)[0]
    assert "--split" in check_line(bad_value, scripts, known)[0]
    assert check_line('pip install -e ".[nope]"', scripts, known) == ["pip extra(s) ['nope'] not in setup.cfg's "
                                                                       "extras_require"]
    assert check_line("fcpo-train --alpha 0.8 --dataset ml-100k  && python -m pytest -q", scripts, known) == []


def test_synopsis_expansion():
    assert expand(shlex.split("runs/<name> [--split test|train] [--k K] ... --seeds 0 1")) == [
        ["runs/x", "--split", "test", "--k", "5", "--seeds", "0", "1"],
        ["runs/x", "--split", "train", "--k", "5", "--seeds", "0", "1"]]


def test_quickstart_training_command_resolves(tmp_path):
    """The Quickstart's first fcpo-train (as written, from the repository root) prints the config it would train."""
    line = next(line for _, line in bash_lines(README.read_text()) if "fcpo-train" in line)
    segment = next(s for s in line.split("&&") if s.strip().startswith("fcpo-train"))
    argv = shlex.split(segment)[1:]
    proc = cli("fcpo-train", *argv, "--print-config", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    flags = dict(zip(argv[::2], argv[1::2]))
    if "--alpha" in flags:
        assert config["agent_config"]["alpha_prime"] == float(flags["--alpha"])
    if "--dataset" in flags:
        assert config["env"]["dataset"] == flags["--dataset"]
    if "--iterations" not in flags:
        assert config["iterations"] == RunConfig().iterations


@pytest.mark.slow
def test_synthetic_pipeline_check_runs(tmp_path):
    """``fcpo-bench --dataset synthetic --quick``: runs end to end (exit 0, or 1 when a result check fails)."""
    line = next((line for _, line in bash_lines(README.read_text())
                 if line.startswith("fcpo-bench") and "synthetic" in line and "--quick" in line), None)
    if line is None:
        pytest.skip("the README has no synthetic fcpo-bench pipeline check")
    proc = cli("fcpo-bench", *shlex.split(line)[1:], cwd=tmp_path, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    outputs = list((tmp_path / "runs").glob("bench-synthetic-*/synthetic.md"))
    assert outputs, sorted(p.name for p in tmp_path.rglob("*"))[:20]
