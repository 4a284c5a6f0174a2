"""fcpo.data.download against a real local HTTP server serving small generated ML-100K-format zips."""
from __future__ import annotations

import hashlib
import http.server
import io
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest

import fcpo.data
from fcpo.data import download
from fcpo.data.download import ChecksumMismatchError, DownloadError, UnsafeArchiveError, download_dataset

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def ml100k_files() -> dict[str, bytes]:
    """A tiny data set in the ML-100K file format (4 users, 5 items)."""
    ratings = [(1, 1, 5), (1, 2, 3), (1, 3, 4), (2, 1, 4), (2, 4, 2), (3, 2, 5), (3, 5, 1), (4, 3, 4), (4, 5, 5)]
    u_data = "".join(f"{u}\t{i}\t{r}\t{881250949 + 60 * k}\n" for k, (u, i, r) in enumerate(ratings))
    u_item = "".join(
        f"{i}|Movie {i} (1995)|01-Jan-1995||http://example.invalid/{i}|"
        + "|".join("1" if g == i % len(GENRES) else "0" for g in range(len(GENRES))) + "\n"
        for i in range(1, 6))
    u_genre = "".join(f"{g}|{j}\n" for j, g in enumerate(GENRES)) + "\n"
    u_user = "".join(f"{u}|{20 + u}|{'MF'[u % 2]}|student|5540{u}\n" for u in range(1, 5))
    return {"u.data": u_data.encode(), "u.item": u_item.encode("latin-1"), "u.genre": u_genre.encode(),
            "u.user": u_user.encode()}


def make_zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/", b"")
        for name, content in members.items():
            zf.writestr(name, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


GOOD = make_zip({f"ml-100k/{k}": v for k, v in ml100k_files().items()})
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
CORRUPT = GOOD[:-40] + bytes(40)  # same length, last bytes zeroed
EVIL = make_zip({**{f"ml-100k/{k}": v for k, v in ml100k_files().items()}, "ml-100k/../../evil": b"pwned"})
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server API)
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"files": {"/good.zip": GOOD, "/corrupt.zip": CORRUPT, "/evil.zip": EVIL},
                                            "hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def env(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FCPO_CACHE_DIR", str(cache))
    for var in ("FCPO_DATA_DIR", "FCPO_ML_100K_URL", "FCPO_ML_100K_SHA256", "FCPO_ML_1M_URL", "FCPO_ML_1M_SHA256"):
        monkeypatch.delenv(var, raising=False)
    return cache


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_official_pins_are_well_formed():
    for name, source in download.SOURCES.items():
        assert source.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        if source.sha256 is not None:
            assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
    # pinned from tensorflow/datasets' url_checksums; ml-10m / ml-32m could not be verified offline
    assert {n for n, s in download.SOURCES.items() if s.sha256} == {"ml-100k", "ml-1m", "ml-20m", "ml-25m"}
    assert {"ml-10m", "ml-32m"} <= set(download.SOURCES)


def test_unpinned_download_warns_with_the_actual_hash(server, env, monkeypatch, caplog):
    base, _ = server
    monkeypatch.setitem(download.SOURCES, "ml-100k", download.Source(base + "/good.zip", None, 0, "u.data"))
    with caplog.at_level("WARNING"):
        folder = download_dataset("ml-100k", env, progress=False)
    assert (folder / "u.data").is_file()
    assert "NOT verified" in caplog.text and GOOD_SHA in caplog.text


def test_good_zip_downloads_verifies_extracts_and_loads(server, env, monkeypatch):
    base, handler = server
    monkeypatch.setenv("FCPO_ML_100K_URL", base + "/good.zip")
    monkeypatch.setenv("FCPO_ML_100K_SHA256", GOOD_SHA)
    data = fcpo.data.load_dataset("ml-100k")  # sources.py: no data dir, empty cache -> download
    assert (data.n_users, data.n_items, data.n_ratings) == (4, 5, 9)
    assert data.genre_names == tuple(GENRES)
    folder = env / "ml-100k"
    assert (folder / "u.data").read_bytes() == ml100k_files()["u.data"]  # the top folder is stripped
    assert [p for p in listing(env) if not p.startswith("processed")] == [
        "ml-100k", "ml-100k.zip", "ml-100k/u.data", "ml-100k/u.genre", "ml-100k/u.item", "ml-100k/u.user"]
    processed = [p for p in listing(env) if p.startswith("processed/")]  # the parsed set: one entry + its lock
    assert len(processed) == 2 and sum(p.endswith(".npz") for p in processed) == 1
    assert hashlib.sha256((env / "ml-100k.zip").read_bytes()).hexdigest() == GOOD_SHA
    assert handler.hits == ["/good.zip"]
    # second call: served from the cache, no request
    assert download_dataset("ml-100k", env, progress=False) == folder
    fcpo.data.load_dataset("ml-100k")
    assert handler.hits == ["/good.zip"]


def test_arguments_override_environment(server, env, monkeypatch):
    base, handler = server
    monkeypatch.setenv("FCPO_ML_100K_URL", base + "/missing.zip")
    folder = download_dataset("ml-100k", env / "other", url=base + "/good.zip", sha256=GOOD_SHA.upper(),
                              progress=True)
    assert (folder / "u.data").is_file() and folder == env / "other" / "ml-100k"
    assert handler.hits == ["/good.zip"]


def test_checksum_mismatch_leaves_nothing(server, env):
    base, _ = server
    with pytest.raises(ChecksumMismatchError, match="SHA-256 mismatch") as info:
        download_dataset("ml-100k", env, url=base + "/corrupt.zip", sha256=GOOD_SHA, progress=False)
    assert GOOD_SHA in str(info.value) and hashlib.sha256(CORRUPT).hexdigest() in str(info.value)
    assert listing(env) == []


def test_official_checksum_applies_to_mirrors_by_default(server, env):
    base, _ = server
    with pytest.raises(ChecksumMismatchError, match=download.SOURCES["ml-100k"].sha256):
        download_dataset("ml-100k", env, url=base + "/good.zip", progress=False)
    assert listing(env) == []


def test_checksum_can_be_skipped(server, env, caplog):
    base, _ = server
    folder = download_dataset("ml-100k", env, url=base + "/good.zip", sha256="skip", progress=False)
    assert (folder / "u.data").is_file()
    assert "verification disabled" in caplog.text


def test_path_traversal_is_refused_and_nothing_left(server, env, tmp_path):
    base, _ = server
    with pytest.raises(UnsafeArchiveError, match=r"\.\./\.\./evil"):
        download_dataset("ml-100k", env, url=base + "/evil.zip", sha256=EVIL_SHA, progress=False)
    assert listing(env) == []
    assert listing(tmp_path) == ["cache"]  # nothing written next to the cache either
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("members,links,why", [
    ({"/abs/u.data": b"x"}, None, "absolute path"),
    ({"ml-100k/u.data": b"x", "..\\evil": b"x"}, None, r"'\.\.' in path"),
    ({"ml-100k/u.data": b"x"}, {"ml-100k/link": "/etc/passwd"}, "symbolic link"),
])
def test_safe_extract_refuses_unsafe_members(tmp_path, members, links, why):
    zip_path = tmp_path / "a.zip"
    zip_path.write_bytes(make_zip(members, links))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UnsafeArchiveError, match=why):
        download.safe_extract(zip_path, target)
    assert listing(target) == []  # checked before anything is extracted


def test_broken_zip_is_an_oserror_and_leaves_nothing(server, env):
    base, handler = server
    handler.files["/junk.zip"] = b"not a zip at all"
    with pytest.raises(DownloadError, match="cannot extract"):
        download_dataset("ml-100k", env, url=base + "/junk.zip", sha256="skip", progress=False)
    assert listing(env) == []


def test_http_404_is_an_oserror(server, env):
    base, _ = server
    with pytest.raises(OSError, match="404"):
        download_dataset("ml-100k", env, url=base + "/nope.zip", progress=False)
    assert listing(env) == []


def test_no_network_names_the_three_ways(env, monkeypatch):
    with socket.socket() as sock:  # a port that was just free and is now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FCPO_ML_100K_URL", f"http://127.0.0.1:{port}/ml-100k.zip")
    with pytest.raises(FileNotFoundError) as info:
        fcpo.data.load_dataset("ml-100k")
    message = str(info.value)
    assert "three ways" in message and "the download failed" in message
    for way in ("1. pass data_dir=", "2. set FCPO_DATA_DIR", "3. allow the download"):
        assert way in message
    assert isinstance(info.value.__cause__, OSError)
    assert listing(env) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no download known"):
        download_dataset("synthetic", tmp_path)
    with pytest.raises(ValueError, match="64 hex digits"):
        download.resolve_source("ml-1m", sha256="abc")
    with pytest.raises(DownloadError, match="scheme"):
        download_dataset("ml-1m", tmp_path, url="ftp://example.invalid/x.zip")
    assert listing(tmp_path) == []
