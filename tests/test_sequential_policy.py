"""Tests for fcpo.policies.sequential.SequentialPolicy (GRU item softmax) and the SFT trainer on it."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.alignment import TrainConfig, history_state, next_item_samples, train_sft
from fcpo.data import fcpo_split, load_dataset
from fcpo.policies.base import Policy, SlateState
from fcpo.policies.sequential import SequentialPolicy, candidate_log_softmax

FAST = settings(max_examples=25, deadline=None)


def _state(history):
    h = torch.as_tensor(history, dtype=torch.long)
    return SlateState(torch.zeros(len(h), 0), h, torch.arange(len(h)))


@pytest.fixture(scope="module")
def split():
    return fcpo_split(load_dataset("synthetic"))


def test_is_a_policy_and_deterministic_from_seed():
    a, b = SequentialPolicy(30, 8, seed=3), SequentialPolicy(30, 8, seed=3)
    assert isinstance(a, Policy)
    s = _state([[1, 2, 3], [4, 5, -1]])
    torch.testing.assert_close(a.scores(s), b.scores(s))
    assert not torch.allclose(a.scores(s), SequentialPolicy(30, 8, seed=4).scores(s))


def test_padding_position_does_not_matter():
    pol = SequentialPolicy(20, 8, seed=0)
    right = pol.scores(_state([[3, 7, -1, -1]]))
    left = pol.scores(_state([[-1, -1, 3, 7]]))
    inner = pol.scores(_state([[3, -1, 7, -1]]))
    torch.testing.assert_close(right, left)
    torch.testing.assert_close(right, inner)
    torch.testing.assert_close(right, pol.scores(_state([[3, 7]])))
    assert torch.isfinite(pol.scores(_state([[-1, -1]]))).all()  # empty history -> zero state
    with pytest.raises(ValueError, match="n_items"):
        pol.scores(_state([[20]]))


def test_log_prob_is_exact_plackett_luce_by_brute_force():
    """Sum over all orderings of all k-subsets of P(slate) must be 1, and each P matches a hand loop."""
    n, k = 5, 2
    pol = SequentialPolicy(n, 4, seed=1)
    s = _state([[0, 1]])
    with torch.no_grad():
        probs = pol.scores(s).softmax(-1)[0].double()
    total = 0.0
    for slate in itertools.permutations(range(n), k):
        lp = pol.log_prob(s, torch.tensor([slate]))
        hand = probs[slate[0]] * probs[slate[1]] / (1 - probs[slate[0]])
        assert lp.exp().item() == pytest.approx(hand.item(), rel=1e-5)
        total += lp.exp().item()
    assert total == pytest.approx(1.0, abs=1e-5)


def test_candidate_log_prob_normalises_over_the_list():
    pol = SequentialPolicy(12, 6, seed=2)
    s = _state([[1, 2, 3], [4, 5, 6]])
    cands = torch.tensor([[7, 0, 9], [11, 3, 2]])
    lp = pol.item_log_probs(s, cands, cands, normalize=True)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(2))
    # slate of one item through the contract's log_prob equals the candidate softmax
    torch.testing.assert_close(pol.log_prob(s, cands[:, 1:2], candidates=cands), lp[:, 1])
    # without normalisation: the full-catalogue log-softmax
    full = pol.scores(s).log_softmax(-1)
    torch.testing.assert_close(pol.item_log_probs(s, cands, cands, normalize=False), full.gather(1, cands))
    with pytest.raises(ValueError, match="candidate list"):
        candidate_log_softmax(pol.scores(s), torch.tensor([[8], [8]]), cands)


@FAST
@given(st.integers(0, 1000), st.integers(1, 4))
def test_act_returns_distinct_non_excluded_items(seed, k):
    pol = SequentialPolicy(15, 6, seed=seed % 7)
    s = _state(np.random.default_rng(seed).integers(0, 15, (3, 4)))
    exclude = torch.zeros(3, 15, dtype=torch.bool)
    exclude[:, :5] = True
    for mode in ("greedy", "sample"):
        items = pol.act(s, k, mode=mode, exclude=exclude, generator=torch.Generator().manual_seed(seed))
        assert items.shape == (3, k)
        assert bool((items >= 5).all())
        assert all(len(set(r)) == k for r in items.tolist())
    top = pol.act(s, 1, mode="greedy", exclude=exclude)[:, 0]
    assert torch.equal(top, pol.scores(s).masked_fill(exclude, -math.inf).argmax(1))


def test_snapshot_is_frozen_copy():
    pol = SequentialPolicy(10, 4, seed=0)
    snap = pol.snapshot()
    assert all(not p.requires_grad for p in snap.parameters())
    with torch.no_grad():
        pol.bias.add_(1.0)
    s = _state([[1, 2]])
    assert not torch.allclose(pol.scores(s), snap.scores(s))


def test_sft_learns_on_synthetic(split):
    train = next_item_samples(split, "train")
    test = next_item_samples(split, "test", per_user="first")
    pol = SequentialPolicy(split.n_items, 32, seed=0)

    def nll():
        with torch.no_grad():
            st_ = history_state(test, np.arange(len(test)))
            return -float(pol.item_log_probs(st_, torch.as_tensor(test.positive[:, None]))[:, 0].mean())

    before = nll()
    log = train_sft(pol, train, TrainConfig(epochs=3, batch_size=128, lr=1e-2, seed=0))
    after = nll()
    counts = np.bincount(train.positive, minlength=split.n_items) + 1.0
    popularity_nll = float(-np.log(counts / counts.sum())[test.positive].mean())
    assert log[-1]["loss"] < log[0]["loss"]
    assert after < before - 0.3, (before, after)  # held-out NLL improves well beyond noise
    assert after < popularity_nll - 0.2, (after, popularity_nll)  # and it reads the history
    assert before == pytest.approx(math.log(split.n_items), rel=0.05)  # untrained ~ uniform
