"""Per-slate capped decoding (fcpo.policies.capped): the cap holds, fast = sequential definitions,
the capped Plackett-Luce log-prob is exact (brute force over all ordered slates, sampling
frequencies), and cap=None is today's unconstrained decoding bit for bit."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fcpo.policies.base import gumbel_topk, masked_topk, plackett_luce_log_prob
from fcpo.policies.capped import (capped_greedy_slate, capped_greedy_slate_reference, capped_plackett_luce_log_prob,
                                  capped_plackett_luce_sample, capped_row_decode, capped_row_decode_from_embeddings,
                                  capped_row_decode_reference, row_decode)


def _case(seed: int, b: int, n: int, k: int, p_pop: float, p_excl: float, per_row: bool):
    """Random scores, a group mask ([n] or [B, n]) and an exclude mask leaving >= k items per row."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n, generator=g)
    pop = torch.rand(b, n, generator=g) < p_pop if per_row else torch.rand(n, generator=g) < p_pop
    exclude = torch.rand(b, n, generator=g) < p_excl
    keep = torch.rand(b, n, generator=g).argsort(dim=1)[:, :k]
    exclude.scatter_(1, keep, False)
    return scores, pop, exclude, g


def _check_slate(items, k, cap, pop, exclude):
    """Distinct, not excluded, at most ``cap`` G0 items unless too few G1 items are available —
    then every available G1 item is in the slate and the rest is G0 (the fill rule)."""
    b, n = exclude.shape
    pop = pop.expand(b, n)
    assert items.shape == (b, k)
    assert (items.sort(dim=1).values.diff(dim=1) != 0).all()
    assert not exclude.gather(1, items).any()
    n_pop = pop.gather(1, items).sum(dim=1)
    avail_g1 = (~pop & ~exclude).sum(dim=1)
    fill = avail_g1 < k - cap
    assert (n_pop[~fill] <= cap).all()
    assert torch.equal(n_pop[fill], k - avail_g1[fill])  # all G1 items taken, the rest G0


CASES = dict(seed=st.integers(0, 10_000), n=st.integers(3, 16), k=st.integers(1, 6), cap=st.integers(0, 6),
             p_pop=st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]), p_excl=st.sampled_from([0.0, 0.3, 0.7]),
             per_row=st.booleans())


@settings(max_examples=80, deadline=None)
@given(**CASES)
def test_greedy_and_sampled_slates_never_break_the_cap(seed, n, k, cap, p_pop, p_excl, per_row):
    k = min(k, n)
    scores, pop, exclude, g = _case(seed, 6, n, k, p_pop, p_excl, per_row)
    greedy = capped_greedy_slate(scores, k, cap, pop, exclude)
    _check_slate(greedy, k, cap, pop, exclude)
    assert torch.equal(greedy, capped_greedy_slate_reference(scores, k, cap, pop, exclude))
    sampled = capped_plackett_luce_sample(scores, k, cap, pop, exclude, g)
    _check_slate(sampled, k, cap, pop, exclude)
    logp = capped_plackett_luce_log_prob(scores, sampled, cap, pop, exclude)
    assert torch.isfinite(logp).all()  # a sampled slate is reachable
    logp_greedy = capped_plackett_luce_log_prob(scores, greedy, cap, pop, exclude)
    assert torch.isfinite(logp_greedy).all()


@settings(max_examples=80, deadline=None)
@given(**CASES)
def test_row_decode_equals_its_sequential_reference_and_respects_the_cap(seed, n, k, cap, p_pop, p_excl, per_row):
    k = min(k, n)
    _, pop, exclude, g = _case(seed, 6, n, k, p_pop, p_excl, per_row)
    scores = torch.randn(6, k, n, generator=g)
    if seed % 3 == 0:  # identical rows force later slots onto their next candidates
        scores = scores[:, :1].expand(6, k, n).contiguous()
    fast = capped_row_decode(scores, cap, pop, exclude)
    assert torch.equal(fast, capped_row_decode_reference(scores, cap, pop, exclude))
    _check_slate(fast, k, cap, pop, exclude)
    if not per_row:  # the actor's path: scores W Vᵀ computed group by group
        w, v = torch.randn(6, k, 3, generator=g), torch.randn(n, 3, generator=g)
        torch.testing.assert_close(capped_row_decode_from_embeddings(w, v, cap, pop, exclude),
                                   capped_row_decode_reference(w @ v.T, cap, pop, exclude), rtol=0, atol=0)


def test_greedy_worked_example_cap_then_fill():
    """G0 = {0, 1, 2}; scores favour G0.  cap 1: best G0 first, then G1 in score order;
    with only one G1 item left (4 excluded) the slate fills with the next best G0 item."""
    scores = torch.tensor([[9.0, 8.0, 7.0, 2.0, 1.0, 0.5]])
    pop = torch.tensor([True, True, True, False, False, False])
    assert capped_greedy_slate(scores, 3, 1, pop).tolist() == [[0, 3, 4]]
    assert capped_greedy_slate(scores, 3, 2, pop).tolist() == [[0, 1, 3]]
    assert capped_greedy_slate(scores, 3, 0, pop).tolist() == [[3, 4, 5]]
    exclude = torch.tensor([[False, False, False, False, True, True]])
    assert capped_greedy_slate(scores, 3, 1, pop, exclude).tolist() == [[0, 3, 1]]  # order: the fill comes last
    assert capped_greedy_slate(scores, 3, 0, pop, exclude).tolist() == [[3, 0, 1]]


# ----------------------------------------------------------------------------- exact log-probability
def _sequential_log_prob(s: list[float], slate, cap, pop, excl) -> float:
    """Product of the sequential softmaxes over A_j, written from the definition (one row)."""
    taken, n_pop, total = set(), 0, 0.0
    for item in slate:
        free = [i for i in range(len(s)) if not excl[i] and i not in taken]
        allowed = [i for i in free if not (pop[i] and n_pop >= cap)] or free
        if item not in allowed:
            return -math.inf
        total += s[item] - math.log(sum(math.exp(s[i]) for i in allowed))
        taken.add(item)
        n_pop += pop[item]
    return total


BRUTE = [  # n, k, cap, G0 mask, excluded items
    (5, 2, 0, [1, 1, 0, 0, 0], []),
    (5, 3, 1, [1, 1, 1, 0, 0], []),
    (6, 3, 1, [1, 1, 0, 0, 1, 0], [3]),
    (6, 3, 1, [1, 1, 1, 1, 0, 0], [5]),  # one G1 item: every slate with 2+ G0 is a fill
    (6, 2, 1, [0, 0, 0, 1, 1, 1], [0, 1]),
    (6, 3, 2, [1, 1, 1, 1, 0, 1], []),
]


@pytest.mark.parametrize("n, k, cap, pop, excl", BRUTE)
def test_capped_log_prob_matches_brute_force_enumeration(n, k, cap, pop, excl):
    g = torch.Generator().manual_seed(n * 100 + k * 10 + cap)
    s = torch.randn(n, generator=g) * 1.5
    pop_t = torch.tensor(pop, dtype=torch.bool)
    excl_t = torch.zeros(n, dtype=torch.bool)
    excl_t[excl] = True
    slates = torch.tensor(list(itertools.permutations(range(n), k)))
    m = len(slates)
    logp = capped_plackett_luce_log_prob(s.expand(m, n), slates, cap, pop_t, excl_t.expand(m, n))
    ref = torch.tensor([_sequential_log_prob(s.tolist(), sl.tolist(), cap, pop, excl_t.tolist()) for sl in slates])
    reachable = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(logp), reachable)
    torch.testing.assert_close(logp[reachable], ref[reachable].float(), atol=1e-5, rtol=1e-5)
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # per-row [B, n] group masks give the same numbers
    logp_rows = capped_plackett_luce_log_prob(s.expand(m, n), slates, cap, pop_t.expand(m, n).clone(),
                                              excl_t.expand(m, n))
    torch.testing.assert_close(logp_rows, logp)
    per_slot = capped_plackett_luce_log_prob(s.expand(m, n), slates, cap, pop_t, excl_t.expand(m, n), per_slot=True)
    assert per_slot.shape == (m, k)
    torch.testing.assert_close(per_slot.sum(dim=1)[reachable], logp[reachable])
    # the greedy slate is the most likely slate's sequential choice: reachable
    greedy = capped_greedy_slate(s.unsqueeze(0), k, cap, pop_t, excl_t.unsqueeze(0))
    assert math.isfinite(_sequential_log_prob(s.tolist(), greedy[0].tolist(), cap, pop, excl_t.tolist()))


@pytest.mark.parametrize("n, k, cap, pop, excl", BRUTE[1:4])
def test_sampling_frequencies_match_the_exact_probabilities(n, k, cap, pop, excl):
    g = torch.Generator().manual_seed(7)
    s = torch.randn(n, generator=g)
    pop_t = torch.tensor(pop, dtype=torch.bool)
    excl_t = torch.zeros(n, dtype=torch.bool)
    excl_t[excl] = True
    draws = 20_000
    sample = capped_plackett_luce_sample(s.expand(draws, n), k, cap, pop_t, excl_t.expand(draws, n), g)
    slates = list(itertools.permutations(range(n), k))
    index = {sl: i for i, sl in enumerate(slates)}
    observed = torch.bincount(torch.tensor([index[tuple(r)] for r in sample.tolist()]), minlength=len(slates))
    slate_t = torch.tensor(slates)
    prob = capped_plackett_luce_log_prob(s.expand(len(slates), n), slate_t, cap, pop_t,
                                         excl_t.expand(len(slates), n)).exp()
    assert observed[prob == 0].sum() == 0  # unreachable slates are never drawn
    expected = prob * draws
    big = expected >= 5  # chi-square on the well-filled cells, the other reachable ones pooled into one cell
    obs, exp = observed[big].double(), expected[big].double()
    if expected[~big].sum() > 0:
        obs = torch.cat([obs, observed[~big].sum().reshape(1)])
        exp = torch.cat([exp, expected[~big].sum().reshape(1).double()])
    assert len(obs) > 10  # enough cells for the test to have power
    exp = exp * obs.sum() / exp.sum()
    p = stats.chisquare(obs.numpy(), exp.numpy()).pvalue
    assert p > 1e-3, f"sampling frequencies disagree with the exact probabilities (chi-square p={p:.2e})"


def test_log_prob_gradients_flow_and_match_the_reference():
    g = torch.Generator().manual_seed(3)
    n, k, cap = 6, 3, 1
    pop = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    exclude = torch.zeros(4, n, dtype=torch.bool)
    exclude[1, 3] = True  # row 1 has a single G1 item: its slate [0, 4, 1] is a fill
    items = torch.tensor([[0, 3, 4], [0, 4, 1], [3, 4, 2], [5, 3, 4]])
    s = torch.randn(4, n, generator=g, requires_grad=True)
    capped_plackett_luce_log_prob(s, items, cap, pop, exclude).sum().backward()
    s_ref = s.detach().clone().requires_grad_(True)
    total = 0
    for r in range(4):  # the definition, in torch, row by row
        taken, n_pop = set(), 0
        for item in items[r].tolist():
            free = [i for i in range(n) if not exclude[r, i] and i not in taken]
            allowed = [i for i in free if not (pop[i] and n_pop >= cap)] or free
            total = total + s_ref[r, item] - torch.logsumexp(s_ref[r, allowed], dim=0)
            taken.add(item)
            n_pop += int(pop[item])
    total.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    torch.testing.assert_close(s.grad, s_ref.grad)
    assert (s.grad[1, 3] == 0).all()  # the excluded item gets no gradient


def test_an_unreachable_slate_has_log_prob_minus_inf_and_finite_gradients():
    s = torch.randn(1, 5, requires_grad=True)
    pop = torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)
    lp = capped_plackett_luce_log_prob(s, torch.tensor([[0, 1]]), 1, pop)  # 2 G0 items, cap 1, G1 available
    assert lp.item() == -math.inf
    lp_ok = capped_plackett_luce_log_prob(s, torch.tensor([[0, 2]]), 1, pop)
    lp_ok.sum().backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------- cap=None is today's decoding
@pytest.mark.parametrize("cap", [None, 4, 9])
def test_no_binding_cap_reproduces_the_unconstrained_functions_exactly(cap):
    k = 4
    scores, pop, exclude, _ = _case(11, 7, 20, k, 0.5, 0.3, False)
    assert torch.equal(capped_greedy_slate(scores, k, cap, pop, exclude), masked_topk(scores, k, exclude))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(capped_plackett_luce_sample(scores, k, cap, pop, exclude, g1),
                       gumbel_topk(scores, k, exclude, g2))
    items = gumbel_topk(scores, k, exclude, g1)
    assert torch.equal(capped_plackett_luce_log_prob(scores, items, cap, pop, exclude),
                       plackett_luce_log_prob(scores, items, exclude))
    assert torch.equal(capped_plackett_luce_log_prob(scores, items, cap, pop, exclude, per_slot=True),
                       plackett_luce_log_prob(scores, items, exclude, per_slot=True))
    rows = torch.randn(7, k, 20, generator=g1)
    assert torch.equal(capped_row_decode(rows, cap, pop, exclude),
                       row_decode(rows.masked_fill(exclude.unsqueeze(1), float("-inf"))))
    assert torch.equal(capped_row_decode(rows, cap, None, exclude),
                       capped_row_decode_reference(rows, None, None, exclude))


def test_cap_none_needs_no_groups_but_a_binding_cap_does():
    scores = torch.randn(2, 6)
    assert capped_greedy_slate(scores, 3, None, None).shape == (2, 3)
    with pytest.raises(ValueError, match="is_popular"):
        capped_greedy_slate(scores, 3, 1, None)
    with pytest.raises(ValueError, match="shape"):
        capped_greedy_slate(scores, 3, 1, torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        capped_greedy_slate(scores, 3, 1, torch.zeros(6))
    with pytest.raises(ValueError, match="non-negative integer"):
        capped_greedy_slate(scores, 3, -1, torch.zeros(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-negative integer"):
        capped_row_decode(torch.randn(2, 3, 6), 1.5, torch.zeros(6, dtype=torch.bool))


@pytest.mark.parametrize("fn", ["greedy", "sample", "log_prob", "rows"])
def test_too_few_items_left_is_a_clear_error(fn):
    pop = torch.tensor([True, False, False, False, True, False])
    exclude = torch.zeros(2, 6, dtype=torch.bool)
    exclude[1, :4] = True  # row 1: two items left for a 3-slate
    scores = torch.randn(2, 6)
    with pytest.raises(ValueError, match="row 1"):
        if fn == "greedy":
            capped_greedy_slate(scores, 3, 1, pop, exclude)
        elif fn == "sample":
            capped_plackett_luce_sample(scores, 3, 1, pop, exclude)
        elif fn == "log_prob":
            capped_plackett_luce_log_prob(scores, torch.tensor([[0, 1, 2], [4, 5, 0]]), 1, pop, exclude)
        else:
            capped_row_decode(torch.randn(2, 3, 6), 1, pop, exclude)


@pytest.mark.parametrize("cap", [None, 0, 2])
@pytest.mark.parametrize("groups_per_row", [False, True])
def test_row_decode_in_chunks_equals_one_block(monkeypatch, cap, groups_per_row):
    """A batch too large for one score block is decoded in row chunks with the same picks."""
    import fcpo.policies.capped as C

    gen = torch.Generator().manual_seed(7)
    b, k, n, d = 23, 4, 40, 6
    w, items = torch.randn(b, k, d, generator=gen), torch.randn(n, d, generator=gen)
    pop = torch.rand(b, n, generator=gen) < 0.3 if groups_per_row else torch.rand(n, generator=gen) < 0.3
    exclude = torch.rand(b, n, generator=gen) < 0.2
    whole = C.capped_row_decode_from_embeddings(w, items, cap, pop, exclude)
    monkeypatch.setattr(C, "DECODE_SCORE_BUDGET", k * n * 5)  # 5 rows per block: 5 chunks
    chunked = C.capped_row_decode_from_embeddings(w, items, cap, pop, exclude)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    assert whole.shape == (b, k)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12), k=st.integers(1, 5), cap=st.integers(0, 5),
       p_pop=st.sampled_from([0.0, 0.3, 0.7, 1.0]), p_excl=st.sampled_from([0.0, 0.4]))
def test_slot_maxima_decoder_breaks_ties_as_the_definition(seed, n, k, cap, p_pop, p_excl):
    """Integer scores (many ties, within and across groups): the slot-by-slot maxima (capped_row_decode's
    shared-group path and, cap or no cap, the actor's path from embeddings) pick exactly the definition's
    argmaxes, lowest item id first; the input scores are left untouched."""
    k = min(k, n)
    _, pop, exclude, g = _case(seed, 5, n, k, p_pop, p_excl, False)
    scores = torch.randint(-2, 3, (5, k, n), generator=g).float()
    before = scores.clone()
    expected = capped_row_decode_reference(scores, cap, pop, exclude)
    assert torch.equal(capped_row_decode(scores, cap, pop, exclude), expected)
    assert torch.equal(scores, before)
    w = torch.randint(-1, 2, (5, k, 2), generator=g).float()  # integer embeddings: tied scores W Vᵀ
    v = torch.randint(-1, 2, (n, 2), generator=g).float()
    assert torch.equal(capped_row_decode_from_embeddings(w, v, cap, pop, exclude),
                       capped_row_decode_reference(w @ v.T, cap, pop, exclude))
    if exclude is not None and not p_excl:
        assert torch.equal(row_decode(scores), capped_row_decode_reference(scores, None, None, None))


def test_slot_maxima_decoder_hand_checked():
    """Two users, 5 items (1 and 3 popular), K = 3, cap 1; row scores chosen so slots collide."""
    pop = torch.tensor([False, True, False, True, False])
    scores = torch.tensor([[[0.1, 0.9, 0.5, 0.8, 0.2],     # slot 0: item 1 (G0, under the cap)
                            [0.1, 0.9, 0.5, 0.8, 0.2],     # slot 1: 1 taken, 3 is G0 at the cap -> item 2
                            [0.1, 0.9, 0.5, 0.8, 0.7]],    # slot 2: 1, 2 taken; G0 capped -> item 4
                           [[0.3, 0.1, 0.3, 0.2, 0.0],     # slot 0: tie 0 / 2 -> lower id 0
                            [0.3, 0.1, 0.3, 0.2, 0.0],     # slot 1: 0 taken -> 2
                            [0.0, 0.1, 0.0, 0.2, 0.0]]])   # slot 2: best free is 3 (G0, under the cap)
    exclude = torch.tensor([[False] * 5, [False, False, False, False, True]])
    got = capped_row_decode(scores, 1, pop, exclude)
    assert got.tolist() == [[1, 2, 4], [0, 2, 3]]
    assert torch.equal(got, capped_row_decode_reference(scores, 1, pop, exclude))


def test_slot_maxima_decoder_names_the_first_short_user():
    """User 1 runs dry at slot 1, user 0 at slot 3: the error names user 0, the first with too few items."""
    pop = torch.tensor([False, True, False, True, False, False])
    exclude = torch.tensor([[True, True, True, False, False, False], [True, True, True, True, True, False]])
    for fn in (lambda: capped_row_decode(torch.randn(2, 4, 6), 1, pop, exclude),
               lambda: capped_row_decode_from_embeddings(torch.randn(2, 4, 3), torch.randn(6, 3), 1, pop, exclude)):
        with pytest.raises(ValueError, match=r"row 0: exclude leaves fewer than the slate size 4 items"):
            fn()
