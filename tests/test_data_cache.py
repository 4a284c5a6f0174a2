"""The processed-data cache and the synthetic generator under concurrent processes on an empty cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fcpo.data import SyntheticConfig, load_dataset, load_table, write_synthetic
from fcpo.data import cache as C
from fcpo.data import table as T

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("users", "items", "ratings", "timestamps", "user_raw_ids", "item_raw_ids", "item_titles", "item_genres")


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS) and a.genre_names == b.genre_names


def _log(path: Path, n=3000, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    rows = [f"U{u},I{i},{r},{t}" for u, i, r, t in zip(rng.integers(0, 200, n), rng.integers(0, 300, n),
                                                         rng.integers(1, 6, n), rng.permutation(n))]
    path.write_text("user,item,rating,ts\n" + "\n".join(rows) + "\n")
    return path


COLS = "user=user,item=item,rating=rating,timestamp=ts"


def test_second_load_reads_the_cache_and_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    path = _log(tmp_path / "log.csv")
    first = load_table(path, COLS)
    files = sorted(p.name for p in (tmp_path / "cache" / "processed").iterdir())
    assert len(files) == 2 and files[0].endswith(".lock") and files[1].endswith(".npz")  # no temp files left
    monkeypatch.setattr(T, "_build_from", lambda *a, **k: pytest.fail("parsed again despite the cache"))
    second = load_table(path, COLS)
    assert _same(first, second) and second.user_raw_ids.dtype.kind == "U"
    assert second.user_attributes["raw_id"].tolist() == first.user_attributes["raw_id"].tolist()


def test_key_changes_with_file_content_and_options(tmp_path):
    a = _log(tmp_path / "a.csv", seed=0)
    k1 = C.ratings_cache_key("table", [a], {"columns": COLS})
    assert C.ratings_cache_key("table", [a], {"columns": COLS}) == k1
    assert C.ratings_cache_key("table", [a], {"columns": COLS, "threshold": 3}) != k1
    time.sleep(0.01)
    _log(a, seed=1)
    assert C.ratings_cache_key("table", [a], {"columns": COLS}) != k1


def test_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    path = _log(tmp_path / "log.csv")
    first = load_table(path, COLS)
    (entry,) = (tmp_path / "cache" / "processed").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    again = load_table(path, COLS)
    assert _same(first, again) and entry.stat().st_size > 100


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating,ts\nA,B,x,1\n")
    with pytest.raises(ValueError, match="rating 'x'"):
        load_table(bad, COLS)
    assert [p.suffix for p in (tmp_path / "cache" / "processed").iterdir()] == [".lock"]


_WORKER = r"""
import json, os, sys, time
from pathlib import Path
out, kind, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
import fcpo.data as D
from fcpo.data import synthetic as S, table as T
def counted(module, name):
    original = getattr(module, name)
    def wrapper(*a, **k):
        with open(out / "builds", "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return original(*a, **k)
    setattr(module, name, wrapper)
while time.time() < start:  # all workers leave the barrier together, imports done
    time.sleep(0.005)
if kind == "table":
    counted(T, "_build_from")
    d = D.load_table(sys.argv[4], "user=user,item=item,rating=rating,timestamp=ts")
elif kind == "synthetic":
    counted(S, "generate")
    d = D.load_dataset("synthetic", synthetic=D.SyntheticConfig(n_users=400, n_items=500, seed=7))
else:
    from fcpo.data import embeddings as E
    counted(E, "train_mf")
    d = D.load_dataset("synthetic", synthetic=D.SyntheticConfig(n_users=100, n_items=120, min_ratings_per_user=10))
    emb = E.load_embeddings(d, D.fcpo_split(d), E.MFConfig(dim=4, epochs=3), progress=False)
    (out / f"{os.getpid()}.emb.npy").write_bytes(emb.item.tobytes())
from fcpo.data.embeddings import data_digest
(out / f"{os.getpid()}.json").write_text(json.dumps({"digest": data_digest(d), "n": d.n_ratings}))
"""


def _race(tmp_path, kind, n_workers=4, extra=()):
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "FCPO_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("FCPO_DATA_DIR", None)
    start = time.time() + 8.0  # generous: 2 shared cores import pandas/scipy in 4 processes
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(out), kind, str(start), *extra], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n_workers)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(results) == n_workers and len({r["digest"] for r in results}) == 1
    builds = (out / "builds").read_text().split()
    return cache, builds


def test_concurrent_processes_parse_once_on_an_empty_cache(tmp_path):
    path = _log(tmp_path / "log.csv", n=200_000)
    cache, builds = _race(tmp_path, "table", extra=(str(path),))
    assert len(builds) == 1  # one winner parsed; the others waited on the lock and read its entry
    names = sorted(p.name for p in (cache / "processed").iterdir())
    assert len(names) == 2 and names[1].endswith(".npz") and not any(".part" in n for n in names)


def test_concurrent_synthetic_generation_is_safe(tmp_path):
    cache, builds = _race(tmp_path, "synthetic")
    assert len(builds) == 1  # generated once, never deleted under a reader
    folders = [p.name for p in cache.iterdir() if p.name.startswith("synthetic-")]
    assert len(folders) == 1 and not [p for p in cache.iterdir() if p.name.startswith((".tmp", ".old"))]
    assert sorted(p.name for p in (cache / folders[0]).iterdir()) == [
        "SOURCE.md", "movies.dat", "ratings.dat.gz", "synthetic.json", "users.dat"]


def test_write_synthetic_reuses_a_complete_folder_and_replaces_a_stale_one(tmp_path, monkeypatch):
    cfg = SyntheticConfig(n_users=60, n_items=80, min_ratings_per_user=10)
    folder = write_synthetic(tmp_path / "s", cfg)
    stamp = (folder / "synthetic.json").stat().st_mtime_ns
    from fcpo.data import synthetic as S

    monkeypatch.setattr(S, "generate", lambda c: pytest.fail("regenerated a complete folder"))
    assert write_synthetic(tmp_path / "s", cfg) == folder and (folder / "synthetic.json").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    (folder / "synthetic.json").unlink()  # an old/partial folder: replaced atomically
    write_synthetic(tmp_path / "s", cfg)
    assert (folder / "synthetic.json").is_file()
    assert load_dataset("synthetic", data_dir=folder).n_users == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.lock", "s"]


def test_cached_split_round_trips_exactly(tmp_path, monkeypatch):
    from fcpo.data import fcpo_split
    from fcpo.data import split as S

    path = _log(tmp_path / "log.csv")
    data = load_table(path, COLS, cache=False)
    fresh = fcpo_split(data, n_initial=3, threshold=3.0)
    first = C.cached_split(data, "fcpo", n_initial=3, threshold=3.0, folder=tmp_path / "c")
    monkeypatch.setattr(S, "split_dataset", lambda *a, **k: pytest.fail("split again despite the cache"))
    again = C.cached_split(data, "fcpo", n_initial=3, threshold=3.0, folder=tmp_path / "c")
    for s in (first, again):
        for name in ("user_ids", "train_initial", "test_initial", "train_mask"):
            assert np.array_equal(getattr(s, name), getattr(fresh, name)), name
        for name in ("train_targets", "test_targets"):
            assert np.array_equal(getattr(s, name).indptr, getattr(fresh, name).indptr)
            assert np.array_equal(getattr(s, name).values, getattr(fresh, name).values)
        for name in ("train_ratings", "test_ratings"):
            assert (getattr(s, name) != getattr(fresh, name)).nnz == 0
        assert (s.threshold, s.n_initial, s.dropped_users) == (3.0, 3, fresh.dropped_users)
    monkeypatch.undo()
    other = C.cached_split(data, "leave-one-out", n_initial=3, threshold=3.0, folder=tmp_path / "c")
    assert other.protocol == "leave-one-out" and len(list((tmp_path / "c").glob("split-*.npz"))) == 2


def test_concurrent_embedding_training_happens_once(tmp_path):
    cache, builds = _race(tmp_path, "embeddings", n_workers=3)
    assert len(builds) == 1  # one process trained; the others read its file
    items = [p.read_bytes() for p in (tmp_path / "out").glob("*.emb.npy")]
    assert len(items) == 3 and len(set(items)) == 1
    assert [p.suffix for p in (cache / "embeddings").iterdir()] == [".npz"]
