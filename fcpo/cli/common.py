"""Pieces shared by the command-line tools: errors, device choice, shared flags, Ctrl-C.

Nothing here imports torch or the agents at module level, so ``--help`` answers fast.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, NoReturn



class CLIError(Exception):
    """A user-facing error: printed as ``<prog>: error: <message>``, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def resolve_device(name: str):
    """``auto``/``cpu``/``cuda``/``cuda:N`` as a ``torch.device``; a CUDA device that is not there is a
    :class:`CLIError` (checked here, before any folder is made, not by torch later)."""
    import torch

    from fcpo.runs import valid_device_name

    if not isinstance(name, str) or not valid_device_name(name):
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: no CUDA device is available (use --device auto or cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CLIError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) "
                           f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def _dataset_arg(text: str) -> str:
    """A registered data set name, or a table file (made absolute when it exists, so a run remembers it)."""
    from pathlib import Path

    from fcpo.data import list_datasets
    from fcpo.data.sources import is_file_source

    if is_file_source(text):
        path = Path(text).expanduser()
        return str(path.resolve()) if path.exists() else text  # else: looked for under --data-dir
    if text not in list_datasets():
        raise argparse.ArgumentTypeError(f"unknown data set {text!r}; choose one of {', '.join(list_datasets())} "
                                         f"(--list-datasets), or give a .csv/.tsv/.parquet/.inter/.yaml file")
    return text


def _columns_arg(text: str) -> str:
    from fcpo.data import parse_columns

    try:
        return parse_columns(text, flag="--columns").to_text()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _ListDatasets(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from fcpo.data import list_datasets

        for name, description in list_datasets().items():
            print(f"{name:<10} {description}")
        parser.exit(0)


def add_data_flags(p, default: str | None = None) -> None:
    """``--dataset``/``--data``, ``--columns``, ``--data-dir`` and ``--list-datasets`` (``default`` None: the
    env's default, ml-1m)."""
    p.add_argument("--dataset", "--data", dest="dataset", type=_dataset_arg, default=default, metavar="NAME|FILE",
                   help=f"a registered data set (--list-datasets; synthetic is generated, no download) or an "
                        f"interaction table: .csv/.tsv/.parquet with --columns, a RecBole .inter file, or a YAML "
                        f"data card; default {default or 'ml-1m'}")
    p.add_argument("--columns", type=_columns_arg, default=None, metavar="user=COL,item=COL[,rating=COL,timestamp=COL]",
                   help="column mapping of a .csv/.tsv/.parquet table (no rating column: implicit feedback)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the data set files (or a parent with <dataset>/); "
                        "default $FCPO_DATA_DIR/<dataset>, the cache, or a download")
    p.add_argument("--list-datasets", action=_ListDatasets, help="list the registered data sets and exit")


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


def parse_key_values(items: list[str], flag: str, raw: bool = False) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML; dashes in keys become underscores).

    ``raw=True`` keeps the values as text, for typing against the fields they set
    (:func:`fcpo.agents.base.typed_config_values`: ``1e-4`` is a float there, ``flase`` no bool)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{flag} {item!r}: expected KEY=VALUE")
        if raw:
            out[key.strip().replace("-", "_")] = value
            continue
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CLIError(f"{flag} {item!r}: value is not valid YAML "
                           f"({getattr(exc, 'problem', None) or 'syntax error'})") from None
    return out


def one_line(message: str) -> str:
    """``message`` folded onto one line (multi-line library messages joined with "; ")."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(code)


def os_error_message(exc: OSError) -> str:
    """``cannot write runs/x/checkpoint.pt: No space left on device (ENOSPC)``-style text for a file-system error."""
    import errno

    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    hint = {"ENOSPC": "; free some space and continue with --resume", "EROFS": "; the file system is read-only",
            "EACCES": "; check the folder's permissions", "EDQUOT": "; disk quota exceeded"}.get(code, "")
    return f"{where}{what}" + (f" ({code})" if code else "") + hint


def run_cli(prog: str, main: Callable, args) -> int:
    """Call ``main(args)``; user errors (bad values, missing files, taken or busy folders, damaged run
    files, full or read-only disks) become one line on stderr, exit 2."""
    from fcpo.runs import RunBusy

    try:
        return main(args)
    except (CLIError, FileNotFoundError, FileExistsError, ValueError, RunBusy) as exc:
        if isinstance(exc, OSError) and exc.strerror and exc.filename:  # a raw errno error, not our message
            fail(prog, os_error_message(exc))
        fail(prog, str(exc) or type(exc).__name__)
    except OSError as exc:
        fail(prog, os_error_message(exc))


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
