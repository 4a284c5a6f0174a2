"""Reading data files safely: gzip errors and encodings become messages naming the file.

Every reader in :mod:`fcpo.data` opens files through here, so a truncated
``.gz`` says which file is broken (not a bare ``EOFError``), and text is decoded
as strict UTF-8 first and latin-1 second (MovieLens ships latin-1 files; newer
releases and most other logs are UTF-8).
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import tempfile
import zlib
from pathlib import Path


class DataFormatError(ValueError):
    """A data file (or table) cannot be read as documented; the message names the file, column and line."""


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


def is_gzip(path: Path) -> bool:
    return Path(path).suffix == ".gz"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The (decompressed) content of ``path``; a corrupt ``.gz`` raises :class:`DataFormatError`."""
    path = Path(path)
    if not is_gzip(path):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise
    except _GZIP_ERRORS as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip file ({type(exc).__name__}: {exc}); "
                              "delete it and provide the file again") from exc


def decode(raw: bytes, path: str | os.PathLike) -> str:
    """Strict UTF-8, else latin-1 (which decodes any byte string)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_text(path: str | os.PathLike) -> str:
    return decode(read_bytes(path), path)


def head_text(path: str | os.PathLike, n_bytes: int = 1 << 16) -> str:
    """The first ``n_bytes`` (decompressed) of ``path``, decoded; for header and delimiter sniffing."""
    path = Path(path)
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as fh:
                raw = fh.read(n_bytes)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(n_bytes)
    except FileNotFoundError:
        raise
    except _GZIP_ERRORS as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip file ({type(exc).__name__}: {exc})") from exc
    if len(raw) == n_bytes:  # do not split a multi-byte character at the cut
        raw = raw[: raw.rfind(b"\n") + 1] or raw
    return decode(raw, path)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of the bytes of ``path`` as stored (compressed files are hashed compressed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike):
    """Hold an exclusive :func:`fcntl.flock` on ``lock_path`` (created if needed) for the block.

    Several processes building the same cache entry serialise on it: the first
    builds, the others wait and then find the finished entry.  The lock is
    released by the kernel if the holder dies, so a crash never blocks others.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, fsync, then :func:`os.replace` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
