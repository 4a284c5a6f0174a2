"""Run folders: ``runs/<name>/`` with the resolved config, logs, checkpoints, metrics and plots.

Everything written here is atomic (temp file in the same folder + ``os.replace``),
so an interrupted run never leaves a half-written file; checkpoints hold only
tensors and plain Python values and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
METRICS = "metrics.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` to a temp file, then rename over the old checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path, device="cpu") -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (was the run started?)")
    return torch.load(path, map_location=device, weights_only=True)


def environment_info() -> dict:
    """Package versions and the git commit of the fcpo source, if it is a checkout."""
    import gymnasium
    import numpy

    import fcpo

    info = {"python": platform.python_version(), "platform": platform.platform(), "fcpo": fcpo.__version__,
            "torch": str(torch.__version__), "numpy": str(numpy.__version__), "gymnasium": str(gymnasium.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        src = Path(fcpo.__file__).resolve().parents[1]
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                            check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def dataclass_from_dict(cls, values: dict, where: str):
    """Build dataclass ``cls`` from ``values``; unknown keys raise an error naming ``where``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**values)


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")
        fh.flush()


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not valid JSON ({exc})") from None
    return out


def truncate_jsonl(path: Path, last_iteration: int) -> list[dict]:
    """Keep the records up to ``last_iteration`` (those a checkpoint covers); rewrite atomically."""
    records = [r for r in read_jsonl(path) if r.get("iteration", -1) <= last_iteration]
    atomic_write_text(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in records))
    return records


def save_config(run_dir: Path, config: dict) -> None:
    atomic_write_text(run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))


def load_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an fcpo run folder (no {CONFIG})")
    with open(path) as fh:
        return yaml.safe_load(fh)


def plot_training(run_dir: Path, records: list[dict]) -> Path | None:
    """PNG of the training reward and cost per episode, with the cost limit line."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(it, [r.get("reward", float("nan")) for r in records], color="tab:blue")
    ax1.set(xlabel="iteration", ylabel="reward per episode", title="training reward")
    ax2.plot(it, [r.get("cost", float("nan")) for r in records], color="tab:red", label="cost (G0 items / episode)")
    if any("cost_limit" in r for r in records):
        ax2.plot(it, [r.get("cost_limit", float("nan")) for r in records], "k--", label="limit α'·K·steps")
    ax2.set(xlabel="iteration", ylabel="cost per episode", title="training cost")
    ax2.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = run_dir / "training_curves.png"
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".training_curves.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def as_dict(dc) -> dict:
    return asdict(dc)
