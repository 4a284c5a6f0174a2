"""Pieces shared by the command-line tools: errors, device choice, shared flags, Ctrl-C.

Nothing here imports torch or the agents at module level, so ``--help`` answers fast.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, NoReturn

from fcpo.data.sources import DATASETS


class CLIError(Exception):
    """A user-facing error: printed as ``<prog>: error: <message>``, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device(name)


def add_data_flags(p, default: str | None = None) -> None:
    """``--dataset`` and ``--data-dir`` (``default`` None: the env's default, ml-1m)."""
    p.add_argument("--dataset", choices=DATASETS, default=default,
                   help=f"data set: {', '.join(DATASETS)} (synthetic is generated, no download); "
                        f"default {default or 'ml-1m'}")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the data set files (or a parent with <dataset>/); "
                        "default $FCPO_DATA_DIR/<dataset>, the cache, or a download")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_threads_flag(p) -> None:
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads. Default: 1 when the machine has <= 2 cores or the problem is small "
                        "(synthetic or ml-100k data), else half the cores, at most 8. Stored in config.yaml and "
                        "reused by --resume")


def parse_key_values(items: list[str], flag: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML; dashes in keys become underscores)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CLIError(f"{flag} {item!r}: value is not valid YAML ({exc})") from None
    return out


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(prog: str, main: Callable, args) -> int:
    """Call ``main(args)``; user errors (bad values, missing files, taken folders) become one line, exit 2."""
    try:
        return main(args)
    except (CLIError, FileNotFoundError, FileExistsError, ValueError) as exc:
        fail(prog, str(exc) or type(exc).__name__)


@contextlib.contextmanager
def quiet_interrupt(prog: str):
    """Ctrl-C during start-up or work ends the tool with one line and exit status 130 (no traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # output piped into e.g. `head`, which has exited
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
