"""Tests for fcpo.metrics.exposure: exposure counts, Gini variants, Lorenz curve, popularity."""
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.metrics import (
    exposure_counts,
    gini_elliot_complement,
    gini_fcpo,
    gini_recbole,
    item_coverage,
    lorenz_curve,
    popularity_rate,
    tail_percentage,
)

FAST = settings(max_examples=60, deadline=None)

# 3 users, K = 3, catalogue of 6 items (items 4 and 5 never recommended)
REC = np.array([[0, 1, 2], [0, 1, -1], [0, 3, 0]])


def test_exposure_counts_golden():
    # item 0: 4 slots (twice in user 2's list), 1: 2, 2: 1, 3: 1, 4: 0, 5: 0; the -1 is ignored
    assert exposure_counts(REC, 6).tolist() == [4, 2, 1, 1, 0, 0]
    assert exposure_counts(REC, 6, k=1).tolist() == [3, 0, 0, 0, 0, 0]
    assert exposure_counts(np.array([2, -1, 2]), 3).tolist() == [0, 0, 2]  # 1-D log
    with pytest.raises(ValueError, match="n_items"):
        exposure_counts(REC, 3)


def test_gini_golden():
    # sorted counts x = [0, 0, 1, 1, 2, 4], n = 6, sum = 8
    # weights 2i - n - 1 = [-5, -3, -1, 1, 3, 5]
    # sum w x = 0 + 0 - 1 + 1 + 6 + 20 = 26
    # FCPO / RecBole: 26 / (6 * 8) = 0.541666...
    # Elliot: 1 - 26 / (8 * 5) = 1 - 0.65 = 0.35
    counts = exposure_counts(REC, 6)
    assert gini_fcpo(counts) == pytest.approx(26 / 48)
    assert gini_recbole(REC, 6) == pytest.approx(26 / 48)
    assert gini_elliot_complement(REC, 6) == pytest.approx(0.35)


def test_gini_extremes_and_zero_rule():
    assert gini_fcpo([3, 3, 3]) == 0.0  # equal exposure
    # one item takes everything: (n - 1) / n
    assert gini_fcpo([0, 0, 0, 5]) == pytest.approx(3 / 4)
    assert gini_elliot_complement(np.array([[3, 3], [3, 3]]), 4) == pytest.approx(0.0)
    # all-zero exposure: Gini defined as 0 (complement 1)
    assert gini_fcpo(np.zeros(5)) == 0.0
    empty = np.full((2, 3), -1)
    assert gini_recbole(empty, 4) == 0.0
    assert gini_elliot_complement(empty, 4) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        gini_fcpo([1, -1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        gini_fcpo([])
    with pytest.raises(ValueError, match=">= 2"):
        gini_elliot_complement(np.array([[0]]), 1)


def test_lorenz_curve_golden():
    x, y = lorenz_curve([4, 0, 2, 2])
    # sorted [0, 2, 2, 4], sum 8 -> y = [0, 0, .25, .5, 1]
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(y, [0, 0, 0.25, 0.5, 1])
    x0, y0 = lorenz_curve([0, 0])
    np.testing.assert_allclose(y0, x0)


def test_popularity_tail_coverage_golden():
    popular = np.array([True, True, False, False, False, False])
    # u0 [0,1,2]: 2/3 popular; u1 [0,1]: 2/2; u2 [0,3,0]: 2/3 -> mean = (2/3 + 1 + 2/3)/3 = 7/9
    np.testing.assert_allclose(popularity_rate(REC, popular, reduce="none"), [2 / 3, 1, 2 / 3])
    assert popularity_rate(REC, popular) == pytest.approx(7 / 9)
    # tail = not popular: 1/3, 0, 1/3 -> 2/9
    assert tail_percentage(REC, popular) == pytest.approx(2 / 9)
    # explicit tail set {3}: 0, 0, 1/3 -> 1/9
    assert tail_percentage(REC, is_tail=np.eye(6, dtype=bool)[3]) == pytest.approx(1 / 9)
    # coverage: items {0,1,2,3} of 6
    assert item_coverage(REC, 6) == pytest.approx(4 / 6)
    assert item_coverage(REC, 6, k=1) == pytest.approx(1 / 6)
    # a user with only empty slots is skipped (nan)
    r = popularity_rate(np.array([[-1, -1], [0, 2]]), popular, reduce="none")
    assert math.isnan(r[0]) and r[1] == 0.5
    with pytest.raises(ValueError, match="exactly one"):
        tail_percentage(REC)
    with pytest.raises(ValueError, match="n_items"):
        popularity_rate(REC, popular[:3])


# ------------------------------------------------------------ property tests


def gini_mad(x):
    """FCPO Eq. (23): sum_i sum_j |x_i - x_j| / (2 n^2 mean)."""
    n = len(x)
    tot = sum(x)
    if tot == 0:
        return 0.0
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * (tot / n))


def gini_recbole_loop(rec, n_items):
    """Port of RecBole's GiniIndex.get_gini (Counter over the flattened matrix, -1 dropped)."""
    count = Counter(int(i) for i in rec.ravel() if i != -1)
    sorted_count = np.array(sorted(count.values()))
    m = sorted_count.shape[0]
    total = sorted_count.sum()
    if total == 0:
        return 0.0
    idx = np.arange(n_items - m + 1, n_items + 1)
    return float(np.sum((2 * idx - n_items - 1) * sorted_count) / total / n_items)


def gini_elliot_loop(rec, n_items):
    """Port of Elliot's GiniIndex.eval."""
    item_count, free_norm = {}, 0
    for row in rec.tolist():
        row = [i for i in row if i != -1]
        free_norm += len(row)
        for i in row:
            item_count[i] = item_count.get(i, 0) + 1
    m = len(item_count)
    g = sum(
        (2 * (j + (n_items - m) + 1) - n_items - 1) * (cs / free_norm)
        for j, cs in enumerate(sorted(item_count.values()))
    )
    return 1 - g / (n_items - 1)


@st.composite
def rec_matrices(draw):
    n_items = draw(st.integers(2, 8))
    n_users = draw(st.integers(1, 5))
    width = draw(st.integers(1, 4))
    rec = np.array(
        draw(st.lists(st.lists(st.integers(-1, n_items - 1), min_size=width, max_size=width),
                      min_size=n_users, max_size=n_users))
    )
    return rec, n_items


@FAST
@given(st.lists(st.integers(0, 20), min_size=1, max_size=12))
def test_gini_fcpo_equals_mean_absolute_difference(x):
    g = gini_fcpo(x)
    assert g == pytest.approx(gini_mad(x), abs=1e-12)
    assert 0.0 <= g <= 1 - 1 / len(x) + 1e-12
    # Lorenz area relation: G = 1 - 2 * trapezoid area
    lx, ly = lorenz_curve(x)
    area = float(np.sum((ly[1:] + ly[:-1]) * np.diff(lx) / 2))
    assert g == pytest.approx(1 - 2 * area, abs=1e-12)
    assert np.all(np.diff(ly) >= -1e-15)
    # scale invariance
    assert gini_fcpo(np.asarray(x) * 3) == pytest.approx(g, abs=1e-12)


@FAST
@given(rec_matrices())
def test_gini_recbole_and_elliot_match_reference_ports(inst):
    rec, n_items = inst
    assert gini_recbole(rec, n_items) == pytest.approx(gini_recbole_loop(rec, n_items), abs=1e-12)
    assert gini_elliot_complement(rec, n_items) == pytest.approx(gini_elliot_loop(rec, n_items), abs=1e-12)
    counts = exposure_counts(rec, n_items)
    assert counts.tolist() == [sum(int(v == i) for v in rec.ravel()) for i in range(n_items)]
    assert item_coverage(rec, n_items) == pytest.approx(len(set(rec.ravel()) - {-1}) / n_items)


@FAST
@given(rec_matrices(), st.data())
def test_popularity_and_tail_match_loops(inst, data):
    rec, n_items = inst
    popular = np.array(data.draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items)))
    per_user = []
    for row in rec.tolist():
        filled = [i for i in row if i != -1]
        per_user.append(sum(bool(popular[i]) for i in filled) / len(filled) if filled else None)
    got = popularity_rate(rec, popular, reduce="none")
    np.testing.assert_allclose(got, [np.nan if v is None else v for v in per_user])
    tail = tail_percentage(rec, popular, reduce="none")
    np.testing.assert_allclose(tail, [np.nan if v is None else 1 - v for v in per_user], atol=1e-12)
