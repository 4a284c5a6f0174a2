"""Run folders: ``runs/<name>/`` with the resolved config, log, checkpoint, metrics and plots.

One run = one :class:`RunConfig` (``config.yaml``), created by :func:`create_run`
(never over an existing folder), trained by :func:`train_loop` (used by
``fcpo-train`` and by every ``fcpo-bench`` job) and reopened by :func:`open_run`
(``fcpo-train --resume``, ``fcpo-eval``).

Files: ``config.yaml``, ``log.jsonl`` (one record per iteration),
``checkpoint.pt`` (the last finished iteration), ``tensorboard/``,
``metrics.json``, ``training_curves.png``.  Every file is written through
:func:`atomic_output` (temp file in the same folder + ``os.replace``) and gets
the permissions the user's umask gives a new file; an interrupted run never
leaves a half-written file.  The log record of an iteration is written
*before* the checkpoint that includes it, and a resumed run drops the log
records the checkpoint does not cover.  Checkpoints hold only tensors and plain
values and load with ``torch.load(weights_only=True)``.

Reliability rules (tested by ``tests/reliability``):

* every config value, from flags, ``--set``, YAML or a resumed ``config.yaml``, is typed once against
  its dataclass field (:func:`fcpo.agents.base.coerce_value`) and range-checked; errors name the key
  and where it came from;
* a train or resume holds :func:`run_lock` (``flock`` on ``.lock``) for its whole length; a second
  process gets :class:`RunBusy`; taking the lock sweeps the temp files a killed writer left;
* no NaN/inf reaches a checkpoint (:func:`fcpo.agents.checkpoint.check_finite_state` before every
  save and after every load); Ctrl-C is held back while an iteration's log record and checkpoint are
  written; a partial last log line is dropped with a warning;
* damaged run files raise :class:`DamagedRunFile` naming the file; ``$FCPO_INJECT_OSERROR``
  (:func:`inject_fault`) makes chosen writes fail with ``ENOSPC``/``EROFS`` for tests.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import yaml

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
METRICS = "metrics.json"
LOCK = ".lock"  # flock'ed for the whole of a train / resume (see run_lock)
FAULT_ENV = "FCPO_INJECT_OSERROR"  # test hook: "ENOSPC:checkpoint.pt" makes writes of that file fail
DEFAULT_ENV_ID = "fcpo/MovieLensFair-v0"  # = fcpo.envs.contract.DEFAULT_ENV_ID (not imported: keeps --help fast)


# ------------------------------------------------------------------ atomic files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inject_fault(path: str | Path) -> None:
    """Raise the ``OSError`` named by ``$FCPO_INJECT_OSERROR`` (``ERRNO:filename[,ERRNO:filename...]``, e.g.
    ``ENOSPC:checkpoint.pt`` or ``EROFS:*``) when ``path`` is about to be written: the fault-injection hook of
    the reliability suite, so full and read-only file systems are tested without privileges."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name = Path(path).name
    for item in spec.split(","):
        code, _, target = item.strip().partition(":")
        if target in ("*", name) and hasattr(errno, code):
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number), str(path))


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` with the usual permissions.

    ``with atomic_output(p) as tmp: torch.save(obj, tmp)``.  On an exception the
    temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inject_fault(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would give
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically (fsync'ed before the rename)."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def jsonable(x):
    """Plain JSON values: NumPy arrays/scalars to lists/numbers, NaN/inf to ``None``, keys to str."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy / torch arrays and scalars
        return jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


def write_json(path: str | Path, payload) -> Path:
    return atomic_write(path, json.dumps(jsonable(payload), indent=2) + "\n")


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Refuse non-finite state, ``torch.save`` into memory, then write it atomically over the old checkpoint.

    Serialising into memory first means a full or read-only disk raises a plain ``OSError`` naming the
    file (never torch's stream-writer error) and the previous checkpoint stays as it was."""
    import torch

    from fcpo.agents.checkpoint import check_finite_state

    check_finite_state(payload, f"{path}")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, buffer.getvalue())


class DamagedRunFile(ValueError):
    """A run file (checkpoint, config, log) that exists but cannot be read; the message names it."""


def load_checkpoint(path: str | Path, device="cpu") -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (a run's: ``{"iteration": int, "agent": {...}}``).

    A missing file raises ``FileNotFoundError``; a truncated, foreign or non-finite one raises
    :class:`DamagedRunFile` naming the file (never a pickle or zip traceback)."""
    import torch

    from fcpo.agents.checkpoint import NonFiniteState, check_finite_state

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (was the run started?)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # zip, pickle, EOF and torch errors of a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DamagedRunFile(f"{path}: damaged or not an fcpo checkpoint ({type(exc).__name__}: {first[:160]}); "
                             f"restore it, or delete it to restart the run from iteration 0") from None
    try:
        check_finite_state(ckpt, str(path))
    except NonFiniteState as exc:
        raise DamagedRunFile(str(exc)) from None
    return ckpt


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` atomically (the format is taken from ``path``'s suffix)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line in one write; a failed write (full disk) is cut back off, so the file
    never ends in half a record written by this call."""
    path = Path(path)
    line = (json.dumps(jsonable(record)) + "\n").encode("utf-8")
    with open(path, "ab") as fh:
        size = fh.tell()
        try:
            inject_fault(path)
            fh.write(line)
            fh.flush()
        except OSError:
            with contextlib.suppress(OSError):
                fh.truncate(size)
            raise


def _read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """``(records, dropped_tail)``: a last line that is not valid JSON (a write cut short by a crash or a
    full disk) is dropped with a one-line warning on stderr; a bad line before the last is an error."""
    if not path.is_file():
        return [], False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DamagedRunFile(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    out = []
    for i, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise json.JSONDecodeError("not an object", line, 0)
        except json.JSONDecodeError as exc:
            if i == len(numbered) - 1:
                print(f"fcpo: warning: {path}, line {number}: dropped a partial last record (a write cut short)",
                      file=sys.stderr)
                return out, True
            raise DamagedRunFile(f"{path}, line {number}: not a JSON record ({exc.msg})") from None
        out.append(record)
    return out, False


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file (``[]`` if absent); see :func:`_read_jsonl` for a partial last line."""
    return _read_jsonl(Path(path))[0]


def truncate_log(path: str | Path, stop: int) -> list[dict]:
    """Keep the records of iterations ``< stop`` (those the checkpoint covers); rewrite only if needed
    (also when a partial last line was dropped)."""
    records, dropped = _read_jsonl(Path(path))
    kept = [r for r in records if isinstance(r.get("iteration"), int) and r["iteration"] < stop]
    if dropped or len(kept) != len(records):
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def environment_info() -> dict:
    """Package versions and the git commit of the fcpo source, if it is a checkout."""
    import gymnasium
    import numpy
    import torch

    import fcpo

    info = {"python": platform.python_version(), "platform": platform.platform(), "fcpo": fcpo.__version__,
            "torch": str(torch.__version__), "numpy": str(numpy.__version__), "gymnasium": str(gymnasium.__version__),
            "cpu_count": os.cpu_count(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        src = Path(fcpo.__file__).resolve().parents[1]
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                            check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


# ------------------------------------------------------------------ run config
def default_threads(env: dict | None = None, cpu_count: int | None = None) -> int:
    """Torch CPU threads when none are given: 1 on a machine with <= 2 cores or for a small problem
    (``synthetic`` or ``ml-100k`` data, where thread hand-offs cost more than they save); else
    half the cores, at most 8."""
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    dataset = (env or {}).get("dataset", "ml-1m")
    if cpus <= 2 or dataset in ("synthetic", "ml-100k"):
        return 1
    return max(1, min(8, cpus // 2))


@dataclass
class RunConfig:
    """Everything a training run needs; stored as the run's ``config.yaml``.

    ``env`` is an :class:`fcpo.envs.EnvSpec` as a dict: ``{id: fcpo/MovieLensFair-v0, dataset: ..., ...}``;
    ``agent_config`` holds the agent's hyper-parameters (its config dataclass's fields).
    """

    agent: str = "fcpo"
    seed: int = 0
    iterations: int = 100
    device: str = "auto"
    threads: int | None = None
    env: dict = field(default_factory=lambda: {"id": DEFAULT_ENV_ID})
    agent_config: dict = field(default_factory=dict)
    environment: dict | None = None  # versions and git commit, recorded by create_run

    def __post_init__(self):
        self.validate()

    def validate(self, where: str = "run config") -> None:
        """Types and ranges of every key; the error names ``where`` and the key."""
        def bad(key, expected):
            raise ValueError(f"{where}: key {key!r}: expected {expected}, got {getattr(self, key)!r}")

        if not isinstance(self.agent, str) or not self.agent:
            bad("agent", "an agent name")
        for key in ("seed", "iterations"):
            if not isinstance(getattr(self, key), int) or isinstance(getattr(self, key), bool):
                bad(key, "an integer")
        if self.seed < 0:
            bad("seed", "an integer >= 0")
        if self.iterations < 1:
            bad("iterations", "an integer >= 1")
        if not isinstance(self.device, str) or not valid_device_name(self.device):
            bad("device", "auto, cpu, cuda or cuda:N")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            bad("threads", "an integer >= 1 or null")
        if not isinstance(self.env, dict):
            bad("env", "a mapping {id: ..., <options>}")
        self.env = {"id": self.env.get("id") or DEFAULT_ENV_ID, **{k: v for k, v in self.env.items() if k != "id"}}
        if not isinstance(self.agent_config, dict):
            bad("agent_config", "a mapping of hyper-parameters")
        if self.environment is not None and not isinstance(self.environment, dict):
            bad("environment", "a mapping")

    @property
    def env_id(self) -> str:
        return self.env["id"]

    @property
    def env_options(self) -> dict:
        return {k: v for k, v in self.env.items() if k != "id"}

    def env_spec(self):
        """The :class:`fcpo.envs.EnvSpec` of this run."""
        from fcpo.envs.contract import EnvSpec

        return EnvSpec.from_dict(self.env)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["environment"] is None:
            del d["environment"]
        return d

    @classmethod
    def from_dict(cls, values, where: str = "run config", typed_agent_config: bool = True) -> "RunConfig":
        """Check and type every value (:func:`fcpo.agents.base.coerce_value`); errors name ``where`` and the key.
        ``agent_config`` is typed against the agent's config class unless ``typed_agent_config`` is false."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a mapping at the top level, got {type(values).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names) - {"created"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
        try:
            values = {k: v for k, v in values.items() if k in names}
            for key in ("env", "agent_config"):
                if values.get(key) is None and key in values:
                    values[key] = {}
            values = _typed_run_values(values, where)
            cfg = cls.__new__(cls)
            for f in fields(cls):
                default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
                setattr(cfg, f.name, values.get(f.name, default))
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from None
        cfg.validate(where)
        if isinstance(cfg.agent_config, dict) and cfg.agent_config and typed_agent_config:
            cfg.agent_config = agent_config_values(cfg.agent, cfg.agent_config, f"{where}: agent_config")
        return cfg

    def to_yaml(self, path: str | Path) -> Path:
        return atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def to_yaml_text(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: damaged, not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f", line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}{at}: not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'})") \
                from None
        return cls.from_dict(values or {}, where=str(path))


def valid_device_name(name: str) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (N a non-negative integer)."""
    if name in ("auto", "cpu", "cuda"):
        return True
    head, sep, index = name.partition(":")
    return head == "cuda" and bool(sep) and index.isdigit()


def _typed_run_values(values: dict, where: str) -> dict:
    """The scalar keys of a run config typed like the dataclass fields (``seed: "3"`` -> 3, ``2.5`` refused)."""
    from fcpo.agents.base import coerce_value

    types = {"agent": str, "seed": int, "iterations": int, "device": str, "threads": int | None}
    return {k: (coerce_value(v, types[k], k, where) if k in types else v) for k, v in values.items()}


def agent_config_values(agent: str, values: dict, where: str) -> dict:
    """``values`` typed against the config class of ``agent`` (unknown keys refused; errors name ``where``)."""
    from fcpo.agents.base import typed_config_values

    try:
        cls = agent_config_class(agent)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return typed_config_values(cls, values, where, what="agent hyper-parameter")


def load_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an fcpo run folder (no {CONFIG})")
    return RunConfig.from_yaml(path)


# ------------------------------------------------------------------ agents
def _agent_registry():
    from fcpo.agents.base import AGENTS

    return AGENTS


def agent_names() -> list[str]:
    return sorted(_agent_registry())


def agent_config_class(agent: str) -> type:
    registry = _agent_registry()
    if agent not in registry:
        raise ValueError(f"unknown agent {agent!r}; choose one of {', '.join(sorted(registry))}")
    return registry[agent].config_cls


def agent_fields(agent: str) -> list[dict]:
    """Hyper-parameters of ``agent``: ``[{name, type, default, help}]``."""
    from fcpo.agents.base import config_fields

    return config_fields(agent_config_class(agent))


def resolve(config: RunConfig) -> RunConfig:
    """Fill in every default and check every option (agent and env) before anything is built or written.

    The returned config lists all hyper-parameters and env options explicitly, so that
    ``config.yaml`` reproduces the run even if a default changes later.
    """
    from fcpo.agents.base import build_config

    cls = agent_config_class(config.agent)
    agent_cfg = build_config(cls, config.agent_config, f"agent {config.agent!r} hyper-parameters",
                             "agent hyper-parameter")
    env = {"id": config.env_id, **_resolve_env_options(config.env_id, config.env_options)}
    return RunConfig(agent=config.agent, seed=config.seed, iterations=config.iterations, device=config.device,
                     threads=config.threads if config.threads is not None else default_threads(env),
                     env=env, agent_config=asdict(agent_cfg), environment=config.environment)


def _resolve_env_options(env_id: str, options: dict) -> dict:
    from fcpo.envs.contract import EnvSpec

    EnvSpec(env_id, options)  # the id must be registered with a vector entry point
    if options.get("data_dir") is not None:
        options = {**options, "data_dir": str(Path(options["data_dir"]).expanduser().resolve())}
    if env_id == DEFAULT_ENV_ID:
        from fcpo.envs.config import FairEnvConfig

        try:
            resolved = asdict(FairEnvConfig.from_kwargs(**{**options, "mode": "train"}))
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        resolved.pop("mode")
        return resolved
    if env_id == "fcpo/MovieLensSim-v0":  # checked here; its defaults stay the env's
        from fcpo.envs.simulator import SimEnvConfig

        try:
            SimEnvConfig.from_kwargs(**{**options, "mode": "train"})
        except TypeError as exc:
            raise ValueError(str(exc)) from None
    return dict(options)


def ranker_policy(name: str, config: RunConfig, alpha_prime: float = 1.0, seed: int = 0):
    """A non-RL ranker (``popularity``, ``random``, ``mf``, ``fair-mf``) over the data of the run's env,
    with G0 as the env defines it at the start of an episode."""
    import numpy as np

    from fcpo.policies.rankers import make_ranker

    env = config.env_spec().make_vector(1, mode="train")
    return make_ranker(name, env.env_data, alpha_prime, np.array(env.is_popular, dtype=bool), seed=seed)


def build_agent(config: RunConfig, device):
    """The untrained agent of ``config`` on ``device``: the one place where runs construct agents."""
    from fcpo.agents.base import make_agent

    from fcpo.agents.base import build_config

    cls = agent_config_class(config.agent)
    values = dict(config.agent_config)
    if "constraint" in {f.name for f in fields(cls)} and "constraint" not in values:
        values["constraint"] = "expected"  # run folders from before the constraint modes trained the CMDP constraint
    agent_cfg = build_config(cls, values, f"agent {config.agent!r} hyper-parameters", "agent hyper-parameter")
    try:
        return make_agent(config.agent, agent_cfg, config.env_spec(), device, config.seed)
    except TypeError as exc:
        raise ValueError(f"agent {config.agent!r}: {exc}") from None


def evaluate_policy(policy, config: RunConfig, **kwargs) -> dict:
    """``fcpo.evaluate.evaluate`` on the run's env: the one place where runs evaluate."""
    from fcpo.evaluate import evaluate

    return evaluate(policy, config.env_spec(), **kwargs)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


# ------------------------------------------------------------------ run folders
def create_run(parent: str | Path, name: str, config, record_environment: bool = True) -> Path:
    """Create ``parent/name`` holding ``config.yaml``; refuses an existing folder.

    ``config`` is a :class:`RunConfig` or any config with ``to_dict()`` and an ``environment``
    attribute (e.g. :class:`fcpo.alignment.experiment.AlignConfig`); the environment (versions,
    git commit) is recorded in it unless already set.

    The folder is filled under a hidden staging name and renamed into place, so a
    run folder either exists complete or not at all.
    """
    parent = Path(parent)
    run_dir = parent / name
    if run_dir.exists():
        raise FileExistsError(f"run folder {run_dir} exists; choose another name, or continue it (--resume)")
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        if record_environment and config.environment is None:
            config.environment = environment_info()
        atomic_write(staging / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))
        if run_dir.exists():
            raise FileExistsError(f"run folder {run_dir} appeared meanwhile; choose another name")
        os.rename(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_dir


def default_run_name(config: RunConfig) -> str:
    alpha = config.agent_config.get("alpha_prime")
    dataset = str(config.env.get("dataset", config.env_id.split("/")[-1]))
    if "/" in dataset or "\\" in dataset:  # a table file: its name, without folders or suffixes
        dataset = Path(dataset).name.split(".")[0]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.agent}-{dataset}" + (f"-a{alpha:g}" if alpha is not None else "") + f"-s{config.seed}-{stamp}"


class RunBusy(RuntimeError):
    """Another process holds the run folder's lock (it is training or resuming that run)."""


def _is_stale_temp(name: str) -> bool:
    """Temp files a crash can leave: ``.<file>.<random>.tmp`` of :func:`atomic_output`, ``*.part`` downloads."""
    return (name.startswith(".") and name.endswith(".tmp")) or name.endswith(".part")


def sweep_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temp files a killed writer left in ``run_dir`` (call it holding :func:`run_lock`)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(run_dir):
            if entry.is_file(follow_symlinks=False) and _is_stale_temp(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``run_dir/.lock`` for a whole train or resume; sweeps stale temp files.

    A second process gets :class:`RunBusy` at once (no waiting).  The lock dies with its process
    (also under ``kill -9``), so a crashed run never stays locked.  The lock file is never deleted
    (deleting it would let two processes lock two different files)."""
    import fcntl

    run_dir = Path(run_dir)
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not path.is_file():
            raise
        fd = os.open(path, os.O_RDONLY)  # read-only folder: still exclude other readers-to-be-writers
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir} is in use by another fcpo process (it holds {path}); "
                          f"wait for it to finish or stop it") from None
        sweep_temp_files(run_dir)
        yield run_dir
    finally:
        os.close(fd)


def open_run(run_dir: str | Path, device="cpu", require_checkpoint: bool = True):
    """Reopen a run: ``(config, agent, next_iteration, records)``.

    The agent holds the checkpoint's state; ``records`` are the log records the
    checkpoint covers (nothing is rewritten here).  Without a checkpoint the run
    is refused unless ``require_checkpoint=False`` (then a fresh agent, iteration 0:
    a run killed before its first checkpoint restarts from the beginning).  A damaged
    checkpoint raises :class:`DamagedRunFile` naming it.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    agent = build_agent(config, device)
    path = run_dir / CHECKPOINT
    if path.is_file() or require_checkpoint:
        ckpt = load_checkpoint(path, device)
        if not (isinstance(ckpt, dict) and isinstance(ckpt.get("agent"), dict)
                and isinstance(ckpt.get("iteration"), int) and not isinstance(ckpt.get("iteration"), bool)
                and ckpt["iteration"] >= 0):
            raise DamagedRunFile(f"{path}: not a run checkpoint (expected {{iteration: int >= 0, agent: {{...}}}})")
        try:
            agent.load_state_dict(ckpt["agent"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DamagedRunFile(f"{path}: does not fit the agent of {run_dir / CONFIG} "
                                 f"({type(exc).__name__}: {first[:160]})") from None
        next_iteration = int(ckpt["iteration"]) + 1
    else:
        next_iteration = 0
    records = [r for r in read_jsonl(run_dir / LOG)
               if isinstance(r.get("iteration"), int) and r["iteration"] < next_iteration]
    return config, agent, next_iteration, records


class RunInterrupted(Exception):
    """Ctrl-C inside :func:`train_loop`; the checkpoint of ``last_done`` (or none, -1) is kept."""

    def __init__(self, run_dir: Path, last_done: int):
        super().__init__(f"interrupted; {run_dir} holds iterations 0..{last_done}")
        self.run_dir = run_dir
        self.last_done = last_done


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[None]:
    """Hold Ctrl-C back while the log record and the checkpoint of one iteration are written, then deliver it:
    an interrupt can then never land between the checkpoint's rename and the count of kept iterations."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


def _scalars(stats: dict) -> dict:
    return {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _tensorboard_scalars(record: dict) -> dict:
    out = {k: v for k, v in _scalars(record).items() if k != "iteration"}
    if "cpo_case" in record:
        from fcpo.solvers import CPO_CASES

        out["cpo_case_index"] = float(list(CPO_CASES).index(record["cpo_case"])) if record["cpo_case"] in CPO_CASES \
            else -1.0
    return out


def train_loop(agent, run_dir: str | Path, start: int, stop: int, progress: bool = True,
               on_record: Callable[[dict], None] | None = None, tensorboard: bool = True,
               desc: str = "train") -> list[dict]:
    """Iterations ``start .. stop - 1`` of ``agent``; returns the log records of these iterations.

    Per iteration: ``agent.train_iteration(it)``, a finite check of the agent's state (a diverged
    iteration raises :class:`fcpo.agents.checkpoint.NonFiniteState` and nothing of it is written), one
    record appended to ``log.jsonl``, then ``checkpoint.pt`` (so the checkpoint never covers an
    unlogged iteration; Ctrl-C is held back while both are written), TensorBoard
    scalars ``train/<key>`` and the progress bar.  Records already in the log at or beyond
    ``start`` (written after the checkpoint being resumed) are dropped first.  Ctrl-C
    raises :class:`RunInterrupted` with the last checkpointed iteration.
    """
    from tqdm import tqdm

    from fcpo.agents.checkpoint import check_finite_state

    run_dir = Path(run_dir)
    truncate_log(run_dir / LOG, start)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start)
    bar = tqdm(range(start, stop), initial=start, total=stop, desc=desc, disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    records: list[dict] = []
    last_done = start - 1
    try:
        for it in bar:
            t0 = time.perf_counter()
            stats = agent.train_iteration(it)
            record = {"iteration": it, "seconds": time.perf_counter() - t0, **_scalars(stats),
                      **{k: v for k, v in stats.items() if isinstance(v, str)}}
            payload = {"iteration": it, "agent": agent.state_dict()}
            check_finite_state(payload, f"iteration {it} of {run_dir}",
                               hint=f"; the checkpoint of iteration {it - 1} is kept" if it > start or start > 0
                               else "; no checkpoint was written")
            with _deferred_sigint():
                append_jsonl(run_dir / LOG, record)
                save_checkpoint(run_dir / CHECKPOINT, payload)
                last_done = it
            records.append(record)
            if writer is not None:
                for key, value in _tensorboard_scalars(record).items():
                    writer.add_scalar(f"train/{key}", value, it)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in ("reward", "cost", "cost_limit", "kl") if k in record})
            if on_record is not None:
                on_record(record)
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir, last_done) from None
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return records


def _alpha_prime(run_dir: Path, alpha_prime: float | None) -> float | None:
    if alpha_prime is not None:
        return float(alpha_prime)
    try:
        return load_config(run_dir).agent_config.get("alpha_prime")
    except (FileNotFoundError, ValueError):
        return None


def plot_training(run_dir: str | Path, records: list[dict], alpha_prime: float | None = None) -> Path | None:
    """``training_curves.png``: reward, cost and popular share per training iteration.

    The cost panel draws the ``cost_limit`` the agent logs with each record (α'·K G0 items per
    step over the iteration's mean episode length: the per-episode number the console and
    TensorBoard show), and marks the iterations whose CPO step judged the discounted constraint
    infeasible (``cpo_case``), so the plot and the solver never tell two stories.  The popular-share
    panel draws α' (``alpha_prime``; default: the run's ``config.yaml``) — the share the user asked for.
    """
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    alpha = _alpha_prime(run_dir, alpha_prime)
    it = [r["iteration"] for r in records]

    def series(key):
        return [r.get(key, float("nan")) if r.get(key) is not None else float("nan") for r in records]

    has_share = any("popular_share" in r for r in records)
    fig, axes = plt.subplots(1, 3 if has_share else 2, figsize=(14 if has_share else 10, 3.8))
    ax1, ax2 = axes[0], axes[1]
    ax1.plot(it, series("reward"), color="tab:blue")
    ax1.set(xlabel="iteration", ylabel="reward per episode", title="training reward")
    ax2.plot(it, series("cost"), color="tab:red", label="cost (G0 items per episode)")
    if any("cost_limit" in r for r in records):
        ax2.plot(it, series("cost_limit"), "k--", label="limit α'·K × episode length")
    infeasible = [(r["iteration"], r.get("cost", float("nan"))) for r in records
                  if str(r.get("cpo_case", "")).startswith("infeasible")]
    if infeasible:
        ax2.plot(*zip(*infeasible), "x", color="tab:purple", markersize=5, linestyle="none",
                 label=f"CPO: discounted cost above limit ({len(infeasible)}/{len(records)})")
    ax2.set(xlabel="iteration", ylabel="G0 items per episode", title="training cost vs the limit")
    ax2.legend(loc="best", fontsize=8)
    if has_share:
        ax3 = axes[2]
        ax3.plot(it, [100 * x for x in series("popular_share")], color="tab:orange", label="popular share")
        if alpha is not None:
            ax3.axhline(100 * alpha, color="k", linestyle="--", label=f"α' = {100 * alpha:g} %")
        ax3.set(xlabel="iteration", ylabel="G0 share of recommended items (%)", title="popular share vs α'")
        ax3.legend(loc="best", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, run_dir / "training_curves.png", dpi=110)
    plt.close(fig)
    return path


def constraint_on_test(agent_config: dict, test: dict) -> dict:
    """Did the test report meet α'?  ``{alpha_prime, rule, popular_share, max_step_share, met}``.

    The rule follows the agent's ``constraint`` mode: ``per-slate`` — every step's G0 share at most α'
    (``report["constraint"]["per_slate_ok"]``, no slate above the cap ⌊α'K⌋, when the report has it);
    otherwise (``expected``, the CMDP constraint) — the mean G0 share at most α'.  ``met`` is None
    when the run has no α'.  Reads ``report["constraint"]`` when present, else the report's
    ``popularity_rate`` and ``popular_share_per_step``.
    """
    alpha = agent_config.get("alpha_prime")
    m = test.get("metrics", {})
    cons = test.get("constraint") or {}
    share = cons.get("popular_share", m.get("popularity_rate"))
    per_step = cons.get("popular_share_per_step") or test.get("popular_share_per_step")
    max_step = cons.get("max_step_share")
    if max_step is None:
        max_step = max((x for x in per_step if x is not None), default=share) if per_step else share
    rule = "per-slate" if agent_config.get("constraint") == "per-slate" else "expected"
    met = None
    if alpha is not None and share is not None:
        eps = 1e-9
        if rule == "per-slate":
            met = bool(cons["per_slate_ok"]) if "per_slate_ok" in cons else max_step <= alpha + eps
        else:
            met = share <= alpha + eps
    return {"alpha_prime": alpha, "rule": rule, "popular_share": share, "max_step_share": max_step, "met": met}


def training_summary(config: RunConfig, records: list[dict], metrics: dict, run_dir: str | Path | None = None) -> str:
    """The few lines ``fcpo-train`` prints at the end: final reward, cost against the limit the agent
    logs, test popular share against α', and whether the constraint was met on test."""
    alpha = config.agent_config.get("alpha_prime")
    k = config.env.get("slate_size")
    head = "summary" + (f" of {run_dir}" if run_dir is not None else "") + f" ({len(records)} iteration(s)"
    head += (f", α' = {alpha:g}" if alpha is not None else "") + (f", K = {k}" if k else "") + ")"
    lines = [head]
    last = records[-1] if records else metrics.get("train", {})
    if "reward" in last:
        lines.append(f"  final training reward     {last['reward']:.4g} per episode")
    if "cost" in last:
        text = f"  final training cost       {last['cost']:.4g} G0 items per episode"
        limit = last.get("cost_limit")
        if limit is not None:
            text += f" vs limit {limit:.4g}"
            if alpha is not None and k:
                per_step = alpha * k
                text += f" (α'·K = {per_step:g} per step × {limit / per_step:.3g} steps)" if per_step else ""
            text += ": " + ("within" if last["cost"] <= limit + 1e-9 else "above")
        lines.append(text)
    test = metrics.get("test")
    if test:
        verdict = constraint_on_test(config.agent_config, test)
        share, max_step = verdict["popular_share"], verdict["max_step_share"]
        if share is not None:
            text = f"  test popular share        {100 * share:.1f} %"
            if alpha is not None:
                text += f" vs α' = {100 * alpha:g} %"
            if max_step is not None and test.get("protocol") == "rollout":
                text += f" (max per-step share {100 * max_step:.1f} %)"
            lines.append(text)
        if verdict["met"] is not None:
            if verdict["rule"] == "per-slate":
                why = f"per-slate: max per-step share {100 * max_step:.1f} %"
            else:
                why = f"expected: mean share {100 * share:.1f} %"
            why += (" ≤ " if verdict["met"] else " > ") + f"α' {100 * alpha:g} %"
            if not config.agent_config.get("constrained", True):
                why += "; this agent is unconstrained, α' is only reported"
            lines.append(f"  constraint met on test:   {'yes' if verdict['met'] else 'no'} ({why})")
    return "\n".join(lines)


def finish_run(run_dir: str | Path, config: RunConfig, agent, records: list[dict], protocol: str | None = "rollout",
               device="cpu") -> dict:
    """``metrics.json`` (last training record, and the test evaluation unless ``protocol`` is None, with
    its :func:`constraint_on_test` verdict) and the plot."""
    metrics = {"agent": config.agent, "iterations": config.iterations, "train": records[-1] if records else {}}
    if protocol is not None:
        metrics["test"] = evaluate_policy(agent.policy, config, protocol=protocol, device=device)
        metrics["constraint_on_test"] = constraint_on_test(config.agent_config, metrics["test"])
    write_json(Path(run_dir) / METRICS, metrics)
    plot_training(run_dir, records, config.agent_config.get("alpha_prime"))
    return metrics
