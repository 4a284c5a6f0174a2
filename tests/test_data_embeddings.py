"""fcpo.data.embeddings: determinism, cache behaviour, ranking quality (synthetic; real ml-100k when present)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fcpo.data import embeddings as E
from fcpo.data import SyntheticConfig, fcpo_split, load_dataset
from fcpo.data.embeddings import Embeddings, MFConfig, load_embeddings, mf_scores, topk_quality, train_mf

FAST = MFConfig(batch_size=1024, epochs=15)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FCPO_DATA_DIR", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def _synthetic_once(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FCPO_CACHE_DIR", str(tmp_path_factory.mktemp("synthetic-cache")))
        mp.delenv("FCPO_DATA_DIR", raising=False)
        data = load_dataset("synthetic")
    return data, fcpo_split(data)


@pytest.fixture
def synthetic(cache, _synthetic_once):
    return _synthetic_once


def test_config_validation_and_method_defaults():
    assert MFConfig().method == "bpr" and MFConfig().dim == 32 and MFConfig().seed == 0
    assert MFConfig().weight_decay == E.DEFAULT_WEIGHT_DECAY["bpr"]
    assert MFConfig(method="pmf").weight_decay == E.DEFAULT_WEIGHT_DECAY["pmf"]
    assert MFConfig(weight_decay=0.0).weight_decay == 0.0
    for bad in ({"method": "auto"}, {"method": "als"}, {"dim": 0}, {"epochs": 1.5}, {"lr": 0}, {"weight_decay": -1}):
        with pytest.raises(ValueError):
            MFConfig(**bad)
    assert MFConfig.from_dict(MFConfig(dim=8).to_dict()) == MFConfig(dim=8)


@pytest.mark.parametrize("method", ["bpr", "pmf"])
def test_deterministic_under_seed(synthetic, method):
    _, split = synthetic
    config = MFConfig(method=method, batch_size=1024, epochs=3)
    a, b = train_mf(split, config, progress=False), train_mf(split, config, progress=False)
    assert a.user.dtype == np.float32 and a.item.dtype == np.float32
    assert a.user.shape == (split.n_users, 32) and a.item.shape == (split.n_items, 32)
    np.testing.assert_array_equal(a.user, b.user)
    np.testing.assert_array_equal(a.item, b.item)
    assert a.stats["epoch_loss"] == b.stats["epoch_loss"] and len(a.stats["epoch_loss"]) == 3
    c = train_mf(split, MFConfig(method=method, batch_size=1024, epochs=3, seed=1), progress=False)
    assert not np.array_equal(a.user, c.user)


def test_trains_on_the_train_period_only(synthetic):
    data, split = synthetic
    emb = train_mf(split, MFConfig(batch_size=1024, epochs=1), progress=False)
    assert emb.stats["interactions"] == int(split.train_mask.sum()) < data.n_ratings
    pmf = train_mf(split, MFConfig(method="pmf", batch_size=1024, epochs=1), progress=False)
    assert pmf.stats["global_mean"] == pytest.approx(float(data.ratings[split.train_mask].mean()), rel=1e-5)
    only4 = train_mf(split, MFConfig(batch_size=1024, epochs=1, positive_threshold=4), progress=False)
    assert only4.stats["interactions"] == int((data.ratings[split.train_mask] >= 4).sum())


def test_mf_scores_are_dot_products(synthetic):
    _, split = synthetic
    emb = train_mf(split, MFConfig(batch_size=1024, epochs=1), progress=False)
    scores = mf_scores(emb, np.array([3, 0, 7]))
    assert scores.shape == (3, split.n_items) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[1], emb.item @ emb.user[0], rtol=1e-5, atol=1e-6)
    assert mf_scores(emb, 5).shape == (1, split.n_items)


def test_cache_hit_is_identical_and_does_not_retrain(synthetic, cache, monkeypatch):
    data, split = synthetic
    first = load_embeddings(data, split, FAST, progress=False)
    assert not first.cached
    files = sorted((cache / "embeddings").iterdir())
    assert [f.name for f in files] == [E.cache_key(data, split, FAST) + ".npz"]

    def boom(*args, **kwargs):
        raise AssertionError("retrained despite a valid cache")

    monkeypatch.setattr(E, "train_mf", boom)
    second = load_embeddings(data, split, FAST, progress=False)
    assert second.cached
    np.testing.assert_array_equal(first.user, second.user)
    np.testing.assert_array_equal(first.item, second.item)
    assert second.config == FAST and second.stats["epoch_loss"] == first.stats["epoch_loss"]
    # another config or another train mask is another key (and would train)
    with pytest.raises(AssertionError, match="retrained"):
        load_embeddings(data, split, MFConfig(batch_size=1024, epochs=15, dim=16), progress=False)
    loo = E.cache_key(data, fcpo_split(data, train_ratio=0.7), FAST)
    assert loo != E.cache_key(data, split, FAST)


def test_explicit_cache_dir(synthetic, tmp_path):
    data, split = synthetic
    emb = load_embeddings(data, split, FAST, cache_dir=tmp_path / "emb", progress=False)
    assert (tmp_path / "emb" / f"{E.cache_key(data, split, FAST)}.npz").is_file()
    assert load_embeddings(data, split, FAST, cache_dir=tmp_path / "emb", progress=False).cached
    assert emb.dim == 32


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupted_cache_is_removed_and_retrained(synthetic, cache, monkeypatch, damage):
    data, split = synthetic
    first = load_embeddings(data, split, FAST, progress=False)
    path = cache / "embeddings" / f"{E.cache_key(data, split, FAST)}.npz"
    if damage == "garbage":
        path.write_bytes(b"\x00not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        with np.load(path) as z:
            stored = dict(z)
        stored["user"] = stored["user"][:-1]
        with open(path, "wb") as fh:
            np.savez(fh, **stored)
    calls = []
    real = E.train_mf

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(E, "train_mf", counting)
    again = load_embeddings(data, split, FAST, progress=False)
    assert calls == [1] and not again.cached
    np.testing.assert_array_equal(first.user, again.user)
    assert load_embeddings(data, split, FAST, progress=False).cached  # the rewritten file is valid
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left


def test_failed_write_leaves_no_cache_file(synthetic, cache, monkeypatch):
    data, split = synthetic

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(E.np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        load_embeddings(data, split, FAST, progress=False)
    assert list((cache / "embeddings").iterdir()) == []


def test_split_of_other_data_is_rejected(synthetic, cache):
    data, split = synthetic
    other = load_dataset("synthetic", synthetic=SyntheticConfig(n_users=50, n_items=60, min_ratings_per_user=10))
    with pytest.raises(ValueError, match="does not belong"):
        load_embeddings(other, split, FAST, progress=False)


def test_topk_quality_oracle_and_bounds(synthetic):
    _, split = synthetic
    k = 10
    oracle = topk_quality(lambda u: split.test_targets.to_mask(split.n_items, np.searchsorted(split.user_ids, u))
                          .astype(np.float32), split, k)
    n_t = split.test_targets.lengths
    assert oracle["ndcg"] == pytest.approx(1.0)
    assert oracle["recall"] == pytest.approx(np.mean(np.minimum(n_t, k) / n_t))
    assert oracle["precision"] == pytest.approx(np.mean(np.minimum(n_t, k) / k))
    assert oracle["users"] == split.n_episode_users
    # a ranker that puts train items first gets nothing from them: they are excluded
    train_first = topk_quality(lambda u: split.train_ratings[u].toarray().astype(np.float32), split, k, batch=37)
    assert 0.0 <= train_first["recall"] <= 1.0


def test_mf_beats_random_and_popularity_on_synthetic(synthetic):
    _, split = synthetic
    emb = train_mf(split, MFConfig(batch_size=1024, epochs=20), progress=False)
    res = E.compare_rankers(split, emb)
    assert res["mf"]["recall"] > 4 * res["random"]["recall"]
    assert res["mf"]["recall"] > res["popularity"]["recall"]
    assert res["mf"]["ndcg"] > 4 * res["random"]["ndcg"]


def _ml100k_dir() -> Path | None:
    for base in (os.environ.get("FCPO_DATA_DIR"), REPO.parent / "shared" / "data"):
        if base and (Path(base) / "ml-100k" / "u.data").is_file():
            return Path(base) / "ml-100k"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_ml100k_dir() is None, reason="real ml-100k not found ($FCPO_DATA_DIR or ../shared/data)")
def test_mf_beats_random_on_real_ml100k(cache):
    data = load_dataset("ml-100k", data_dir=_ml100k_dir(), download=False)
    split = fcpo_split(data)  # threshold 4, n_initial 5, train 0.8
    emb = load_embeddings(data, split, MFConfig(), progress=False)
    assert isinstance(emb, Embeddings)
    res = E.compare_rankers(split, emb)
    assert res["mf"]["recall"] > 2 * res["random"]["recall"]
    assert res["mf"]["recall"] > res["popularity"]["recall"]  # measured: 0.139 vs 0.076 (random 0.006)


# ---------------------------------------------------------------- PureSVD (method="svd") and "auto"

def test_randomized_svd_matches_scipy_svds():
    """Singular values and the rank-r subspace equal an independent solver's (ARPACK via scipy)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    rng = np.random.default_rng(3)
    # interaction-like: a binary matrix drawn from a rank-6 preference model (a decaying spectrum)
    logits = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 120)) - 2.0
    a = sp.csr_matrix((rng.random((300, 120)) < 1 / (1 + np.exp(-logits))).astype(np.float64))
    u, s, vt = E.randomized_svd(a, 8, seed=0)
    u_ref, s_ref, vt_ref = svds(a.astype(np.float64), k=8)
    s_ref_sorted = np.sort(s_ref)[::-1]
    np.testing.assert_allclose(s[:6], s_ref_sorted[:6], rtol=1e-5)  # the signal directions: exact
    np.testing.assert_allclose(s, s_ref_sorted, rtol=1e-2)  # the noise floor: within 1 %
    top = np.argsort(s_ref)[::-1][:6]
    approx, ref = (u[:, :6] * s[:6]) @ vt[:6], (u_ref[:, top] * s_ref[top]) @ vt_ref[top]
    assert np.linalg.norm(approx - ref) / np.linalg.norm(ref) < 1e-3
    np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-10)
    u2, s2, vt2 = E.randomized_svd(a, 8, seed=0)
    np.testing.assert_array_equal(vt, vt2)  # deterministic, signs fixed
    assert (vt[np.arange(8), np.abs(vt).argmax(1)] > 0).all()
    with pytest.raises(ValueError, match="rank"):
        E.randomized_svd(a, 0)


def test_svd_embeddings_reconstruct_the_train_matrix(synthetic):
    _, split = synthetic
    config = MFConfig(method="svd", dim=16)
    emb = train_mf(split, config, progress=False)
    assert emb.user.dtype == np.float32 and emb.user.shape == (split.n_users, 16)
    binary = (split.train_ratings != 0).astype(np.float64).toarray()
    scores = emb.user @ emb.item.T
    # the Eckart-Young error of the best rank-16 approximation: the tail of the singular values
    tail = np.linalg.svd(binary, compute_uv=False)[16:]
    assert np.linalg.norm(binary - scores) <= 1.001 * np.sqrt((tail ** 2).sum())
    np.testing.assert_array_equal(emb.user, train_mf(split, config, progress=False).user)
    res = E.compare_rankers(split, emb)
    assert res["mf"]["recall"] > 4 * res["random"]["recall"]


def test_auto_method_picks_bpr_below_and_svd_above_the_threshold():
    limit = E.AUTO_SVD_MIN_INTERACTIONS
    assert E.resolve_method("auto", limit) == "bpr" and E.resolve_method("auto", limit + 1) == "svd"
    assert E.resolve_method("pmf", 10 ** 9) == "pmf"
    with pytest.raises(ValueError, match="embedding method"):
        E.resolve_method("als", 10)


def test_env_default_embeddings_are_bpr_on_small_data(cache):
    """``embedding_method="auto"`` keeps ml-100k-size data on BPR (same cache key as an explicit "bpr")."""
    from fcpo.envs.env_data import EnvDataKey, build_env_data

    auto = build_env_data(EnvDataKey(dataset="synthetic"))
    bpr = build_env_data(EnvDataKey(dataset="synthetic", embedding_method="bpr"))
    np.testing.assert_array_equal(auto.item_embeddings, bpr.item_embeddings)
    with pytest.raises(ValueError, match="embedding_method"):
        build_env_data(EnvDataKey(dataset="synthetic", embedding_method="als"))
