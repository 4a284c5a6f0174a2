"""The FCPO slate actor: decoding, log-probabilities, KL, ranker initialisation."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.policies.actor import SlateActor
from fcpo.policies.base import SlateState, masked_topk, plackett_luce_log_prob
from fcpo.policies.capped import capped_plackett_luce_log_prob


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


# ----------------------------------------------------------------------------- per-slate cap (slate_cap)
POP12 = torch.tensor([True] * 6 + [False] * 6)


def _capped(mode="softmax", cap=1, n_items=12, k=3, pop=POP12, seed=0):
    actor = _actor(mode=mode, n_items=n_items, k=k, seed=seed)
    capped = SlateActor(actor.items, n_history=2, slate_size=k, mode=mode, hidden=8, user_dim=4, slate_cap=cap,
                        is_popular=pop)
    capped.load_state_dict(actor.state_dict())  # same weights; the groups are not part of the state
    return actor, capped


def _popular_bias(actor):
    """Push every query towards the popular items so that an uncapped slate breaks the cap."""
    with torch.no_grad():
        actor.head[-1].bias.copy_(actor.items[:6].mean(dim=0) * 20)


@pytest.mark.parametrize("mode", ["gaussian", "softmax"])
@pytest.mark.parametrize("greedy", [True, False])
def test_capped_actor_slates_hold_at_most_cap_popular_items(mode, greedy):
    free, actor = _capped(mode=mode, cap=1)
    _popular_bias(free), _popular_bias(actor)
    obs = _obs(64)
    exclude = torch.zeros(64, 12, dtype=torch.bool)
    exclude[::2, 7] = True
    g = torch.Generator().manual_seed(0)
    items, action, logp = actor.sample(obs, exclude, greedy=greedy, generator=g)
    assert (POP12[items].sum(dim=1) <= 1).all()
    assert not exclude.gather(1, items).any()
    uncapped = free.sample(obs, exclude, greedy=greedy, generator=torch.Generator().manual_seed(0))[0]
    assert (POP12[uncapped].sum(dim=1) > 1).any()  # the cap changed something
    torch.testing.assert_close(actor.action_log_prob(obs, action, exclude), logp)
    if mode == "gaussian":
        assert torch.equal(items, actor.decode_reference(action, exclude))
        expected = torch.distributions.Normal(actor.mean_action(obs), actor.log_std.exp()).log_prob(action).sum(dim=1)
        torch.testing.assert_close(logp, expected)  # the density of W: the decoder is deterministic in W
    else:
        s = actor.mean_action(obs) @ actor.items.T / actor.temperature
        torch.testing.assert_close(logp, capped_plackett_luce_log_prob(s, items, 1, POP12, exclude))
        per_slot = actor.action_log_prob(obs, action, exclude, per_slot=True)
        torch.testing.assert_close(per_slot.sum(dim=1), logp)


def test_capped_softmax_log_prob_sums_to_one_and_zero_outside_the_cap():
    pop = torch.tensor([True, True, True, False, False])
    _, actor = _capped(mode="softmax", cap=1, n_items=5, k=2, pop=pop)
    obs = _obs(1)
    slates = torch.tensor(list(itertools.permutations(range(5), 2)))
    lp = actor.action_log_prob(obs.expand(len(slates), -1), slates)
    assert float(lp.exp().sum().detach()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(torch.isinf(lp), pop[slates].all(dim=1))  # exactly the two-G0 slates are impossible


def test_capped_log_prob_gradients_reach_the_actor():
    _, actor = _capped(mode="softmax", cap=1)
    obs = _obs(8)
    items = actor.sample(obs, generator=torch.Generator().manual_seed(1))[0]
    actor.action_log_prob(obs, items).sum().backward()
    grads = [p.grad for p in actor.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("mode", ["gaussian", "softmax"])
def test_slate_cap_none_or_not_binding_is_the_unconstrained_actor(mode):
    free, loose = _capped(mode=mode, cap=3)  # cap == K never binds
    obs = _obs(16)
    exclude = torch.rand(16, 12, generator=torch.Generator().manual_seed(2)) < 0.3
    exclude[:, :3] = False
    for greedy in (True, False):
        a = free.sample(obs, exclude, greedy=greedy, generator=torch.Generator().manual_seed(4))
        b = loose.sample(obs, exclude, greedy=greedy, generator=torch.Generator().manual_seed(4))
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    if mode == "softmax":  # today's formulas, written out
        s = free.mean_action(obs) @ free.items.T / free.temperature
        items = free.sample(obs, exclude, greedy=True)[0]
        assert torch.equal(items, masked_topk(s, 3, exclude))
        torch.testing.assert_close(free.action_log_prob(obs, items, exclude), plackett_luce_log_prob(s, items, exclude),
                                   rtol=0, atol=0)


def test_groups_are_data_not_state_and_are_validated():
    free, actor = _capped(mode="softmax", cap=1)
    assert "is_popular" not in actor.state_dict()
    assert "cap of 1 G0" in actor.log_prob_kind and "cap" not in free.log_prob_kind
    assert set(actor.state_dict()) == set(free.state_dict())  # old checkpoints load unchanged
    with pytest.raises(ValueError, match=r"shape \[12\]"):
        actor.set_groups(torch.zeros(11, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        actor.set_groups(torch.zeros(12))
    with pytest.raises(ValueError, match="slate_cap"):
        SlateActor(actor.items, 2, 3, slate_cap=-1)
    bare = SlateActor(actor.items, 2, 3, mode="softmax", hidden=8, user_dim=4, slate_cap=1)
    with pytest.raises(RuntimeError, match="set_groups"):
        bare.sample(_obs(2))
    bare.set_groups(~POP12)  # dynamic groups: the new G0 applies from the next call
    items = bare.sample(_obs(32), greedy=False, generator=torch.Generator().manual_seed(0))[0]
    assert ((~POP12)[items].sum(dim=1) <= 1).all()
    snap = bare.snapshot()
    assert torch.equal(snap.is_popular, ~POP12) and snap.slate_cap == 1


def test_per_call_groups_override_the_actor_groups():
    _, actor = _capped(mode="softmax", cap=0)
    obs = _obs(4)
    rows = torch.zeros(4, 12, dtype=torch.bool)
    rows[0, :6] = True  # row 0: the first six items are popular; other rows: none
    items, _, logp = actor.sample(obs, greedy=False, generator=torch.Generator().manual_seed(3), is_popular=rows)
    assert not rows[0, items[0]].any()
    torch.testing.assert_close(actor.action_log_prob(obs, items, is_popular=rows), logp)


def test_act_caps_other_list_lengths_at_the_same_share_and_log_prob_uses_the_cap():
    _, actor = _capped(mode="softmax", cap=1)  # K = 3, cap 1 -> a 6-item list holds at most 2 G0 items
    _popular_bias(actor)
    obs = _obs(10)
    state = SlateState(obs, torch.zeros(10, 2, dtype=torch.long), torch.zeros(10, dtype=torch.long))
    assert actor.cap_for(3) == 1 and actor.cap_for(6) == 2 and actor.cap_for(2) == 0
    for mode in ("greedy", "sample"):
        lists = actor.act(state, 6, mode=mode, generator=torch.Generator().manual_seed(0))
        assert (POP12[lists].sum(dim=1) <= 2).all()
        slates = actor.act(state, 3, mode=mode, generator=torch.Generator().manual_seed(0))
        assert (POP12[slates].sum(dim=1) <= 1).all()
    slates = actor.act(state, 3)
    torch.testing.assert_close(actor.log_prob(state, slates), actor.action_log_prob(obs, slates))
    candidates = torch.stack([torch.randperm(12, generator=torch.Generator().manual_seed(u))[:8] for u in range(10)])
    cand_items = candidates[:, :3]
    s = actor.scores(state).gather(1, candidates)
    expected = capped_plackett_luce_log_prob(s, torch.arange(3).expand(10, 3), 1, POP12[candidates])
    torch.testing.assert_close(actor.log_prob(state, cand_items, candidates=candidates), expected)
