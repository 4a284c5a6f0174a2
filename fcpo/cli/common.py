"""Pieces shared by the command-line tools: device choice, errors, data flags."""
from __future__ import annotations

import sys
from typing import NoReturn

import torch

from fcpo.data.sources import DATASETS


class CLIError(Exception):
    """A user-facing error: printed as ``<prog>: error: <message>``, exit status 2."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device(name)


def add_data_flags(p, required_default=None) -> None:
    p.add_argument("--dataset", choices=DATASETS, default=required_default,
                   help="data set: ml-1m (default), ml-100k or synthetic (generated, no download)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the data set files (or a parent with <dataset>/); "
                        "else $FCPO_DATA_DIR/<dataset>, the cache, or a download")


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)
