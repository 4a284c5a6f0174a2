"""Tests for fcpo.metrics.accuracy and fcpo.metrics.candidates.

Golden values are computed by hand in the comments; property tests compare
against plain Python loops written straight from the textbook definitions.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.metrics import (
    f1_at_k,
    hit_rate_at_k,
    hr_at_1,
    hr_at_1_text,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
    text_choice,
    valid_ratio,
    valid_ratio_text,
)

FAST = settings(max_examples=60, deadline=None)
LOG2_3 = math.log2(3)

# Three users, 6 items, K = 4.
REC = np.array(
    [
        [0, 5, 2, 1],   # user 0
        [3, 3, 4, -1],  # user 1: duplicate 3, one empty slot
        [5, 4, 3, 2],   # user 2
    ]
)
# relevant: u0 {2, 1, 4}, u1 {3}, u2 {} (no relevant item)
INDPTR = np.array([0, 3, 4, 4])
ITEMS = np.array([2, 1, 4, 3])


def rel_matrix():
    return relevance_matrix(INDPTR, ITEMS, 6)


# ---------------------------------------------------------------- golden tests


def test_relevance_matrix_golden():
    m = rel_matrix()
    assert m.dtype == np.bool_ and m.shape == (3, 6)
    assert m[0].tolist() == [False, True, True, False, True, False]
    assert m[1].tolist() == [False, False, False, True, False, False]
    assert not m[2].any()


@pytest.mark.parametrize("relevant", [rel_matrix(), (INDPTR, ITEMS)], ids=["matrix", "ragged"])
def test_golden_values(relevant):
    # u0: hits at ranks 3 and 4 (items 2, 1) -> 2 hits; |R| = 3
    #   P = 2/4 = 0.5, R = 2/3, F1 = 2*0.5*(2/3)/(0.5+2/3) = (2/3)/(7/6) = 4/7
    #   DCG = 1/log2(4) + 1/log2(5) = 0.5 + 0.430677; IDCG = 1 + 1/log2(3) + 0.5
    #   MRR = 1/3, HR = 1
    # u1: item 3 at rank 1 (its duplicate at rank 2 is not a second hit) -> 1 hit; |R| = 1
    #   P = 1/4, R = 1, F1 = 2*0.25/(1.25) = 0.4, DCG = 1 = IDCG -> NDCG = 1, MRR = 1
    # u2: no relevant items -> skipped (nan) by default
    P = precision_at_k(REC, relevant, reduce="none")
    np.testing.assert_allclose(P[:2], [0.5, 0.25])
    assert np.isnan(P[2])
    np.testing.assert_allclose(recall_at_k(REC, relevant, reduce="none")[:2], [2 / 3, 1.0])
    np.testing.assert_allclose(f1_at_k(REC, relevant, reduce="none")[:2], [4 / 7, 0.4])
    ndcg0 = (0.5 + 1 / math.log2(5)) / (1 + 1 / LOG2_3 + 0.5)
    np.testing.assert_allclose(ndcg_at_k(REC, relevant, reduce="none")[:2], [ndcg0, 1.0])
    np.testing.assert_allclose(mrr(REC, relevant, reduce="none")[:2], [1 / 3, 1.0])
    np.testing.assert_allclose(hit_rate_at_k(REC, relevant, reduce="none")[:2], [1.0, 1.0])
    # means over the two scored users
    assert precision_at_k(REC, relevant) == pytest.approx(0.375)
    assert recall_at_k(REC, relevant) == pytest.approx(5 / 6)
    assert f1_at_k(REC, relevant) == pytest.approx((4 / 7 + 0.4) / 2)
    # F1 of the means: P̄ = 0.375, R̄ = 5/6 -> 2*0.375*(5/6)/(0.375+5/6) = 0.625/1.208333 = 0.517241...
    assert f1_at_k(REC, relevant, average="global") == pytest.approx(0.625 / (0.375 + 5 / 6))


def test_no_relevant_zero_option():
    rel = rel_matrix()
    # u2 now scores 0 and is in the mean: recall mean = (2/3 + 1 + 0) / 3
    assert recall_at_k(REC, rel, no_relevant="zero") == pytest.approx((2 / 3 + 1) / 3)
    assert recall_at_k(REC, rel, no_relevant="zero", reduce="none")[2] == 0.0
    assert ndcg_at_k(REC, rel, no_relevant="zero", reduce="none")[2] == 0.0


def test_all_users_without_relevant_items_give_nan_mean():
    rel = np.zeros((3, 6), dtype=bool)
    assert math.isnan(recall_at_k(REC, rel))
    assert math.isnan(f1_at_k(REC, rel, average="global"))
    assert recall_at_k(REC, rel, no_relevant="zero") == 0.0


def test_cutoff_k_smaller_and_larger_than_list():
    rel = rel_matrix()
    # k = 2: u0 top-2 = [0, 5] -> no hit; u1 top-2 = [3, 3] -> 1 hit; P = [0, 1/2]
    np.testing.assert_allclose(precision_at_k(REC, rel, k=2, reduce="none")[:2], [0.0, 0.5])
    assert hit_rate_at_k(REC, rel, k=2, reduce="none")[0] == 0.0
    assert mrr(REC, rel, k=2, reduce="none")[0] == 0.0
    # k = 10 > list width 4: missing slots are misses.
    # u0: P = 2/10; NDCG: DCG same as K=4, IDCG over min(10, 3) = 3 ranks (unchanged)
    # u1: P = 1/10, recall unchanged
    np.testing.assert_allclose(precision_at_k(REC, rel, k=10, reduce="none")[:2], [0.2, 0.1])
    np.testing.assert_allclose(
        ndcg_at_k(REC, rel, k=10, reduce="none")[:2], ndcg_at_k(REC, rel, reduce="none")[:2]
    )
    np.testing.assert_allclose(recall_at_k(REC, rel, k=10, reduce="none")[:2], [2 / 3, 1.0])


def test_idcg_uses_min_k_and_relevant_count():
    # one user, 5 relevant items, K = 2, both slots hit -> NDCG = 1 (IDCG over min(2, 5) = 2 ranks)
    rel = np.ones((1, 5), dtype=bool)
    assert ndcg_at_k(np.array([[0, 1]]), rel) == pytest.approx(1.0)
    # hit only at rank 2: (1/log2 3) / (1 + 1/log2 3)
    rel2 = np.zeros((1, 5), dtype=bool)
    rel2[0, 1] = True
    rel2[0, 4] = True
    assert ndcg_at_k(np.array([[0, 1]]), rel2) == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))


def test_recall_denominator_is_fixed_relevant_count():
    # The FCPO reference code shrank |R| as items were hit, doubling recall here.
    # Ours: 1 hit of 2 relevant -> 0.5, never 1.0.
    rel = relevance_matrix([0, 2], [0, 1], 3)
    assert recall_at_k(np.array([[0, 2]]), rel) == pytest.approx(0.5)


def test_input_validation_messages():
    rel = rel_matrix()
    with pytest.raises(ValueError, match="2-D"):
        precision_at_k(np.array([0, 1]), rel)
    with pytest.raises(ValueError, match="same users"):
        precision_at_k(REC[:2], rel)
    with pytest.raises(TypeError, match="boolean"):
        precision_at_k(REC, rel.astype(int))
    with pytest.raises(ValueError, match="-1"):
        precision_at_k(np.array([[0, -2, 1, 1]] * 3), rel)
    with pytest.raises(ValueError, match="reduce"):
        precision_at_k(REC, rel, reduce="sum")
    with pytest.raises(ValueError, match="unique"):
        precision_at_k(REC, ([0, 2, 2, 2], [1, 1]))
    with pytest.raises(ValueError, match="reduce='mean'"):
        f1_at_k(REC, rel, average="global", reduce="none")


# --------------------------------------------------- brute-force reference loops


def brute(rec_rows, rel_sets, k):
    """Per-user dict of textbook metric values, written with plain loops."""
    out = []
    for row, R in zip(rec_rows, rel_sets):
        if not R:
            out.append(None)
            continue
        top = list(row[:k])
        seen, hits_at = set(), []
        for r, item in enumerate(top, start=1):
            if item != -1 and item in R and item not in seen:
                hits_at.append(r)
            if item != -1:
                seen.add(item)
        n_hit = len(hits_at)
        p = n_hit / k
        rc = n_hit / len(R)
        f1 = 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)
        dcg = sum(1 / math.log2(r + 1) for r in hits_at)
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(R)) + 1))
        out.append(
            dict(
                p=p, r=rc, f1=f1, ndcg=dcg / idcg, hr=float(n_hit > 0),
                mrr=1 / hits_at[0] if hits_at else 0.0,
            )
        )
    return out


@st.composite
def instances(draw):
    n_users = draw(st.integers(1, 5))
    n_items = draw(st.integers(1, 7))
    width = draw(st.integers(1, 6))
    rec = np.array(
        draw(st.lists(st.lists(st.integers(-1, n_items - 1), min_size=width, max_size=width),
                      min_size=n_users, max_size=n_users))
    )
    rel_sets = [
        sorted(draw(st.sets(st.integers(0, n_items - 1), max_size=n_items))) for _ in range(n_users)
    ]
    k = draw(st.one_of(st.none(), st.integers(1, 8)))
    return rec, rel_sets, n_items, k


FUNCS = dict(p=precision_at_k, r=recall_at_k, f1=f1_at_k, ndcg=ndcg_at_k, hr=hit_rate_at_k, mrr=mrr)


@FAST
@given(instances(), st.booleans())
def test_matches_brute_force(inst, ragged):
    rec, rel_sets, n_items, k = inst
    indptr = np.concatenate(([0], np.cumsum([len(s) for s in rel_sets]))).astype(np.int64)
    items = np.array([i for s in rel_sets for i in s], dtype=np.int64)
    relevant = (indptr, items) if ragged else relevance_matrix(indptr, items, n_items)
    kk = rec.shape[1] if k is None else k
    ref = brute(rec.tolist(), [set(s) for s in rel_sets], kk)
    for key, fn in FUNCS.items():
        got = fn(rec, relevant, k, reduce="none")
        exp = np.array([np.nan if d is None else d[key] for d in ref])
        np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12, err_msg=key)
        scored = [d[key] for d in ref if d is not None]
        mean = fn(rec, relevant, k)
        if scored:
            assert mean == pytest.approx(sum(scored) / len(scored), abs=1e-12)
        else:
            assert math.isnan(mean)
        assert 0.0 <= np.nanmin(np.append(got, 0.0)) and np.nanmax(np.append(got, 0.0)) <= 1.0 + 1e-12


@FAST
@given(instances())
def test_f1_of_means_dominates_mean_of_f1(inst):
    # Harmonic mean is concave -> mean_u F1_u <= F1(mean P, mean R).
    rec, rel_sets, n_items, k = inst
    rel = np.zeros((rec.shape[0], n_items), dtype=bool)
    for u, s in enumerate(rel_sets):
        rel[u, list(s)] = True
    per_user = f1_at_k(rec, rel, k)
    glob = f1_at_k(rec, rel, k, average="global")
    if math.isnan(per_user):
        assert math.isnan(glob)
    else:
        assert per_user <= glob + 1e-12


# ------------------------------------------------------------ candidates (S-DPO)

CANDS = [
    ["Heat", "Alien", "Up"],
    ["Heat", "Alien", "Up"],
    ["Heat", "Alien", "Up"],
    ["Heat", "Alien", "Up"],
    ["Heat", "Heat 2", "Up"],
]
TEXTS = [
    'I recommend "Alien".',         # exactly one -> valid, index 1
    "Heat or Up, hard to say",      # two titles -> invalid
    "Nothing fits",                 # none -> invalid
    "Up",                           # valid, index 2
    "Heat 2",                       # "Heat" and "Heat 2" both occur -> invalid (S-DPO substring rule)
]
TARGETS = ["Alien", "Heat", "Alien", "Heat", "Heat 2"]


def test_text_choice_and_valid_ratio_golden():
    assert text_choice(TEXTS, CANDS).tolist() == [1, -1, -1, 2, -1]
    # valid: samples 0 and 3 -> 2/5
    assert valid_ratio_text(TEXTS, CANDS) == pytest.approx(0.4)
    assert valid_ratio_text(TEXTS, CANDS, reduce="none").tolist() == [1, 0, 0, 1, 0]


def test_hr_at_1_text_golden():
    # hits: sample 0 (valid, "Alien" in text); sample 1 contains target "Heat" but is invalid;
    # sample 3 valid but target "Heat" not in "Up". -> 1/5
    assert hr_at_1_text(TEXTS, CANDS, TARGETS) == pytest.approx(0.2)
    assert hr_at_1_text(TEXTS, CANDS, TARGETS, reduce="none").tolist() == [1, 0, 0, 0, 0]


def test_hr_at_1_and_valid_ratio_ids_golden():
    pred = np.array([4, 7, -1, 2])
    tgt = np.array([4, 7, 3, 5])
    cands = np.array([[1, 4], [1, 2], [3, 5], [2, 5]])
    # valid: 4 in [1,4] yes; 7 not in [1,2]; -1 never; 2 in [2,5] yes -> 2/4
    assert valid_ratio(pred, cands) == pytest.approx(0.5)
    # without candidates: hits at samples 0, 1 -> 2/4; with candidates sample 1 is invalid -> 1/4
    assert hr_at_1(pred, tgt) == pytest.approx(0.5)
    assert hr_at_1(pred, tgt, cands) == pytest.approx(0.25)
    assert hr_at_1(np.array([-1]), np.array([-1])) == 0.0


@FAST
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=4),
            st.text(alphabet="abc ", max_size=6),
            st.sampled_from(["a", "b", "ab", "c"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_text_metrics_match_sdpo_loop(samples):
    cands = [s[0] for s in samples]
    texts = [s[1] for s in samples]
    targets = [s[2] for s in samples]
    valid = score = 0
    for t, cs, tg in zip(texts, cands, targets):  # S-DPO evaluate_batch.py logic
        if sum(1 for c in cs if c in t) == 1:
            valid += 1
            if tg in t:
                score += 1
    assert valid_ratio_text(texts, cands) == pytest.approx(valid / len(texts))
    assert hr_at_1_text(texts, cands, targets) == pytest.approx(score / len(texts))
    choice = text_choice(texts, cands)
    assert np.sum(choice >= 0) == valid
