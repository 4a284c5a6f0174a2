"""Shared fixtures: an isolated cache for every test session and the location of the real data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Synthetic data and embeddings go to a per-session folder, never to ~/.cache."""
    old = os.environ.get("FCPO_CACHE_DIR")
    os.environ["FCPO_CACHE_DIR"] = str(tmp_path_factory.mktemp("fcpo-cache"))
    yield
    if old is None:
        os.environ.pop("FCPO_CACHE_DIR", None)
    else:
        os.environ["FCPO_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def synthetic_only_one_thread(tmp_path_factory):
    """For agent tests on synthetic data: a fresh cache, no real data, one torch thread (small tensors)."""
    import torch

    mp = pytest.MonkeyPatch()
    mp.setenv("FCPO_CACHE_DIR", str(tmp_path_factory.mktemp("fcpo_cache")))
    mp.delenv("FCPO_DATA_DIR", raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
    mp.undo()


def shared_data_dir() -> Path | None:
    """``$FCPO_DATA_DIR`` or ``../shared/data`` beside the repo, if it exists."""
    for candidate in (os.environ.get("FCPO_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data():
    folder = shared_data_dir()
    if folder is None:
        pytest.skip("real MovieLens data not available (set FCPO_DATA_DIR or place ../shared/data)")
    return folder


@pytest.fixture(scope="session")
def ml100k_dir(shared_data):
    if not (shared_data / "ml-100k" / "u.data").is_file():
        pytest.skip("ml-100k not in the shared data folder")
    return shared_data / "ml-100k"


@pytest.fixture(scope="session")
def ml1m_dir(shared_data):
    folder = shared_data / "ml-1m"
    if not ((folder / "ratings.dat").is_file() or (folder / "ratings.dat.gz").is_file()):
        pytest.skip("ml-1m not in the shared data folder")
    return folder
