"""Backtracking line search on toys whose best accepted fraction is known."""
import math

import pytest
import torch

from fcpo.solvers import backtracking_line_search

DELTA = 0.01
D = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
THETA0 = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)


def make_toy(kl_scale=1.0, cost_slope=0.0, reward_slope=1.0, nan_above=None):
    """At theta0 + f*D: reward = reward_slope*f, cost = cost_slope*f, KL = kl_scale*f^2 * DELTA."""
    calls = []

    def evaluate(theta):
        calls.append(theta.clone())
        f = float((theta - THETA0) @ D / (D @ D))
        if nan_above is not None and f > nan_above:
            return float("nan"), 0.0, 0.0
        return torch.tensor(reward_slope * f), cost_slope * f, kl_scale * f * f * DELTA

    return evaluate, calls


def _best(pred, ratio=0.8, n=10):
    for j in range(n):
        if pred(ratio ** j):
            return j
    return None


@pytest.mark.parametrize("kl_scale", [0.5, 1.6, 2.0, 5.0, 30.0])
def test_kl_limits_fraction(kl_scale):
    ev, _ = make_toy(kl_scale=kl_scale)
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA)
    j = _best(lambda f: kl_scale * f * f <= 1.0)
    assert res.accepted and res.n_backtracks == j
    assert res.fraction == pytest.approx(0.8 ** j)
    torch.testing.assert_close(res.params, THETA0 + 0.8 ** j * D)
    assert res.kl <= DELTA
    assert [t.reason for t in res.trials] == ["kl"] * j + ["accepted"]


@pytest.mark.parametrize("c, cost_slope", [(-0.3, 1.0), (-0.05, 0.2), (-1.0, 0.5)])
def test_cost_slack_limits_fraction(c, cost_slope):
    ev, _ = make_toy(cost_slope=cost_slope)
    res = backtracking_line_search(ev, THETA0, D, c=c, delta=DELTA)
    j = _best(lambda f: cost_slope * f <= -c)
    assert res.n_backtracks == j and res.fraction == pytest.approx(0.8 ** j)
    assert res.cost_change <= -c


def test_infeasible_requires_cost_not_to_increase():
    ev, _ = make_toy(cost_slope=1e-3)  # any positive step raises the cost
    res = backtracking_line_search(ev, THETA0, D, c=0.2, delta=DELTA, require_improvement=False)
    assert not res.accepted and res.fraction == 0.0
    assert torch.equal(res.params, THETA0)
    ev, _ = make_toy(cost_slope=-1.0, reward_slope=-1.0)  # recovery: cost drops, reward drops
    res = backtracking_line_search(ev, THETA0, D, c=0.2, delta=DELTA, require_improvement=False)
    assert res.accepted and res.fraction == 1.0
    res = backtracking_line_search(ev, THETA0, D, c=0.2, delta=DELTA, require_improvement=True)
    assert not res.accepted


def test_no_trial_passes_gives_zero_step():
    ev, calls = make_toy(reward_slope=-1.0)
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA, backtrack_ratio=0.5, max_backtracks=4)
    assert not res.accepted and res.fraction == 0.0 and res.n_backtracks == 4
    assert torch.equal(res.params, THETA0) and res.params is not THETA0
    assert [t.fraction for t in res.trials] == [1.0, 0.5, 0.25, 0.125]
    assert all(t.reason == "reward" for t in res.trials)
    assert len(calls) == 5  # baseline + 4 trials


def test_ratio_and_count_are_used():
    ev, _ = make_toy(kl_scale=1e4)
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA, backtrack_ratio=0.5, max_backtracks=10)
    j = _best(lambda f: 1e4 * f * f <= 1.0, ratio=0.5)
    assert res.fraction == 0.5 ** j and res.n_backtracks == j
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA, backtrack_ratio=0.5, max_backtracks=j)
    assert not res.accepted and len(res.trials) == j


def test_non_finite_candidates_are_rejected():
    ev, _ = make_toy(nan_above=0.7)
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA)
    assert res.trials[0].reason == "non-finite" and res.trials[1].reason == "non-finite"
    assert res.fraction == pytest.approx(0.8 ** 2)
    assert all(math.isfinite(t.kl) or t.reason == "non-finite" for t in res.trials)


def test_baseline_skips_evaluation_and_cost_test_can_be_disabled():
    ev, calls = make_toy(cost_slope=100.0)
    res = backtracking_line_search(ev, THETA0, D, c=None, delta=DELTA, baseline=(0.0, 0.0, 0.0))
    assert res.accepted and res.fraction == 1.0 and len(calls) == 1


def test_zero_direction():
    ev, calls = make_toy()
    res = backtracking_line_search(ev, THETA0, torch.zeros(3, dtype=torch.float64), c=-1.0, delta=DELTA)
    assert not res.accepted and res.fraction == 0.0 and torch.equal(res.params, THETA0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(delta=0.0),
        dict(delta=float("nan")),
        dict(c=float("inf")),
        dict(backtrack_ratio=1.0),
        dict(max_backtracks=0),
        dict(direction=torch.ones(2, dtype=torch.float64)),
        dict(direction=torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64)),
    ],
)
def test_bad_input(kw):
    ev, _ = make_toy()
    args = dict(c=-1.0, delta=DELTA, direction=D)
    args.update(kw)
    direction = args.pop("direction")
    with pytest.raises(ValueError):
        backtracking_line_search(ev, THETA0, direction, **args)


@pytest.mark.parametrize("kl_scale", [1.04, 1.2, 1.5, 2.0, 30.0])
def test_kl_rescale_takes_the_largest_step_the_kl_allows(kl_scale):
    """KL = kl_scale f^2 delta: after each trial that fails on KL alone the fraction shrinks by
    max(0.8, 0.99 sqrt(delta / KL)); the accepted step is never shorter than plain backtracking's."""
    ev, _ = make_toy(kl_scale=kl_scale)
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA, kl_rescale=True)
    plain = backtracking_line_search(make_toy(kl_scale=kl_scale)[0], THETA0, D, c=-1.0, delta=DELTA)
    f, expect = 1.0, [1.0]
    while kl_scale * f * f > 1.0:
        f *= max(0.8, 0.99 / math.sqrt(kl_scale * f * f))
        expect.append(f)
    assert [t.fraction for t in res.trials] == pytest.approx(expect, rel=1e-12)
    assert res.accepted and res.fraction == pytest.approx(f, rel=1e-12) and res.kl <= DELTA
    assert res.fraction >= plain.fraction and res.n_backtracks <= plain.n_backtracks
    if kl_scale in (1.04, 1.2):  # just outside the region: one shrink to ~the boundary
        assert res.n_backtracks == 1 and res.fraction > 0.9


def test_kl_rescale_leaves_other_rejections_alone():
    """Trials rejected for cost (not KL) backtrack by the plain ratio, bit for bit."""
    ev, _ = make_toy(cost_slope=1.0)
    res = backtracking_line_search(ev, THETA0, D, c=-0.3, delta=DELTA, kl_rescale=True)
    plain = backtracking_line_search(make_toy(cost_slope=1.0)[0], THETA0, D, c=-0.3, delta=DELTA)
    assert [t.fraction for t in res.trials] == [t.fraction for t in plain.trials]
    assert res.trials[0].reason == "cost" and res.fraction == plain.fraction


def test_kl_rescale_off_keeps_powers_of_the_ratio():
    ev, _ = make_toy(kl_scale=30.0)
    res = backtracking_line_search(ev, THETA0, D, c=-1.0, delta=DELTA, backtrack_ratio=0.7)
    assert [t.fraction for t in res.trials] == [0.7 ** j for j in range(len(res.trials))]
