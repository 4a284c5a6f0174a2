"""Tests for fcpo.metrics.cutoffs: one-pass accuracy at every cut-off.

Every value must equal the per-cut-off functions of fcpo.metrics.accuracy
(to 1e-12) on hand-checked and random cases, duplicates and -1 slots included.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.metrics import (
    accuracy_at_cutoffs,
    accuracy_by_cutoff,
    f1_at_k,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
)

FAST = settings(max_examples=80, deadline=None)
LOG2_3 = math.log2(3)

PER_CUTOFF = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "f1": f1_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
}

# 2 users, 5 items, list of 4 (K = 2, L = 2).  u0 relevant {1, 3}; u1 relevant {4}.
REC = np.array([[0, 1, 1, 3],     # duplicate 1 at rank 3 is not a second hit
                [4, -1, 2, 4]])   # empty slot, duplicate 4
REL = relevance_matrix(np.array([0, 2, 3]), np.array([1, 3, 4]), 5)


def test_golden_two_cutoffs():
    # c = 2: u0 hits {rank 2} -> P 1/2, R 1/2, F1 1/2, DCG 1/log2(3), IDCG 1 + 1/log2(3), HR 1
    #        u1 hits {rank 1} -> P 1/2, R 1,   F1 2/3, NDCG 1, HR 1
    # c = 4: u0 hits {rank 2, rank 4} -> P 2/4, R 1, F1 2/3, DCG 1/log2(3) + 1/log2(5), same IDCG
    #        u1 hits {rank 1} only -> P 1/4, R 1, F1 0.4, NDCG 1
    out = accuracy_at_cutoffs(REC, REL, [2, 4], reduce="none")
    np.testing.assert_allclose(out["precision"], [[0.5, 0.5], [0.5, 0.25]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["recall"], [[0.5, 1.0], [1.0, 1.0]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["f1"], [[0.5, 2 / 3], [2 / 3, 0.4]], rtol=0, atol=1e-15)
    idcg0 = 1 + 1 / LOG2_3
    np.testing.assert_allclose(out["ndcg"], [[(1 / LOG2_3) / idcg0, 1.0],
                                             [(1 / LOG2_3 + 1 / math.log2(5)) / idcg0, 1.0]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["hit_rate"], [[1, 1], [1, 1]])
    flat = accuracy_by_cutoff(REC, REL, 2)
    assert list(flat) == [f"{m}@{c}" for c in (2, 4) for m in ("precision", "recall", "f1", "ndcg", "hit_rate")]
    assert flat["precision@4"] == pytest.approx(0.375, abs=1e-15)
    assert flat["f1@2"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-15)


def test_cutoff_beyond_list_counts_missing_slots_as_misses():
    out = accuracy_at_cutoffs(REC, REL, [6], reduce="none")
    np.testing.assert_allclose(out["precision"][0], [2 / 6, 1 / 6])
    np.testing.assert_allclose(out["ndcg"][0], [ndcg_at_k(REC, REL, 6, reduce="none")[0], 1.0], atol=1e-15)


def test_validation():
    with pytest.raises(ValueError, match="cutoffs must be >= 1"):
        accuracy_at_cutoffs(REC, REL, [0, 2])
    with pytest.raises(TypeError, match="cutoffs must be integers"):
        accuracy_at_cutoffs(REC, REL, [1.5])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        accuracy_at_cutoffs(REC, REL, [])
    with pytest.raises(ValueError, match="reduce='mean'"):
        accuracy_at_cutoffs(REC, REL, [2], reduce="none", f1_average="global")
    with pytest.raises(ValueError, match="no_relevant"):
        accuracy_at_cutoffs(REC, REL, [2], no_relevant="drop")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        accuracy_by_cutoff(REC, REL, 5)  # width 4 < k: no full step
    with pytest.raises(ValueError, match="same users"):
        accuracy_at_cutoffs(REC, REL[:1], [2])


def test_all_users_without_relevant_items():
    rel = np.zeros((2, 5), dtype=bool)
    out = accuracy_at_cutoffs(REC, rel, [1, 3])
    assert all(np.isnan(v).all() for v in out.values())
    zero = accuracy_at_cutoffs(REC, rel, [1, 3], no_relevant="zero")
    assert all((v == 0).all() for v in zero.values())


@st.composite
def instances(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 8))
    width = draw(st.integers(1, 12))
    rec = np.array(
        draw(st.lists(st.lists(st.integers(-1, n_items - 1), min_size=width, max_size=width),
                      min_size=n_users, max_size=n_users)),
        dtype=np.int64,
    )
    rel_sets = [sorted(draw(st.sets(st.integers(0, n_items - 1), max_size=n_items))) for _ in range(n_users)]
    cutoffs = draw(st.lists(st.integers(1, width + 3), min_size=1, max_size=6))
    return rec, rel_sets, n_items, cutoffs


def _relevant(rel_sets, n_items, ragged):
    indptr = np.concatenate(([0], np.cumsum([len(s) for s in rel_sets]))).astype(np.int64)
    items = np.array([i for s in rel_sets for i in s], dtype=np.int64)
    return (indptr, items) if ragged else relevance_matrix(indptr, items, n_items)


@FAST
@given(instances(), st.booleans(), st.sampled_from(["skip", "zero"]))
def test_equals_per_cutoff_functions(inst, ragged, no_relevant):
    rec, rel_sets, n_items, cutoffs = inst
    relevant = _relevant(rel_sets, n_items, ragged)
    per_user = accuracy_at_cutoffs(rec, relevant, cutoffs, reduce="none", no_relevant=no_relevant)
    means = accuracy_at_cutoffs(rec, relevant, cutoffs, no_relevant=no_relevant)
    glob = accuracy_at_cutoffs(rec, relevant, cutoffs, no_relevant=no_relevant, f1_average="global")
    for name, fn in PER_CUTOFF.items():
        assert per_user[name].shape == (len(cutoffs), rec.shape[0])
        for i, c in enumerate(cutoffs):
            ref = fn(rec, relevant, c, reduce="none", no_relevant=no_relevant)
            np.testing.assert_allclose(per_user[name][i], ref, rtol=0, atol=1e-12, equal_nan=True)
            ref_mean = fn(rec, relevant, c, no_relevant=no_relevant)
            if math.isnan(ref_mean):
                assert math.isnan(means[name][i])
            else:
                assert abs(means[name][i] - ref_mean) <= 1e-12
    for i, c in enumerate(cutoffs):
        ref = f1_at_k(rec, relevant, c, average="global", no_relevant=no_relevant)
        assert (math.isnan(ref) and math.isnan(glob["f1"][i])) or abs(glob["f1"][i] - ref) <= 1e-12


@FAST
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_by_cutoff_equals_evaluator_loop(n_users, k, steps, seed):
    """The evaluator's per-step loop ``rec[:, :t*k]`` at ``t*k`` gives the same dict."""
    rng = np.random.default_rng(seed)
    n_items = 10
    rec = rng.integers(-1, n_items, size=(n_users, k * steps))
    rel = rng.random((n_users, n_items)) < 0.3
    fast = accuracy_by_cutoff(rec, rel, k, steps)
    ref = {}
    for t in range(1, steps + 1):
        c = t * k
        for name, fn in PER_CUTOFF.items():
            ref[f"{name}@{c}"] = fn(rec[:, :c], rel, c)
    assert list(fast) == list(ref)
    for key, v in ref.items():
        assert (math.isnan(v) and math.isnan(fast[key])) or abs(fast[key] - v) <= 1e-12, key
