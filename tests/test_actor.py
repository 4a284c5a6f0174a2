"""The FCPO slate actor: decoding, log-probabilities, KL, ranker initialisation."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.policies.actor import SlateActor
from fcpo.policies.base import SlateState


def _actor(mode="gaussian", n_items=12, dim=4, k=3, extra=1, seed=0):
    torch.manual_seed(seed)
    return SlateActor(torch.randn(n_items, dim + extra), n_history=2, slate_size=k, mode=mode, hidden=8,
                      user_dim=dim)


def _obs(b, dim=4, n_hist=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n_hist * dim + dim + 1, generator=g)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.9))
def test_fast_decode_equals_sequential_masked_argmax(seed, p_exclude):
    actor = _actor(n_items=30, k=4)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 4 * 5, generator=g)
    if seed % 3 == 0:  # identical rows force every later slot to fall back to its next candidate
        w = w[:, :5].repeat(1, 4)
    exclude = torch.rand(16, 30, generator=g) < p_exclude
    exclude[:, :4] = False  # keep at least K items available
    fast, ref = actor.decode(w, exclude), actor.decode_reference(w, exclude)
    assert torch.equal(fast, ref)
    assert (fast.sort(dim=1).values.diff(dim=1) != 0).all()  # K distinct items
    assert not exclude.gather(1, fast).any()


def test_gaussian_log_prob_is_the_density_of_the_sampled_w():
    actor = _actor()
    obs = _obs(5)
    items, w, logp = actor.sample(obs)
    mean, std = actor.mean_action(obs), actor.log_std.exp()
    expected = torch.distributions.Normal(mean, std).log_prob(w).sum(dim=1)
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(actor.action_log_prob(obs, w), expected)
    per_slot = actor.action_log_prob(obs, w, per_slot=True)
    assert per_slot.shape == (5, 3)
    torch.testing.assert_close(per_slot.sum(dim=1), expected)
    assert torch.equal(items, actor.decode(w))


def test_untrained_greedy_actor_is_the_mf_ranker():
    """The query starts at the user embedding (zero residual, zero offsets): greedy = top-K by u·v."""
    actor = _actor(extra=0)
    torch.nn.init.zeros_(actor.head[-1].weight)
    obs = _obs(6)
    greedy = actor.act(SlateState(obs, torch.zeros(6, 2, dtype=torch.long), torch.zeros(6, dtype=torch.long)), 3)
    user = obs[:, 8:12]
    mf = torch.topk(user @ actor.items.T, 3, dim=1).indices
    assert torch.equal(greedy, mf)


def test_softmax_mode_log_prob_sums_to_one_over_all_ordered_slates():
    actor = _actor(mode="softmax", n_items=5, k=2)
    obs = _obs(1)
    total = sum(actor.action_log_prob(obs, torch.tensor([[a, b]])).exp() for a, b in itertools.permutations(range(5), 2))
    assert float(total.detach()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("mode", ["gaussian", "softmax"])
def test_kl_is_zero_at_the_old_parameters_and_positive_after_a_change(mode):
    actor = _actor(mode=mode)
    obs = _obs(8)
    old = actor.old_stats(obs)
    assert float(actor.kl_from(obs, old)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        actor.head[-1].bias.add_(0.5)
    assert float(actor.kl_from(obs, old)) > 1e-3


def test_gaussian_mode_refuses_item_log_prob_with_a_clear_message():
    actor = _actor()
    state = SlateState(_obs(2), torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(NotImplementedError, match="mode='softmax'"):
        actor.log_prob(state, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    with pytest.raises(ValueError, match="actor mode"):
        SlateActor(torch.randn(5, 3), 2, 2, mode="beta")
