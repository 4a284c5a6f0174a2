"""Convert a GGUF model once into a cached ``transformers`` folder (safetensors), then reuse it.

De-quantising a GGUF file with ``transformers`` takes 20-45 s for SmolLM2-135M; loading the
float safetensors it produces takes about a second.  :func:`cached_conversion` keys the folder by
the file's SHA-256 (``<cache root>/models/<stem>-<sha256[:16]>``, the root being
``$FCPO_CACHE_DIR`` or ``~/.cache/fcpo``), converts into a temporary folder beside it and
publishes it with ``os.replace``: a reader sees either no folder or a complete one, and when two
processes convert at once the first rename wins and the other discards its copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["cache_root", "file_sha256", "cached_conversion", "CONVERSIONS"]

#: conversions run in this process (by source path), for tests and benchmarks
CONVERSIONS: dict[str, int] = {}
_MARKER = "fcpo-conversion.json"
_SHA_MEMO: dict[tuple, str] = {}


def cache_root() -> Path:
    """``$FCPO_CACHE_DIR`` or ``~/.cache/fcpo``."""
    return Path(os.environ.get("FCPO_CACHE_DIR", Path.home() / ".cache" / "fcpo")).expanduser()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file (memoised per process by path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def cached_conversion(source: str | os.PathLike, convert: Callable[[Path, Path], None],
                      cache_dir: str | os.PathLike | None = None, kind: str = "models") -> Path:
    """The folder holding ``convert(source, folder)``'s output, converting only when it is not cached.

    ``convert`` writes into the (empty, temporary) folder it is given.  The key is the source's
    SHA-256, so a changed file gets a new folder.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    sha = file_sha256(source)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / kind
    final = root / f"{source.stem}-{sha[:16]}"
    if (final / _MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    try:
        convert(source, tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(source), "sha256": sha}))
        CONVERSIONS[str(source)] = CONVERSIONS.get(str(source), 0) + 1
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / _MARKER).is_file():  # not a lost race: a broken folder is in the way
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
