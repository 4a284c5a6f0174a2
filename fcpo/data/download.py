"""Download of the official GroupLens MovieLens zips into the fcpo cache.

``download_dataset("ml-1m", cache_root)`` fetches the zip with :mod:`urllib`
(no extra dependency), verifies its SHA-256 while streaming, writes it
atomically (temp file in the same folder + :func:`os.replace`), checks every
archive member (no absolute paths, no ``..``, no links, no special files)
before extracting anything, extracts into a temporary folder and renames it
atomically to ``cache_root/<name>/``, which then directly holds
``ratings.dat`` (ML-1M) or ``u.data`` (ML-100K).

Any failure (network, checksum, unsafe or broken archive) raises an
:class:`OSError` subclass and leaves nothing behind in the cache: no zip, no
partial folder.  :mod:`fcpo.data.sources` turns it into a message naming the
three ways to provide the data.

Overrides, for mirrors and tests: the ``url`` / ``sha256`` arguments, else the
environment variables ``FCPO_ML_1M_URL`` / ``FCPO_ML_100K_URL`` and
``FCPO_ML_1M_SHA256`` / ``FCPO_ML_100K_SHA256``, else the official values
below.  The checksum value ``"skip"`` disables verification (with a warning).
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str | None  # None: no pinned checksum (the download warns and prints the actual one)
    size: int  # bytes of the official zip (informational; the check is the SHA-256)
    marker: str  # file that the extracted folder must hold directly


def _sources() -> dict[str, Source]:
    """Downloadable entries of :mod:`fcpo.data.registry` (pins and their provenance are documented there)."""
    from fcpo.data.registry import REGISTRY

    return {name: Source(url=e.url, sha256=e.sha256, size=e.size or 0, marker=e.marker)
            for name, e in REGISTRY.items() if e.url}


SOURCES: dict[str, Source] = _sources()
SKIP = "skip"  # sha256 value that disables verification
MAX_EXTRACTED_BYTES = 4 << 30  # refuse archives that would unpack to more than 4 GiB
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A download or extraction of a data set failed; nothing was left in the cache."""


class ChecksumMismatchError(DownloadError):
    """The downloaded file's SHA-256 differs from the expected one."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the target folder (absolute path, ``..``, link)."""


def _env_key(name: str) -> str:
    return "FCPO_" + name.upper().replace("-", "_")  # ml-1m -> FCPO_ML_1M


def resolve_source(name: str, url: str | None = None, sha256: str | None = None) -> tuple[str, str | None]:
    """The URL and expected SHA-256 for ``name``: arguments, then environment, then the official values.

    ``None`` as the SHA-256: nothing is pinned for ``name`` (not verified offline); the download then
    proceeds with a warning giving the actual SHA-256 to pin.
    """
    if name not in SOURCES:
        raise ValueError(f"no download known for {name!r}; choose one of {', '.join(SOURCES)}")
    key = _env_key(name)
    url = url or os.environ.get(key + "_URL") or SOURCES[name].url
    sha256 = sha256 or os.environ.get(key + "_SHA256") or SOURCES[name].sha256
    if sha256 is None:
        return url, None
    sha256 = sha256.strip().lower()
    if sha256 != SKIP and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
        raise ValueError(f"{name}: expected SHA-256 must be 64 hex digits or {SKIP!r}, got {sha256!r}")
    return url, sha256


def _fetch(url: str, out, progress: bool, timeout: float, desc: str) -> str:
    """Stream ``url`` into the open binary file ``out``; return the SHA-256 hex digest."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {url!r} (use http, https or file)")
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "fcpo-data-download"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                      disable=not progress, leave=False) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except http.client.HTTPException as exc:  # e.g. IncompleteRead: not an OSError by itself
        raise DownloadError(f"download of {url} failed: {exc!r}") from exc
    if total is not None and received != total:
        raise DownloadError(f"download of {url} truncated: got {received} of {total} bytes")
    return digest.hexdigest()


def _check_members(archive: zipfile.ZipFile, target: Path) -> list[zipfile.ZipInfo]:
    """Refuse the whole archive if any member could escape ``target``; return the members."""
    root = target.resolve()
    members = archive.infolist()
    total = 0
    for info in members:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        mode = info.external_attr >> 16
        why = None
        if not name or path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            why = "absolute path"
        elif ".." in path.parts:
            why = "'..' in path"
        elif stat.S_ISLNK(mode):
            why = "symbolic link"
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no Unix type recorded
            why = "special file"
        elif not (root / path).resolve().is_relative_to(root):
            why = "resolves outside the target folder"
        if why:
            raise UnsafeArchiveError(f"refusing to extract archive: member {name!r} is unsafe ({why}); "
                                     "nothing was extracted")
        total += info.file_size
    if total > MAX_EXTRACTED_BYTES:
        raise UnsafeArchiveError(f"refusing to extract archive: it would unpack to {total} bytes "
                                 f"(limit {MAX_EXTRACTED_BYTES})")
    return members


def safe_extract(zip_path: str | os.PathLike, target: str | os.PathLike) -> None:
    """Extract ``zip_path`` into the existing folder ``target`` after checking every member."""
    target = Path(target)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _check_members(archive, target)
            for info in members:
                dest = target / PurePosixPath(info.filename.replace("\\", "/"))
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(dest, "xb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, RuntimeError, ValueError) as exc:
        raise DownloadError(f"cannot extract {zip_path}: {exc}") from exc


def _payload_folder(extracted: Path, marker: str) -> Path:
    """The folder holding ``marker``: the extraction folder itself or its single top folder."""
    if (extracted / marker).is_file():
        return extracted
    hits = [d for d in extracted.iterdir() if d.is_dir() and (d / marker).is_file()]
    if len(hits) != 1:
        raise DownloadError(f"the archive holds no top folder with {marker!r} (found {len(hits)})")
    return hits[0]


def download_dataset(name: str, cache_root: str | os.PathLike, url: str | None = None, sha256: str | None = None,
                     progress: bool = True, timeout: float = 60.0) -> Path:
    """Download, verify and extract MovieLens ``name`` into ``cache_root/<name>/``; return that folder.

    Returns at once if the folder already holds the data.  Raises
    :class:`DownloadError` (an :class:`OSError`) or another :class:`OSError`
    (e.g. :class:`urllib.error.URLError`) on failure, leaving no zip and no
    partial folder behind.
    """
    url, expected = resolve_source(name, url, sha256)
    marker = SOURCES[name].marker
    cache_root = Path(cache_root).expanduser()
    final = cache_root / name
    if (final / marker).is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    zip_final = cache_root / f"{name}.zip"
    fd, part = tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.part", dir=cache_root)
    part = Path(part)
    extract_dir: Path | None = None
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            log.info("downloading %s from %s", name, url)
            actual = _fetch(url, out, progress, timeout, desc=f"{name}.zip")
            out.flush()
            os.fsync(out.fileno())
        if expected is None:
            log.warning("%s: fcpo pins no SHA-256 for this archive, so it was NOT verified; its SHA-256 is %s "
                        "(check it against a trusted source and pin it with %s_SHA256)", name, actual, _env_key(name))
        elif expected == SKIP:
            log.warning("%s: SHA-256 verification disabled; downloaded file has SHA-256 %s", name, actual)
        elif actual != expected:
            raise ChecksumMismatchError(
                f"{name}: SHA-256 mismatch for {url}: expected {expected}, got {actual}. The file was deleted; "
                f"nothing was written to {cache_root}. If you use a mirror, set {_env_key(name)}_SHA256.")
        os.replace(part, zip_final)
        extract_dir = Path(tempfile.mkdtemp(prefix=f".{name}-extract-", dir=cache_root))
        safe_extract(zip_final, extract_dir)
        payload = _payload_folder(extract_dir, marker)
        try:
            os.replace(payload, final)
        except OSError as exc:
            if (final / marker).is_file():  # a concurrent download won the race
                log.info("%s appeared in %s meanwhile; using it", name, final)
            else:
                raise DownloadError(f"cannot move the extracted data to {final} ({exc}); "
                                    "if that folder exists without the data, remove it") from exc
        done = True
        return final
    finally:
        part.unlink(missing_ok=True)
        if extract_dir is not None:
            shutil.rmtree(extract_dir, ignore_errors=True)
        if not done:
            zip_final.unlink(missing_ok=True)
