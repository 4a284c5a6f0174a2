"""The per-slate constraint report: exact values on a hand-checked rollout, the cap rule, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fcpo.evaluate.constraint import constraint_report, per_slate_cap


@pytest.mark.parametrize("alpha, k, cap", [(0.4, 5, 2), (0.6, 5, 3), (0.3, 10, 3), (0.5, 5, 2), (1.0, 5, 5),
                                           (0.0, 5, 0), (0.7, 10, 7), (0.2, 4, 0), (0.58, 100, 58)])
def test_cap_is_the_floor_of_alpha_k_robust_to_float_error(alpha, k, cap):
    assert per_slate_cap(alpha, k) == cap
    assert alpha * k < cap + 1  # floor: the next integer is over the share


def test_float_error_does_not_lose_an_item():
    assert math.floor(0.29 * 100) == 28 and per_slate_cap(0.29, 100) == 29  # 0.29*100 == 28.999999999999996
    assert math.floor(0.57 * 100) == 56 and per_slate_cap(0.57, 100) == 57


def test_hand_checked_rollout():
    # 3 users x 4 steps, K = 5, alpha' = 0.4 -> cap 2; the last user's episode ends after step 2
    counts = np.array([[2, 3, 1, 0],
                       [1, 2, 5, 2],
                       [0, 4, 9, 9]])  # 9s are never-shown slates (masked by alive)
    alive = np.array([[True, True, True, True],
                      [True, True, True, True],
                      [True, True, False, False]])
    counts_ok = np.where(alive, counts, 0)
    r = constraint_report(counts_ok, k=5, alpha_prime=0.4, alive=alive)
    assert r["cap"] == 2 and r["k"] == 5 and r["slates"] == 10
    # shown G0 items: 2+3+1+0 + 1+2+5+2 + 0+4 = 20 over 10 slates of 5
    assert r["popular_share"] == pytest.approx(20 / 50)
    assert r["popular_share_per_step"] == pytest.approx([3 / 15, 9 / 15, 6 / 10, 2 / 10])
    assert r["max_step_share"] == pytest.approx(0.6)
    assert r["max_slate_popular"] == 5
    assert r["fraction_above_cap"] == pytest.approx(3 / 10)  # the 3, the 5 and the 4
    assert r["per_slate_ok"] is False


def test_alive_masks_out_slates_that_were_never_shown():
    counts = np.array([[2, 5], [1, 5]])
    alive = np.array([[True, False], [True, False]])
    with pytest.raises(ValueError, match="0, k=5"):
        constraint_report(counts + 1 * 5, 5, 0.4)  # 10 > k
    r = constraint_report(counts, 5, 0.4, alive=alive)
    assert r["per_slate_ok"] is True and r["fraction_above_cap"] == 0.0
    assert r["popular_share"] == pytest.approx(3 / 10)
    assert np.isnan(r["popular_share_per_step"][1])  # no slate shown at step 2
    assert r["max_step_share"] == pytest.approx(3 / 10)


def test_exactly_at_the_cap_is_ok():
    r = constraint_report(np.full((4, 3), 2), 5, 0.4)
    assert r["per_slate_ok"] is True and r["fraction_above_cap"] == 0.0
    assert r["popular_share"] == pytest.approx(0.4) and r["max_slate_popular"] == 2
    r = constraint_report(np.full((4, 3), 2), 5, 0.39)  # cap 1: every slate is over
    assert r["cap"] == 1 and r["fraction_above_cap"] == 1.0 and not r["per_slate_ok"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(popular_counts=np.zeros(3), k=5, alpha_prime=0.4), "users, steps"),
    (dict(popular_counts=-np.ones((2, 2)), k=5, alpha_prime=0.4), "whole numbers"),
    (dict(popular_counts=np.full((2, 2), 0.5), k=5, alpha_prime=0.4), "whole numbers"),
    (dict(popular_counts=np.zeros((2, 2)), k=5, alpha_prime=1.5), "alpha_prime"),
    (dict(popular_counts=np.zeros((2, 2)), k=0, alpha_prime=0.4), "positive integer"),
    (dict(popular_counts=np.zeros((2, 2)), k=5, alpha_prime=0.4, alive=np.ones((2, 3), bool)), "alive"),
    (dict(popular_counts=np.zeros((2, 2)), k=5, alpha_prime=0.4, alive=np.zeros((2, 2), bool)), "no shown slate"),
])
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        constraint_report(**kwargs)
