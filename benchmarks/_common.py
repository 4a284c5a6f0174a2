"""Helpers shared by the benchmark scripts (not part of the installed package)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "benchmarks"


def default_data_dir() -> str | None:
    """``$FCPO_DATA_DIR`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("FCPO_DATA_DIR")
    if env:
        return env
    shared = REPO.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def machine_info() -> dict:
    """The conditions a timing was taken under, to store next to every figure: torch's thread count
    (None without torch), ``OMP_NUM_THREADS`` and the 1/5/15-minute load average (the machine is shared)."""
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"threads": threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg": load}


def machine() -> dict:
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus machine facts, with the thread count and load average at writing) atomically."""
    from fcpo.runs import atomic_write

    payload = {"machine": {**machine(), **machine_info()}, **payload}
    return atomic_write(path, json.dumps(payload, indent=2, default=float))


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:,.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
