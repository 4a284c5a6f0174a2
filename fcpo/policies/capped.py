"""Slate decoding with a per-slate cap on popular items (FCPO, Ge et al., WSDM 2021, eq. 7-9, per slate).

FCPO asks that every K-item slate hold at most α'·K items of the popular group G0.
The ``per-slate`` constraint mode enforces this *inside* the policy's decoding:
the agents pass ``cap = floor(α'·K + 1e-9)`` (:func:`fcpo.evaluate.constraint.per_slate_cap`;
e.g. α' = 0.4, K = 5 → at most 2 G0 items) and every function here decodes under it.

**The capped sequential process.**  Position j = 0..k-1 chooses among the allowed set

    A_j = {items not excluded and not picked at positions < j}
          minus G0 once ``cap`` G0 items are already in the slate.

*Too few G1 items* (our rule): if the cap is reached and no allowed G1 item is left,
A_j falls back to the remaining non-excluded G0 items — the slate is filled with the
best remaining G0 items (greedy) or sampled among them (Plackett-Luce); decoding never
fails for lack of G1 items, and the cap is exceeded only in that case.  A row with
fewer than k non-excluded items is a caller bug and raises ``ValueError``.

* greedy (:func:`capped_greedy_slate`): slot j = argmax of the scores over A_j;
* sampled (:func:`capped_plackett_luce_sample`): slot j ~ softmax(scores) restricted to A_j,
  with the exact log-probability :func:`capped_plackett_luce_log_prob`;
* gaussian-mode rows (:func:`capped_row_decode`): slot j = argmax of score row j over A_j.

``cap=None`` (or ``cap >= k``: the cap can then never bind) delegates to the unconstrained
functions of :mod:`fcpo.policies.base` / the unconstrained row decoder, so picks, random
draws and log-probabilities are exactly those of today's decoding.

``is_popular`` is a bool mask over items, [n] (one grouping for the batch) or [B, n]
(one per row, e.g. a candidate list).  Scores are assumed finite (items to avoid belong
in ``exclude``); like the unconstrained decoders, exact equality with the sequential
definition assumes no tied scores within a row.
"""
from __future__ import annotations

import torch

from fcpo.policies.base import gumbel_topk, masked_topk, plackett_luce_log_prob

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- checks
def cap_binds(cap: int | None, k: int) -> bool:
    """True when a cap can change a k-item slate (``cap is not None and cap < k``)."""
    return cap is not None and cap < k


def _check_cap(cap: int | None) -> None:
    if cap is not None and (isinstance(cap, bool) or int(cap) != cap or cap < 0):
        raise ValueError(f"slate cap must be a non-negative integer or None, got {cap!r}")


def _popular_rows(is_popular: torch.Tensor | None, b: int, n: int, device) -> torch.Tensor:
    """``is_popular`` as a bool [B, n] view (broadcast from [n]); a clear error on a bad shape."""
    if is_popular is None:
        raise ValueError("a slate cap needs the popular-group mask is_popular ([n_items] bool); got None "
                         "(SlateActor: pass is_popular= or call set_groups())")
    if is_popular.dtype != torch.bool:
        raise ValueError(f"is_popular must be a bool mask, got dtype {is_popular.dtype}")
    if is_popular.shape not in ((n,), (b, n)):
        raise ValueError(f"is_popular must have shape [{n}] or [{b}, {n}], got {list(is_popular.shape)}")
    return is_popular.to(device).expand(b, n)


def _valid_items(exclude: torch.Tensor | None, b: int, n: int, k: int, device) -> torch.Tensor:
    """[B, n] mask of non-excluded items; raises if a row has fewer than k of them."""
    if exclude is None:
        if n < k:
            raise ValueError(f"cannot fill a {k}-item slate from {n} items")
        return torch.ones(b, n, dtype=torch.bool, device=device)
    if exclude.shape != (b, n):
        raise ValueError(f"exclude must have shape [{b}, {n}], got {list(exclude.shape)}")
    valid = ~exclude
    short = valid.sum(dim=1) < k
    if bool(short.any()):
        row = int(short.nonzero()[0, 0])
        raise ValueError(f"row {row} of exclude leaves {int(valid[row].sum())} items, fewer than the slate size {k}")
    return valid


def _group_lists(scores: torch.Tensor, valid: torch.Tensor, in_group: torch.Tensor, k: int):
    """Each row's (or score row's) best min(k, n) items of one group: values, ids, and how many are valid.

    ``scores`` is [B, n] or [B, R, n]; ``valid``/``in_group`` are [B, n].  Invalid
    entries sit at the end of each list (value -inf); the count [B] says where they start.
    """
    keep = valid & in_group
    mask = ~keep if scores.dim() == 2 else ~keep.unsqueeze(1)
    top = torch.topk(scores.masked_fill(mask, NEG_INF), min(k, scores.shape[-1]), dim=-1)
    return top.values, top.indices, keep.sum(dim=1)


def _choose_popular(avail1, avail0, under_cap, v1, i1, v0, i0) -> torch.Tensor:
    """Whether slot j takes the G0 candidate: when it is the better of the two heads while
    under the cap (ties: lower item id, as argmax), or when no G1 candidate is left."""
    better0 = (v0 > v1) | ((v0 == v1) & (i0 < i1))
    return avail0 & (~avail1 | (under_cap & better0))


# ----------------------------------------------------------------------------- greedy
def capped_greedy_slate(scores: torch.Tensor, k: int, cap: int | None, is_popular: torch.Tensor | None,
                        exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy capped slate [B, k]: slot j = argmax of ``scores`` [B, n] over A_j (module docstring).

    Merges each row's top-k G1 list and top-k G0 list (two top-k's over masked
    scores; the k slots then walk the two sorted lists): the G0 head is taken while
    under the cap and better than the G1 head, or when the G1 list is used up.
    """
    _check_cap(cap)
    if not cap_binds(cap, k):
        return masked_topk(scores, k, exclude)
    b, n = scores.shape
    pop = _popular_rows(is_popular, b, n, scores.device)
    valid = _valid_items(exclude, b, n, k, scores.device)
    v1, i1, n1 = _group_lists(scores, valid, ~pop, k)
    v0, i0, n0 = _group_lists(scores, valid, pop, k)
    pad = lambda t, fill: torch.nn.functional.pad(t, (0, 1), value=fill)  # a sentinel past the end
    v1, i1, v0, i0 = pad(v1, NEG_INF), pad(i1, 0), pad(v0, NEG_INF), pad(i0, 0)
    p1 = torch.zeros(b, 1, dtype=torch.long, device=scores.device)
    p0 = torch.zeros_like(p1)
    popular_so_far = torch.zeros(b, dtype=torch.long, device=scores.device)
    picks = torch.empty(b, k, dtype=torch.long, device=scores.device)
    for j in range(k):  # K slots, vectorised over users
        h1, h0 = v1.gather(1, p1).squeeze(1), v0.gather(1, p0).squeeze(1)
        c1, c0 = i1.gather(1, p1).squeeze(1), i0.gather(1, p0).squeeze(1)
        take0 = _choose_popular(p1.squeeze(1) < n1, p0.squeeze(1) < n0, popular_so_far < cap, h1, c1, h0, c0)
        picks[:, j] = torch.where(take0, c0, c1)
        p0 += take0.unsqueeze(1)
        p1 += (~take0).unsqueeze(1)
        popular_so_far += take0
    return picks


def capped_greedy_slate_reference(scores: torch.Tensor, k: int, cap: int | None, is_popular: torch.Tensor | None,
                                  exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The definition of :func:`capped_greedy_slate`: k sequential argmaxes over A_j (kept for tests)."""
    _check_cap(cap)
    b, n = scores.shape
    valid = _valid_items(exclude, b, n, k, scores.device)
    pop = _popular_rows(is_popular, b, n, scores.device) if cap is not None else torch.zeros_like(valid)
    taken = ~valid
    rows = torch.arange(b, device=scores.device)
    count0 = torch.zeros(b, dtype=torch.long, device=scores.device)
    picks = []
    for j in range(k):
        allowed = _allowed_set(taken, pop, count0, cap)
        pick = scores.masked_fill(~allowed, NEG_INF).argmax(dim=1)
        picks.append(pick)
        taken = taken.clone()
        taken[rows, pick] = True
        count0 = count0 + pop[rows, pick]
    return torch.stack(picks, dim=1)


def _allowed_set(taken: torch.Tensor, pop: torch.Tensor, count0: torch.Tensor, cap: int | None) -> torch.Tensor:
    """A_j as a [B, n] mask: not taken, minus G0 at the cap unless no G1 item is left (reference helper)."""
    free = ~taken
    if cap is None:
        return free
    allowed = free & ~(pop & (count0 >= cap).unsqueeze(1))
    return torch.where(allowed.any(dim=1, keepdim=True), allowed, free)


# ----------------------------------------------------------------------------- Plackett-Luce
def capped_plackett_luce_sample(scores: torch.Tensor, k: int, cap: int | None, is_popular: torch.Tensor | None,
                                exclude: torch.Tensor | None = None,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """A slate [B, k] from the capped Plackett-Luce process: slot j ~ softmax(scores) over A_j.

    Drawn as the capped greedy decode of Gumbel-perturbed scores z_i = s_i + G_i.  This is
    exact: given the picks so far, the unpicked perturbations are independent Gumbels
    truncated below the last maximum they took part in, and every A_j is homogeneous in
    that history (all remaining items before the cap, all remaining G1 items after it, all
    remaining G0 items once G1 is used up), so argmax over A_j is softmax(s) over A_j.
    The noise is drawn exactly as in :func:`fcpo.policies.base.gumbel_topk`.
    """
    _check_cap(cap)
    if not cap_binds(cap, k):
        return gumbel_topk(scores, k, exclude, generator)
    u = torch.rand(scores.shape, device=scores.device, generator=generator).clamp_(1e-20, 1.0)
    return capped_greedy_slate(scores - torch.log(-torch.log(u)), k, cap, is_popular, exclude)


def capped_plackett_luce_log_prob(scores: torch.Tensor, items: torch.Tensor, cap: int | None,
                                  is_popular: torch.Tensor | None, exclude: torch.Tensor | None = None,
                                  per_slot: bool = False) -> torch.Tensor:
    """Exact log P(items [B, k] in this order) under the capped Plackett-Luce process:
    sum_j [s_{i_j} - logsumexp_{i in A_j} s_i], -inf for a slate the process cannot produce;
    ``per_slot=True`` gives the k terms [B, k].  Differentiable in ``scores``."""
    _check_cap(cap)
    b, k = items.shape
    if not cap_binds(cap, k):
        return plackett_luce_log_prob(scores, items, exclude, per_slot=per_slot)
    n = scores.shape[1]
    pop = _popular_rows(is_popular, b, n, scores.device)
    valid = _valid_items(exclude, b, n, k, scores.device)
    s = scores.masked_fill(~valid, NEG_INF)
    s1, s0 = s.masked_fill(pop, NEG_INF), s.masked_fill(~pop, NEG_INF)
    left1, left0 = (valid & ~pop).sum(dim=1), (valid & pop).sum(dim=1)  # allowed items left per group
    rows = torch.arange(b, device=scores.device)
    taken = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    count0 = torch.zeros(b, dtype=torch.long, device=scores.device)
    terms = []
    for j in range(k):  # K slate positions, vectorised over users and items
        item = items[:, j]
        lse1 = _safe_logsumexp(s1.masked_fill(taken, NEG_INF), left1 > 0)
        lse0 = _safe_logsumexp(s0.masked_fill(taken, NEG_INF), left0 > 0)
        under_cap = count0 < cap
        lse = torch.where(under_cap, torch.logaddexp(lse1, lse0), torch.where(left1 > 0, lse1, lse0))
        item_pop = pop[rows, item]
        blocked = taken[rows, item] | (item_pop & ~under_cap & (left1 > 0))
        terms.append(s[rows, item].masked_fill(blocked, NEG_INF) - lse)
        fresh = ~taken[rows, item] & valid[rows, item]
        left1 = left1 - (fresh & ~item_pop).long()
        left0 = left0 - (fresh & item_pop).long()
        count0 = count0 + item_pop.long()
        taken = taken.clone()
        taken[rows, item] = True
    terms = torch.stack(terms, dim=1)
    return terms if per_slot else terms.sum(dim=1)


def _safe_logsumexp(masked: torch.Tensor, nonempty: torch.Tensor) -> torch.Tensor:
    """Row logsumexp that is -inf (with zero, not NaN, gradients) on rows with no allowed item."""
    safe = torch.where(nonempty.unsqueeze(1), masked, torch.zeros((), dtype=masked.dtype, device=masked.device))
    return torch.logsumexp(safe, dim=1).masked_fill(~nonempty, NEG_INF)


# ----------------------------------------------------------------------------- gaussian-mode rows
def row_decode(scores: torch.Tensor) -> torch.Tensor:
    """Unconstrained row decoder: slot j = argmax of row j of ``scores`` [B, k, n] over items not
    picked by slots < j (excluded items already at -inf), from each row's top-k list (slot j
    can lose at most j items to earlier slots): one top-k over the catalogue, O(k²) per user."""
    b, k, _ = scores.shape
    cand = torch.topk(scores, k, dim=2).indices  # [B, K, K]: row j's best K items
    picks = torch.empty(b, k, dtype=torch.long, device=scores.device)
    for j in range(k):  # K slots, vectorised over users
        c = cand[:, j]
        free = ~(c.unsqueeze(2) == picks[:, :j].unsqueeze(1)).any(dim=2) if j else torch.ones_like(c, dtype=torch.bool)
        picks[:, j] = c.gather(1, free.float().argmax(dim=1, keepdim=True)).squeeze(1)
    return picks


def capped_row_decode(scores: torch.Tensor, cap: int | None, is_popular: torch.Tensor | None,
                      exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian-mode decoder with the cap: slot j = argmax of row j of ``scores`` [B, k, n] over A_j.

    The cap makes the decoder a deterministic function of W (scores = W Vᵀ), so the
    Gaussian density of W remains the exact log-probability of the action taken.

    Per row, the best k G1 items and the best k G0 items suffice (slot j loses at most j
    items to earlier slots); slot j takes the first free entry of each list and chooses as
    the greedy merge does.  ``cap=None``/``cap >= k`` is :func:`row_decode` of the scores
    with excluded items at -inf, exactly today's decoder.
    """
    _check_cap(cap)
    b, k, n = scores.shape
    if not cap_binds(cap, k):
        if exclude is not None:
            scores = scores.masked_fill(exclude.unsqueeze(1), NEG_INF)
        return row_decode(scores)
    pop = _popular_rows(is_popular, b, n, scores.device)
    valid = _valid_items(exclude, b, n, k, scores.device)
    v1, i1, n1 = _group_lists(scores, valid, ~pop, k)  # [B, K, L]
    v0, i0, n0 = _group_lists(scores, valid, pop, k)
    rank1 = torch.arange(i1.shape[2], device=scores.device)
    rank0 = torch.arange(i0.shape[2], device=scores.device)
    in1, in0 = rank1 < n1.unsqueeze(1), rank0 < n0.unsqueeze(1)  # [B, L]: valid list entries
    picks = torch.empty(b, k, dtype=torch.long, device=scores.device)
    popular_so_far = torch.zeros(b, dtype=torch.long, device=scores.device)
    for j in range(k):  # K slots, vectorised over users
        h1, c1, a1 = _first_free(v1[:, j], i1[:, j], in1, picks[:, :j])
        h0, c0, a0 = _first_free(v0[:, j], i0[:, j], in0, picks[:, :j])
        take0 = _choose_popular(a1, a0, popular_so_far < cap, h1, c1, h0, c0)
        picks[:, j] = torch.where(take0, c0, c1)
        popular_so_far += take0
    return picks


def _first_free(values, ids, in_list, picked):
    """Head of a sorted candidate list after dropping items already picked: (value, id, exists)."""
    free = in_list & ~(ids.unsqueeze(2) == picked.unsqueeze(1)).any(dim=2) if picked.shape[1] else in_list
    pos = free.float().argmax(dim=1, keepdim=True)
    return values.gather(1, pos).squeeze(1), ids.gather(1, pos).squeeze(1), free.any(dim=1)


def capped_row_decode_reference(scores: torch.Tensor, cap: int | None, is_popular: torch.Tensor | None,
                                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The definition of :func:`capped_row_decode`: k sequential masked argmaxes (kept for tests)."""
    _check_cap(cap)
    b, k, n = scores.shape
    valid = _valid_items(exclude, b, n, k, scores.device)
    pop = _popular_rows(is_popular, b, n, scores.device) if cap is not None else torch.zeros_like(valid)
    taken = ~valid
    rows = torch.arange(b, device=scores.device)
    count0 = torch.zeros(b, dtype=torch.long, device=scores.device)
    picks = []
    for j in range(k):
        pick = scores[:, j].masked_fill(~_allowed_set(taken, pop, count0, cap), NEG_INF).argmax(dim=1)
        picks.append(pick)
        taken = taken.clone()
        taken[rows, pick] = True
        count0 = count0 + pop[rows, pick]
    return torch.stack(picks, dim=1)
