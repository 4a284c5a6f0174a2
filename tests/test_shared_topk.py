"""The greedy decoder from shared scores plus per-row corrections (issue 17): exact against full top-k.

``shared_plus_row_topk(s, t, k)`` must equal ``torch.topk(s[:, None] + t[None], k)``; the decoders built
on it must pick what the sequential references pick on the scores s + t; the Gaussian actor's greedy
slate must come from it; and its other speed changes (one-GEMM row scores, the log-density without a
Normal object) must leave values bit for bit unchanged.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.policies import actor as actor_module
from fcpo.policies.actor import SlateActor, gaussian_log_prob
from fcpo.policies.capped import capped_row_decode_reference, row_scores, shared_row_decode
from fcpo.policies.shared_topk import shared_plus_row_topk

NEG_INF = float("-inf")


def _full_topk(s, t, k):
    return torch.topk(s[:, None] + t[None], k, dim=2)


# ----------------------------------------------------------------------------- shared_plus_row_topk
def test_hand_checked_lists_and_the_fallback_passes():
    s = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    t = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]])
    stats = {}
    values, ids = shared_plus_row_topk(s, t, 2, probe=1, stats=stats)
    # row 0: 3 (item 0), 2 (item 2); row 1: 1 + 5 = 6 (item 1), then 3 (item 0)
    assert values.tolist() == [[[3.0, 2.0], [6.0, 3.0]]]
    assert ids.tolist() == [[[0, 2], [1, 0]]]
    # probe 1 is raised to k = 2: the candidates are the two best shared scores, items 0 and 2 (s_(2) = 2).
    # Row 0's 2nd value 2 is not > s_(2) + max t_0 = 2 and row 1's 2 is not > 2 + 5: neither is proven, so
    # both rows go to the 4x pass, which holds all 4 items and is exact
    assert stats == {"rows": 2, "retried": 2, "recomputed": 0}


def test_large_corrections_fall_back_to_the_full_row():
    torch.manual_seed(0)
    s = torch.randn(30, 200)
    t = 50.0 * torch.randn(3, 200)  # corrections dwarf the shared scores: the bound never holds
    stats = {}
    values, ids = shared_plus_row_topk(s, t, 4, probe=2, stats=stats)
    ref = _full_topk(s, t, 4)
    assert torch.equal(values, ref.values) and torch.equal(ids, ref.indices)
    assert stats["retried"] > 0 and stats["recomputed"] > 0


def test_zero_corrections_need_no_second_pass():
    torch.manual_seed(1)
    s = torch.randn(50, 300)
    stats = {}
    values, ids = shared_plus_row_topk(s, torch.zeros(5, 300), 5, stats=stats)
    ref = _full_topk(s, torch.zeros(5, 300), 5)
    assert torch.equal(values, ref.values) and torch.equal(ids, ref.indices)
    assert stats == {"rows": 250, "retried": 0, "recomputed": 0}


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 12), rows=st.integers(1, 6), m=st.integers(1, 90), k=st.integers(1, 8),
       scale=st.sampled_from([0.0, 0.01, 0.3, 3.0]), excluded=st.floats(0.0, 0.9), probe=st.integers(1, 20),
       seed=st.integers(0, 10_000))
def test_equals_full_topk(b, rows, m, k, scale, excluded, probe, seed):
    k = min(k, m)
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, m, generator=g)
    s[torch.rand(b, m, generator=g) < excluded] = NEG_INF
    t = scale * torch.randn(rows, m, generator=g)
    values, ids = shared_plus_row_topk(s, t, k, probe=probe)
    ref = _full_topk(s, t, k)
    assert torch.equal(values, ref.values)
    finite = torch.isfinite(ref.values)  # ids of -inf fillers are arbitrary, as with torch.topk
    assert torch.equal(ids[finite], ref.indices[finite])


@pytest.mark.parametrize("s_shape, t_shape, k, match", [
    ((3, 5), (2, 4), 1, "same m"),
    ((3, 5), (2, 5), 0, "k must be"),
    ((3, 5), (2, 5), 6, "k must be"),
])
def test_bad_shapes_are_refused(s_shape, t_shape, k, match):
    with pytest.raises(ValueError, match=match):
        shared_plus_row_topk(torch.zeros(s_shape), torch.zeros(t_shape), k)


def test_non_finite_corrections_are_refused():
    t = torch.zeros(2, 5)
    t[0, 1] = NEG_INF
    with pytest.raises(ValueError, match="finite"):
        shared_plus_row_topk(torch.zeros(3, 5), t, 2)


# ----------------------------------------------------------------------------- shared_row_decode
@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 10), k=st.integers(1, 6), extra=st.integers(0, 60), cap=st.one_of(st.none(), st.integers(0, 6)),
       per_row=st.booleans(), scale=st.sampled_from([0.0, 0.1, 2.0]), seed=st.integers(0, 10_000))
def test_shared_row_decode_equals_the_sequential_reference(b, k, extra, cap, per_row, scale, seed):
    n = k + 2 + extra
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, n, generator=g)
    s[:, :2][torch.rand(b, 2, generator=g) < 0.5] = NEG_INF  # excluded items (k finite ones remain)
    t = scale * torch.randn(k, n, generator=g)
    pop = torch.rand(b, n, generator=g) < 0.4 if per_row else torch.rand(n, generator=g) < 0.4
    got = shared_row_decode(s, t, k, cap, pop)
    # the reference reads unavailable items from exclude (its scores must be finite there)
    ref = capped_row_decode_reference((s[:, None] + t[None]).nan_to_num(neginf=0.0), cap,
                                      pop if cap is not None else None, torch.isinf(s))
    assert torch.equal(got, ref)


def test_shared_row_decode_with_an_empty_group():
    torch.manual_seed(3)
    s, t = torch.randn(4, 9), 0.1 * torch.randn(3, 9)
    pop = torch.zeros(9, dtype=torch.bool)  # no popular item: the G0 list is empty
    got = shared_row_decode(s, t, 3, 1, pop)
    assert torch.equal(got, capped_row_decode_reference(s[:, None] + t[None], 1, pop, torch.isinf(s)))


# ----------------------------------------------------------------------------- the Gaussian actor
def _actor(cap=None, n=120, d=6, k=4, seed=0):
    torch.manual_seed(seed)
    items = torch.randn(n, d)
    pop = torch.rand(n) < 0.25
    a = SlateActor(items, 3, k, slate_cap=cap, is_popular=pop)
    with torch.no_grad():
        a.row_offset.normal_(0.0, 0.3)
    return a


@pytest.mark.parametrize("cap, offset", [(None, 0.0), (1, 0.0), (2, 0.0), (None, 0.7)])  # offsets: uncapped only
def test_decode_mean_is_the_reference_decode_of_s_plus_t(cap, offset):
    a = _actor(cap)
    if offset:
        a.set_popular_offset(offset)
    torch.manual_seed(5)
    u = torch.randn(25, a.dim)
    exclude = torch.rand(25, a.n_items) < 0.2
    got = a.decode_mean(u, exclude)
    s = (u @ a.items.T).masked_fill(exclude, NEG_INF) - offset * a.is_popular.float()
    t = a.row_offset.detach() @ a.items.T
    c = a.slate_cap if a.cap_active(a.k) else None
    ref = capped_row_decode_reference((s[:, None] + t[None]).nan_to_num(neginf=0.0), c,
                                      a.is_popular if c is not None else None, exclude)
    assert torch.equal(got, ref)
    # and what decode() picks from W = u + o_j in one product (equal: these random scores have no near-ties)
    w = (u.unsqueeze(1) + a.row_offset.detach()).reshape(25, -1)
    assert torch.equal(got, a.decode(w, exclude))


def test_decode_mean_user_blocks_give_the_same_picks(monkeypatch):
    a = _actor(2)
    torch.manual_seed(6)
    u, exclude = torch.randn(37, a.dim), torch.rand(37, a.n_items) < 0.1
    whole = a.decode_mean(u, exclude)
    monkeypatch.setattr(actor_module, "GREEDY_BLOCK_SCORES", 5 * a.n_items)  # blocks of 5 users
    assert torch.equal(a.decode_mean(u, exclude), whole)
    per_row = torch.rand(37, a.n_items) < 0.3  # per-user groups are split with the users
    monkeypatch.setattr(actor_module, "GREEDY_BLOCK_SCORES", 1 << 20)
    ref = a.decode_mean(u, exclude, per_row)
    monkeypatch.setattr(actor_module, "GREEDY_BLOCK_SCORES", 4 * a.n_items)
    assert torch.equal(a.decode_mean(u, exclude, per_row), ref)


def test_greedy_sample_uses_the_mean_and_its_density():
    a = _actor(2)
    obs = torch.randn(9, a.encoder.n_history * a.user_dim + a.user_dim + 1)  # history, user, time fraction
    exclude = torch.rand(9, a.n_items) < 0.1
    items, w, logp = a.sample(obs, exclude, greedy=True)
    with torch.no_grad():
        mean = a.mean_action(obs)
        assert torch.equal(w, mean)
        assert torch.equal(items, a.decode_mean(a.query(obs), exclude))
        assert torch.equal(items, a.decode(mean, exclude))  # the W Vᵀ decoder agrees (no near-ties here)
        ref = torch.distributions.Normal(mean, a.log_std.exp()).log_prob(mean).sum(dim=1)
    assert torch.equal(logp.detach(), ref)


def test_decode_mean_refuses_the_softmax_mode():
    a = SlateActor(torch.randn(20, 4), 3, 2, mode="softmax")
    with pytest.raises(RuntimeError, match="gaussian"):
        a.decode_mean(torch.randn(2, 4))


# ----------------------------------------------------------------------------- bit-for-bit speed changes
def test_row_scores_equal_the_batched_product_with_a_bias():
    torch.manual_seed(7)
    w, items = torch.randn(30, 5, 8), torch.randn(70, 8)
    exclude = torch.rand(30, 70) < 0.2
    got = row_scores(w, items, exclude)
    bias = torch.where(exclude, NEG_INF, 0.0).unsqueeze(1)
    assert torch.allclose(got, torch.baddbmm(bias, w, items.T.expand(30, 8, 70)), rtol=1e-5, atol=1e-5)
    assert torch.isinf(got[exclude.unsqueeze(1).expand_as(got)]).all()
    assert torch.equal(row_scores(w, items, None), (w.reshape(150, 8) @ items.T).view(30, 5, 70))


def test_gaussian_log_prob_matches_normal_bit_for_bit_with_gradients():
    torch.manual_seed(8)
    mean = torch.randn(40, 12, requires_grad=True)
    log_std = torch.full((12,), -1.3).add_(0.1 * torch.randn(12)).requires_grad_(True)
    value = torch.randn(40, 12)
    ours = gaussian_log_prob(mean, log_std, value)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(value)
    assert torch.equal(ours, ref)
    g_ours = torch.autograd.grad(ours.sum(), (mean, log_std))
    g_ref = torch.autograd.grad(ref.sum(), (mean, log_std))
    assert all(torch.equal(x, y) for x, y in zip(g_ours, g_ref))
    # hand-checked: log N(0 | 0, 1) = -log sqrt(2 pi)
    assert float(gaussian_log_prob(torch.zeros(1), torch.zeros(1), torch.zeros(1))) == pytest.approx(
        -0.5 * math.log(2 * math.pi), abs=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_exclusion_bias_is_the_masked_fill(dtype):
    from fcpo.policies.base import exclusion_bias

    torch.manual_seed(9)
    exclude = torch.rand(7, 33) < 0.3
    bias = exclusion_bias(exclude, dtype)
    assert bias.dtype == dtype
    assert torch.equal(bias, torch.zeros(7, 33, dtype=dtype).masked_fill(exclude, NEG_INF))
    scores = torch.randn(7, 33).to(dtype)
    assert torch.equal(scores + bias, scores.masked_fill(exclude, NEG_INF))
    with pytest.raises(ValueError, match="bool"):
        exclusion_bias(exclude.float())


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("mode", ["gaussian", "softmax"])
def test_greedy_ranking_blocks_equal_the_masked_top_k_of_scores(monkeypatch, k, mode):
    from fcpo.policies.base import SlateState, masked_topk

    torch.manual_seed(10)
    a = SlateActor(torch.randn(90, 6), 3, 4, mode=mode)
    if mode == "gaussian":
        with torch.no_grad():
            a.row_offset.normal_(0.0, 0.3)
    obs = torch.randn(23, 3 * 6 + 6 + 1)
    exclude = torch.rand(23, 90) < 0.25
    state = SlateState(obs=obs, history=torch.zeros(23, 3, dtype=torch.long), user=torch.arange(23))
    with torch.no_grad():
        ref = masked_topk(a.scores(state), k, exclude)
    monkeypatch.setattr(actor_module, "GREEDY_BLOCK_SCORES", 4 * 90)  # blocks of 4 users
    assert torch.equal(a.act(state, k, "greedy", exclude), ref)
