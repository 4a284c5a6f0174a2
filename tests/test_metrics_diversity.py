"""Tests for fcpo.metrics.diversity: DivRatio, ORRatio, genre distributions, MGU@K, DGU@K."""
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.metrics import dgu_at_k, div_ratio, genre_distribution, mgu_at_k, or_ratio

FAST = settings(max_examples=60, deadline=None)


def test_div_ratio_golden():
    # SPRec's example: recommendations [1, 1, 2, 3, 4] -> 4 distinct / 5 = 0.8
    assert div_ratio(np.array([[1, 1], [2, 3], [4, -1]])) == pytest.approx(0.8)
    assert div_ratio(np.array([[1, 1, 2, 3, 4]])) == pytest.approx(0.8)
    # k = 1: [1, 2, 4] -> 3 / 3
    assert div_ratio(np.array([[1, 1], [2, 3], [4, -1]]), k=1) == 1.0
    assert math.isnan(div_ratio(np.full((2, 2), -1)))


def test_or_ratio_golden():
    # counts: 7 -> 4, 1 -> 3, 2 -> 2, 3 -> 1; total 10; top-3 = 4 + 3 + 2 = 9 -> 0.9
    rec = np.array([[7, 1], [7, 1], [7, 1], [7, 2], [2, 3]])
    assert or_ratio(rec) == pytest.approx(0.9)
    assert or_ratio(rec, top=1) == pytest.approx(0.4)
    assert or_ratio(np.array([[5, 6]])) == 1.0  # fewer than 3 distinct items
    assert math.isnan(or_ratio(np.full((1, 3), -1)))
    with pytest.raises(ValueError, match="top"):
        or_ratio(rec, top=0)


# 5 items, 3 genres (A, B, C); item 4 has no genre
G = np.array(
    [
        [1, 0, 0],  # item 0: A
        [0, 1, 0],  # item 1: B
        [1, 1, 0],  # item 2: A, B
        [0, 0, 1],  # item 3: C
        [0, 0, 0],  # item 4: none
    ]
)
HIST = np.array([[0, 2, -1], [3, 3, 4]])  # ragged equivalent: indptr [0, 2, 5], items [0, 2, 3, 3, 4]
HIST_RAGGED = (np.array([0, 2, 5]), np.array([0, 2, 3, 3, 4]))
RECS = np.array([[1, 2], [0, 4]])


@pytest.mark.parametrize("history", [HIST, HIST_RAGGED], ids=["padded", "ragged"])
def test_mgu_dgu_golden_split(history):
    # split weighting, population level
    # history mass: item0 -> A 1; item2 -> A .5, B .5; item3 twice -> C 2; item4 -> nothing
    #   = [1.5, 0.5, 2] / 4 = [.375, .125, .5]
    # recs mass: item1 -> B 1; item2 -> A .5, B .5; item0 -> A 1; item4 -> nothing
    #   = [1.5, 1.5, 0] / 3 = [.5, .5, 0]
    # d = gp - gh = [.125, .375, -.5]; MGU = (0.125 + 0.375 + 0.5) / 3 = 1/3
    # DGU signed = .375 - (-.5) = .875; absolute = .5 - .125 = .375
    np.testing.assert_allclose(genre_distribution(history, G), [0.375, 0.125, 0.5])
    np.testing.assert_allclose(genre_distribution(RECS, G), [0.5, 0.5, 0.0])
    assert mgu_at_k(RECS, history, G) == pytest.approx(1 / 3)
    assert dgu_at_k(RECS, history, G) == pytest.approx(0.875)
    assert dgu_at_k(RECS, history, G, differences="absolute") == pytest.approx(0.375)


def test_mgu_dgu_golden_multi_hot():
    # multi_hot: history mass A 1+1 = 2, B 1, C 2 -> [.4, .2, .4]
    # recs mass: A 1 + 1 = 2, B 1 + 1 = 2, C 0 -> [.5, .5, 0]
    # d = [.1, .3, -.4]; MGU = .8 / 3; DGU = .3 + .4 = .7
    assert mgu_at_k(RECS, HIST, G, genre_weighting="multi_hot") == pytest.approx(0.8 / 3)
    assert dgu_at_k(RECS, HIST, G, genre_weighting="multi_hot") == pytest.approx(0.7)


def test_mgu_user_level_and_k():
    # user 0: hist [0, 2] split -> A 1.5, B .5 -> [.75, .25, 0]; recs [1, 2] -> A .5, B 1.5 -> [.25, .75, 0]
    #   d = [-.5, .5, 0] -> MGU 1/3, DGU 1
    # user 1: hist [3, 3, 4] -> [0, 0, 1]; recs [0, 4] -> [1, 0, 0]; d = [1, 0, -1] -> MGU 2/3, DGU 2
    np.testing.assert_allclose(mgu_at_k(RECS, HIST, G, level="user", reduce="none"), [1 / 3, 2 / 3])
    np.testing.assert_allclose(dgu_at_k(RECS, HIST, G, level="user", reduce="none"), [1.0, 2.0])
    assert mgu_at_k(RECS, HIST, G, level="user") == pytest.approx(0.5)
    # k = 1 -> recs [1], [0]: pooled [.5, .5, 0] again (B 1, A 1) -> same population MGU
    assert mgu_at_k(RECS, HIST, G, k=1) == pytest.approx(1 / 3)
    # a user whose list has no genre mass is nan at user level and skipped by the mean
    v = mgu_at_k(np.array([[4, -1], [0, 4]]), HIST, G, level="user", reduce="none")
    assert math.isnan(v[0]) and v[1] == pytest.approx(2 / 3)
    # nothing with a genre on one side -> nan at population level
    assert math.isnan(mgu_at_k(np.array([[4]]), HIST, G))


def test_identical_distributions_give_zero():
    assert mgu_at_k(HIST, HIST, G) == pytest.approx(0.0)
    assert dgu_at_k(HIST, HIST, G) == pytest.approx(0.0)


def test_diversity_validation():
    with pytest.raises(ValueError, match="genre_weighting"):
        mgu_at_k(RECS, HIST, G, genre_weighting="bogus")
    with pytest.raises(ValueError, match="0/1"):
        mgu_at_k(RECS, HIST, G * 2)
    with pytest.raises(ValueError, match="one history per"):
        mgu_at_k(RECS, HIST[:1], G, level="user")
    with pytest.raises(ValueError, match="item_genres has 5 rows"):
        mgu_at_k(RECS, (np.array([0, 1]), np.array([9])), G)
    with pytest.raises(ValueError, match="differences"):
        dgu_at_k(RECS, HIST, G, differences="x")


# ------------------------------------------------------------ property tests


def sprec_loop(rec_rows, hist_rows, genres, weighting):
    """SPRec evaluate script logic (gh over pooled histories, gp over pooled recs)."""
    n_genres = len(genres[0])

    def accumulate(rows):
        acc = [0.0] * n_genres
        for row in rows:
            for item in row:
                if item == -1:
                    continue
                sel = [g for g in range(n_genres) if genres[item][g]]
                for g in sel:
                    acc[g] += 1 / len(sel) if weighting == "split" else 1.0
        return acc

    gh, gp = accumulate(hist_rows), accumulate(rec_rows)
    if sum(gh) == 0 or sum(gp) == 0:
        return math.nan, math.nan
    gh = [x / sum(gh) for x in gh]
    gp = [x / sum(gp) for x in gp]
    dis = [gp[i] - gh[i] for i in range(n_genres)]
    return sum(abs(x) for x in dis) / n_genres, max(dis) - min(dis)


@st.composite
def genre_instances(draw):
    n_items = draw(st.integers(1, 6))
    n_genres = draw(st.integers(1, 4))
    genres = draw(st.lists(st.lists(st.integers(0, 1), min_size=n_genres, max_size=n_genres),
                           min_size=n_items, max_size=n_items))
    n_users = draw(st.integers(1, 4))
    ids = st.integers(-1, n_items - 1)
    rec = draw(st.lists(st.lists(ids, min_size=3, max_size=3), min_size=n_users, max_size=n_users))
    hist = draw(st.lists(st.lists(ids, min_size=4, max_size=4), min_size=n_users, max_size=n_users))
    return np.array(rec), np.array(hist), np.array(genres)


@FAST
@given(genre_instances(), st.sampled_from(["split", "multi_hot"]), st.booleans())
def test_mgu_dgu_match_sprec_loop(inst, weighting, ragged):
    rec, hist, genres = inst
    mgu_ref, dgu_ref = sprec_loop(rec.tolist(), hist.tolist(), genres.tolist(), weighting)
    if ragged:  # same histories as a ragged pair (drop the padding)
        rows = [[i for i in r if i != -1] for r in hist.tolist()]
        history = (np.concatenate(([0], np.cumsum([len(r) for r in rows]))),
                   np.array([i for r in rows for i in r], dtype=np.int64))
    else:
        history = hist
    got_m = mgu_at_k(rec, history, genres, genre_weighting=weighting)
    got_d = dgu_at_k(rec, history, genres, genre_weighting=weighting)
    if math.isnan(mgu_ref):
        assert math.isnan(got_m) and math.isnan(got_d)
    else:
        assert got_m == pytest.approx(mgu_ref, abs=1e-12)
        assert got_d == pytest.approx(dgu_ref, abs=1e-12)
        assert 0 <= got_m <= 2 / genres.shape[1] + 1e-12 and 0 <= got_d <= 2 + 1e-12
    # user level = the same loop applied to each user alone
    per_user = mgu_at_k(rec, history, genres, genre_weighting=weighting, level="user", reduce="none")
    for u in range(rec.shape[0]):
        ref_u, _ = sprec_loop([rec[u].tolist()], [hist[u].tolist()], genres.tolist(), weighting)
        if math.isnan(ref_u):
            assert math.isnan(per_user[u])
        else:
            assert per_user[u] == pytest.approx(ref_u, abs=1e-12)


@FAST
@given(st.lists(st.lists(st.integers(-1, 6), min_size=3, max_size=3), min_size=1, max_size=5),
       st.integers(1, 4))
def test_div_or_ratio_match_sprec_loop(rows, top):
    flat = [i for r in rows for i in r if i != -1]
    got_div, got_or = div_ratio(np.array(rows)), or_ratio(np.array(rows), top=top)
    if not flat:
        assert math.isnan(got_div) and math.isnan(got_or)
        return
    counts = sorted(Counter(flat).values(), reverse=True)
    assert got_div == pytest.approx(len(set(flat)) / len(flat))
    assert got_or == pytest.approx(sum(counts[:top]) / len(flat))
