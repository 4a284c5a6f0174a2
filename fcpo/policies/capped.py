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
(one per row, e.g. a candidate list).  Scores must be finite: items to avoid belong in
``exclude`` (the fast decoders read a -inf score as an unavailable item).  Like the
unconstrained decoders, exact equality with the sequential definitions assumes no tied
scores within a row.
"""
from __future__ import annotations

import torch

from fcpo.policies.base import exclusion_bias, gumbel_topk, masked_topk, plackett_luce_log_prob
from fcpo.policies.shared_topk import shared_plus_row_topk

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- checks and group blocks
def cap_binds(cap: int | None, k: int) -> bool:
    """True when a cap can change a k-item slate (``cap is not None and cap < k``)."""
    return cap is not None and cap < k


#: most score entries (B·k·n) one decoding block holds (16 MB of float32); larger batches are decoded in row
#: chunks.  Bounds the memory (ML-20M: 15 GB in one block) and keeps a block's scores near the cache between
#: the product and the top-k: 2^21-2^22 measured 12 % faster than 2^26 at the ml-100k rollout's shape (932 x
#: 5 x 1,682), same picks (``benchmarks/decode_speed.py``)
DECODE_SCORE_BUDGET = 1 << 22

def _check_cap(cap: int | None) -> None:
    if cap is not None and (isinstance(cap, bool) or int(cap) != cap or cap < 0):
        raise ValueError(f"slate cap must be a non-negative integer or None, got {cap!r}")


def _check_inputs(b: int, n: int, k: int, is_popular: torch.Tensor | None, exclude: torch.Tensor | None,
                  device) -> torch.Tensor:
    """Validate the group mask ([n] or [B, n] bool) and ``exclude`` ([B, n]); return the mask on device."""
    if is_popular is None:
        raise ValueError("a slate cap needs the popular-group mask is_popular ([n_items] bool); got None "
                         "(SlateActor: pass is_popular= or call set_groups())")
    if is_popular.dtype != torch.bool:
        raise ValueError(f"is_popular must be a bool mask, got dtype {is_popular.dtype}")
    if is_popular.shape not in ((n,), (b, n)):
        raise ValueError(f"is_popular must have shape [{n}] or [{b}, {n}], got {list(is_popular.shape)}")
    if exclude is not None and exclude.shape != (b, n):
        raise ValueError(f"exclude must have shape [{b}, {n}], got {list(exclude.shape)}")
    if n < k:
        raise ValueError(f"cannot fill a {k}-item slate from {n} items")
    return is_popular.to(device)


def _group_layout(pop: torch.Tensor):
    """For a shared [n] mask: (perm, m1), the item ids with G1 first then G0 and the size of G1,
    so ``x.gather(-1, perm)`` lays both groups out as two contiguous column ranges.  None for a
    per-row [B, n] mask (groups are then masked)."""
    if pop.dim() != 1:
        return None
    ids1, ids0 = (~pop).nonzero().squeeze(1), pop.nonzero().squeeze(1)
    return torch.cat([ids1, ids0]), ids1.numel()


def _permute(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Columns (last axis) of ``x`` in the order ``perm`` (an index_select over a 2-D view: the
    fastest CPU column gather, far faster than index_select on the last axis of a 3-D tensor)."""
    return x.reshape(-1, x.shape[-1]).index_select(1, perm).view(*x.shape[:-1], perm.numel())


def _group_blocks(scores: torch.Tensor, exclude: torch.Tensor | None, pop: torch.Tensor):
    """The G1 and G0 score blocks of ``scores`` ([B, n] or [B, R, n]), excluded items at -inf.

    Returns [(block, ids), ...] (G1 first): ``ids`` maps block columns to item ids (None:
    the block has all n columns, the other group's items at -inf).  A shared [n] mask
    permutes the columns once and the blocks are views (one pass over the catalogue); a
    per-row [B, n] mask masks.
    """
    per_row = (lambda m: m) if scores.dim() == 2 else (lambda m: m.unsqueeze(1))
    if exclude is not None:
        scores = torch.where(per_row(exclude), NEG_INF, scores)
    layout = _group_layout(pop)
    if layout is None:
        return [(scores.masked_fill(per_row(pop), NEG_INF), None), (scores.masked_fill(per_row(~pop), NEG_INF), None)]
    perm, m1 = layout
    return _split_permuted(_permute(scores, perm), perm, m1)


def _split_permuted(permuted: torch.Tensor, perm: torch.Tensor, m1: int):
    return [(permuted[..., :m1], perm[:m1]), (permuted[..., m1:], perm[m1:])]


def _group_lists(block: torch.Tensor, ids: torch.Tensor | None, k: int):
    """Each row's (or score row's) best min(k, m) items of a group block, plus a sentinel entry:
    values (sentinel -inf) and item ids (sentinel 0).  An entry is a real item iff its value is
    finite (excluded items, other-group items and the sentinel are -inf)."""
    top = torch.topk(block, min(k, block.shape[-1]), dim=-1)
    items = top.indices if ids is None else ids[top.indices]
    values = torch.nn.functional.pad(top.values, (0, 1), value=NEG_INF)
    return values, torch.nn.functional.pad(items, (0, 1), value=0)


def _check_enough(lists, k: int) -> None:
    """Rows with fewer than k available items cannot be filled: a clear error.  The two lists
    hold min(k, available) real entries each, so k real entries in all iff k are available."""
    real = sum(torch.isfinite(values).sum(dim=-1) for values, _ in lists)
    short = real.reshape(real.shape[0], -1).min(dim=1).values < k
    if bool(short.any()):
        row = int(short.nonzero()[0, 0])
        raise ValueError(f"row {row}: exclude leaves fewer than the slate size {k} items")


def _choose_popular(avail1, avail0, under_cap, v1, i1, v0, i0) -> torch.Tensor:
    """Whether a slot takes the G0 candidate: it is the better of the two heads while under
    the cap (ties: lower item id, as argmax), or no G1 candidate is left."""
    better0 = (v0 > v1) | ((v0 == v1) & (i0 < i1))
    return avail0 & (~avail1 | (under_cap & better0))


def _allowed_set(taken: torch.Tensor, pop: torch.Tensor, count0: torch.Tensor, cap: int | None) -> torch.Tensor:
    """A_j as a [B, n] mask: not taken, minus G0 at the cap unless no G1 item is left (references)."""
    free = ~taken
    if cap is None:
        return free
    allowed = free & ~(pop & (count0 >= cap).unsqueeze(1))
    return torch.where(allowed.any(dim=1, keepdim=True), allowed, free)


def _sequential_argmax(scores_at, k: int, cap: int | None, is_popular, exclude, b: int, n: int, device):
    """k sequential argmaxes over A_j; ``scores_at(j)`` gives the [B, n] scores slot j maximises."""
    _check_cap(cap)
    if exclude is not None and exclude.shape != (b, n):
        raise ValueError(f"exclude must have shape [{b}, {n}], got {list(exclude.shape)}")
    taken = torch.zeros(b, n, dtype=torch.bool, device=device) if exclude is None else exclude.clone()
    if bool(((~taken).sum(dim=1) < k).any()):
        raise ValueError(f"a row of exclude leaves fewer items than the slate size {k}")
    pop = torch.zeros_like(taken) if cap is None else _check_inputs(b, n, k, is_popular, exclude, device).expand(b, n)
    rows = torch.arange(b, device=device)
    count0 = torch.zeros(b, dtype=torch.long, device=device)
    picks = []
    for j in range(k):
        pick = scores_at(j).masked_fill(~_allowed_set(taken, pop, count0, cap), NEG_INF).argmax(dim=1)
        picks.append(pick)
        taken = taken.clone()
        taken[rows, pick] = True
        count0 = count0 + pop[rows, pick]
    return torch.stack(picks, dim=1)


# ----------------------------------------------------------------------------- greedy
def capped_greedy_slate(scores: torch.Tensor, k: int, cap: int | None, is_popular: torch.Tensor | None,
                        exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy capped slate [B, k]: slot j = argmax of ``scores`` [B, n] over A_j (module docstring).

    Merges each row's top-k G1 list with its top-k G0 list (one top-k per group; the k
    slots then walk the two sorted lists): the G0 head is taken while under the cap and
    better than the G1 head, or when the G1 list is used up.
    """
    _check_cap(cap)
    if not cap_binds(cap, k):
        return masked_topk(scores, k, exclude)
    pop = _check_inputs(scores.shape[0], scores.shape[-1], k, is_popular, exclude, scores.device)
    lists = [_group_lists(block, ids, k) for block, ids in _group_blocks(scores, exclude, pop)]
    _check_enough(lists, k)
    (v1, i1), (v0, i0) = lists
    b = scores.shape[0]
    p1 = torch.zeros(b, 1, dtype=torch.long, device=scores.device)
    p0 = torch.zeros_like(p1)
    popular_so_far = torch.zeros(b, dtype=torch.long, device=scores.device)
    picks = torch.empty(b, k, dtype=torch.long, device=scores.device)
    for j in range(k):  # K slots, vectorised over users
        h1, h0 = v1.gather(1, p1).squeeze(1), v0.gather(1, p0).squeeze(1)
        c1, c0 = i1.gather(1, p1).squeeze(1), i0.gather(1, p0).squeeze(1)
        take0 = _choose_popular(torch.isfinite(h1), torch.isfinite(h0), popular_so_far < cap, h1, c1, h0, c0)
        picks[:, j] = torch.where(take0, c0, c1)
        p0 += take0.unsqueeze(1)
        p1 += (~take0).unsqueeze(1)
        popular_so_far += take0
    return picks


def capped_greedy_slate_reference(scores: torch.Tensor, k: int, cap: int | None, is_popular: torch.Tensor | None,
                                  exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The definition of :func:`capped_greedy_slate`: k sequential argmaxes over A_j (kept for tests)."""
    b, n = scores.shape
    return _sequential_argmax(lambda j: scores, k, cap, is_popular, exclude, b, n, scores.device)


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
    ``per_slot=True`` gives the k terms [B, k].  Differentiable in ``scores``.

    The two group normalisers are kept apart (one logsumexp per group block per slot, the
    same work as the unconstrained one) and combined per row: log(Z1 + Z0) under the cap,
    Z1 at the cap, Z0 once G1 is used up.  Unavailable entries hold a large finite negative
    value rather than -inf, so an empty group gives exp(.) = 0 and no NaN gradient.
    """
    _check_cap(cap)
    b, k = items.shape
    if not cap_binds(cap, k):
        return plackett_luce_log_prob(scores, items, exclude, per_slot=per_slot)
    pop = _check_inputs(scores.shape[0], scores.shape[-1], k, is_popular, exclude, scores.device)
    n = scores.shape[1]
    valid = torch.ones(b, n, dtype=torch.bool, device=scores.device) if exclude is None else ~exclude
    left1, left0 = (valid & ~pop).sum(dim=1), (valid & pop).sum(dim=1)  # available items per group
    short = (left1 + left0) < k
    if bool(short.any()):
        raise ValueError(f"row {int(short.nonzero()[0, 0])}: exclude leaves fewer than the slate size {k} items")
    fill = torch.finfo(scores.dtype).min / 8  # exp(fill - anything finite) == 0; no overflow in logaddexp
    masked = scores if exclude is None else torch.where(exclude, fill, scores)
    items = items.long()
    layout = _group_layout(pop)
    if layout is not None:  # G1 columns first: each group's normaliser is one logsumexp over a view
        perm, m1 = layout
        column = torch.empty_like(perm)
        column[perm] = torch.arange(n, device=scores.device)
        masked, column = _permute(masked, perm), column[items]
        group_lse = lambda m: (torch.logsumexp(m[:, :m1], dim=1), torch.logsumexp(m[:, m1:], dim=1))
    else:
        column = items
        group_lse = lambda m: (torch.logsumexp(m.masked_fill(pop, fill), dim=1),
                               torch.logsumexp(m.masked_fill(~pop, fill), dim=1))
    item_pop = pop[items] if pop.dim() == 1 else pop.gather(1, items)  # [B, k]
    item_valid = valid.gather(1, items)
    rows = torch.arange(b, device=scores.device)
    taken = torch.zeros(b, n, dtype=torch.bool, device=scores.device)  # in the columns of ``masked``
    count0 = torch.zeros(b, dtype=torch.long, device=scores.device)
    terms = []
    for j in range(k):  # K slate positions, vectorised over users and items
        lse1, lse0 = group_lse(masked.masked_fill(taken, fill))
        under_cap, has1, is0 = count0 < cap, left1 > 0, item_pop[:, j]
        lse = torch.where(under_cap, torch.logaddexp(lse1, lse0), torch.where(has1, lse1, lse0))
        already = taken[rows, column[:, j]]
        blocked = already | ~item_valid[:, j] | (is0 & ~under_cap & has1)
        terms.append((scores[rows, items[:, j]] - lse).masked_fill(blocked, NEG_INF))
        fresh = ~already & item_valid[:, j]
        left1, left0 = left1 - (fresh & ~is0).long(), left0 - (fresh & is0).long()
        count0 = count0 + is0.long()
        taken = taken.clone()  # masked_fill keeps the old mask for backward
        taken[rows, column[:, j]] = True
    terms = torch.stack(terms, dim=1)
    return terms if per_slot else terms.sum(dim=1)


# ----------------------------------------------------------------------------- gaussian-mode rows
def row_decode(scores: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
    """Unconstrained row decoder: slot j = argmax of row j of ``scores`` [B, k, n] over items not
    picked by slots < j (excluded items already at -inf; ties: the lower item id), slot by slot
    (:func:`_slot_maxima`: one max pass over the scores; k = 1: a plain max).  ``overwrite``: the
    caller owns ``scores`` and lets the decoder overwrite taken columns (saves a copy)."""
    b, k, n = scores.shape
    if k == 1:
        return scores[:, 0].max(dim=1).indices.unsqueeze(1)
    return _slot_maxima(scores if overwrite else scores.clone(), k, None, None, n)


def _row_decode_candidates(cand: torch.Tensor) -> torch.Tensor:
    """:func:`row_decode` from each row's best-k item list ``cand`` [B, K, K] (best first)."""
    b, k, _ = cand.shape
    picks = torch.empty(b, k, dtype=torch.long, device=cand.device)
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
    items to earlier slots): one top-k per group block, then slot j takes the first free
    entry of each of its two lists and chooses as the greedy merge does.  ``cap=None`` /
    ``cap >= k`` is :func:`row_decode` with excluded items at -inf, today's decoder.
    """
    _check_cap(cap)
    b, k, n = scores.shape
    if not cap_binds(cap, k):
        if exclude is not None:
            return row_decode(scores.masked_fill(exclude.unsqueeze(1), NEG_INF), overwrite=True)
        return row_decode(scores)
    pop = _check_inputs(scores.shape[0], scores.shape[-1], k, is_popular, exclude, scores.device)
    layout = _group_layout(pop)
    if layout is not None:  # shared groups: one permuted copy, then the slot-by-slot row maxima
        perm, m1 = layout
        if exclude is not None:
            scores = torch.where(exclude.unsqueeze(1), NEG_INF, scores)
        return _slot_maxima(_permute(scores, perm), k, cap, perm, m1)
    return _merge_row_lists(_group_blocks(scores, exclude, pop), k, cap)


def capped_row_decode_from_embeddings(w: torch.Tensor, items: torch.Tensor, cap: int | None,
                                      is_popular: torch.Tensor | None,
                                      exclude: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`capped_row_decode` of the scores W Vᵀ (w [B, k, d], item matrix V [n, d]).

    With a shared [n] group mask the item rows are permuted (G1 first) before the product,
    and excluded items enter as a -inf bias of the same batched GEMM, so the two group
    blocks come out contiguous with no pass over the [B, k, n] scores besides the top-k's.
    """
    b, k, _ = w.shape
    rows = max(1, DECODE_SCORE_BUDGET // max(1, k * items.shape[0]))
    if b > rows:  # rows are independent: bound the [rows, k, n] score block (ML-20M: 15 GB for 13,800 users)
        return torch.cat([capped_row_decode_from_embeddings(
            w[lo:lo + rows], items, cap,
            is_popular if is_popular is None or is_popular.dim() == 1 else is_popular[lo:lo + rows],
            None if exclude is None else exclude[lo:lo + rows]) for lo in range(0, b, rows)])
    if not cap_binds(cap, k):  # the plain row decoder on the biased product (no masked copy of the scores)
        return row_decode(row_scores(w, items, exclude), overwrite=True)
    if is_popular is None or is_popular.dim() != 1:
        return capped_row_decode(w @ items.T, cap, is_popular, exclude)
    _check_cap(cap)
    pop = _check_inputs(b, items.shape[0], k, is_popular, exclude, w.device)
    perm, m1 = _group_layout(pop)
    scores_p = row_scores(w, items.index_select(0, perm), None if exclude is None else _permute(exclude, perm))
    return _slot_maxima(scores_p, k, cap, perm, m1)


def row_scores(w: torch.Tensor, items: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """Scores W Vᵀ [B, k, n] (w [B, k, d], items V [n, d]) with excluded items ([B, n]) at -inf.

    One [B·k, d] × [d, n] GEMM plus an in-place add of a [B, 1, n] 0/-inf bias: on one CPU thread
    about 2.4× faster at the ml-100k rollout's shape than a batched ``baddbmm`` over B small
    [k, d] × [d, n] products (``benchmarks/decode_speed.py``)."""
    b, k, d = w.shape
    scores = (w.reshape(b * k, d) @ items.T).view(b, k, items.shape[0])
    if exclude is not None:
        scores.add_(exclusion_bias(exclude, scores.dtype).unsqueeze(1))
    return scores


def shared_row_decode(s: torch.Tensor, t: torch.Tensor, k: int, cap: int | None,
                      is_popular: torch.Tensor | None, stats: dict | None = None) -> torch.Tensor:
    """:func:`capped_row_decode` of the scores ``s[b] + t[j]`` (s [B, n] with excluded items at -inf,
    t [k, n] finite) without forming them: each group's candidate lists come from
    :func:`fcpo.policies.shared_topk.shared_plus_row_topk` (exact), then the same merge.  The Gaussian
    actor's greedy slate (W = μ, rows u + o_j) is this with s = u Vᵀ and t = O Vᵀ.  ``stats``: see
    ``shared_plus_row_topk``."""
    _check_cap(cap)
    b, n = s.shape
    if t.shape != (k, n):
        raise ValueError(f"t must have shape [{k}, {n}], got {list(t.shape)}")
    if not cap_binds(cap, k):
        return _row_decode_candidates(shared_plus_row_topk(s, t, k, stats=stats)[1])
    pop = _check_inputs(b, n, k, is_popular, None, s.device)
    layout = _group_layout(pop)
    if layout is None:  # one grouping per row: each group's scores with the other group at -inf
        blocks = [(s.masked_fill(pop, NEG_INF), t, None), (s.masked_fill(~pop, NEG_INF), t, None)]
    else:
        perm, m1 = layout
        sp, tp = _permute(s, perm), t.index_select(1, perm)
        blocks = [(sp[:, :m1], tp[:, :m1], perm[:m1]), (sp[:, m1:], tp[:, m1:], perm[m1:])]
    lists = []
    for sb, tb, ids in blocks:  # the G1 then the G0 list, as _group_lists builds them
        width = min(k, sb.shape[1])
        if width:
            values, cols = shared_plus_row_topk(sb, tb, width, stats=stats)
            items = cols if ids is None else ids[cols]
        else:
            values = s.new_empty(b, k, 0)
            items = torch.empty(b, k, 0, dtype=torch.long, device=s.device)
        lists.append((torch.nn.functional.pad(values, (0, 1), value=NEG_INF),
                      torch.nn.functional.pad(items, (0, 1), value=0)))
    return _merge_lists(lists, k, cap)


def _slot_maxima(scores_p: torch.Tensor, k: int, cap: int | None, perm: torch.Tensor | None, m1: int) -> torch.Tensor:
    """:func:`capped_row_decode` on group-permuted scores ``scores_p`` [B, k, n] (columns ``perm``: the
    m1 G1 items, then G0, each in increasing id; ``perm=None``, ``m1=n``: no groups, columns are item
    ids; excluded items at -inf), slot by slot: slot j masks the columns earlier slots took in row j
    (at most j per user) and takes the maximum of each group's block -- the definition's masked
    argmax (ties: the first column, i.e. the lower item id within a group; across groups as
    :func:`_choose_popular`), with one max pass over the scores in all instead of a top-k per row
    and group (a partial sort: 3-5x slower per score on one CPU thread, ``benchmarks/decode_speed.py``).
    ``cap=None``: no cap.  Overwrites the taken columns of ``scores_p`` with -inf."""
    b, _, n = scores_p.shape
    device = scores_p.device
    cap = k if cap is None else cap
    cols = torch.empty(b, k, dtype=torch.long, device=device)
    popular_so_far = torch.zeros(b, dtype=torch.long, device=device)
    none = (torch.full((b,), NEG_INF, dtype=scores_p.dtype, device=device),
            torch.zeros(b, dtype=torch.long, device=device))
    ids = (lambda c: c) if perm is None else (lambda c: perm[c.clamp(max=n - 1)])  # column -> item id (ties)
    for j in range(k):  # K slots, vectorised over users
        row = scores_p[:, j]  # [B, n] view
        if j:
            row.scatter_(1, cols[:, :j], NEG_INF)
        v1, c1 = row[:, :m1].max(dim=1) if m1 else none
        v0, c0 = row[:, m1:].max(dim=1) if m1 < n else none
        c0 = c0 + m1
        a1, a0 = torch.isfinite(v1), torch.isfinite(v0)
        take0 = _choose_popular(a1, a0, popular_so_far < cap, v1, ids(c1), v0, ids(c0))
        if not bool((a1 | a0).all()):
            available = torch.isfinite(scores_p[:, 0]).sum(dim=1)  # row 0 is never masked: the items left
            short = int((available < k).nonzero()[0, 0]) if bool((available < k).any()) else 0
            raise ValueError(f"row {short}: exclude leaves fewer than the slate size {k} items")
        cols[:, j] = torch.where(take0, c0, c1)
        popular_so_far += take0
    return cols if perm is None else perm[cols]


def _merge_row_lists(blocks, k: int, cap: int) -> torch.Tensor:
    """Slot j: the first free entry of row j's G1 and G0 lists, chosen as in the greedy merge."""
    return _merge_lists([_group_lists(block, ids, k) for block, ids in blocks], k, cap)  # [B, K, L+1] each


def _merge_lists(lists, k: int, cap: int) -> torch.Tensor:
    """:func:`_merge_row_lists` from the two groups' candidate lists ((values, ids) [B, K, L+1] each)."""
    _check_enough(lists, k)
    (v1, i1), (v0, i0) = lists
    b = v1.shape[0]
    picks = torch.empty(b, k, dtype=torch.long, device=v1.device)
    popular_so_far = torch.zeros(b, dtype=torch.long, device=v1.device)
    for j in range(k):  # K slots, vectorised over users
        h1, c1, a1 = _first_free(v1[:, j], i1[:, j], picks[:, :j])
        h0, c0, a0 = _first_free(v0[:, j], i0[:, j], picks[:, :j])
        take0 = _choose_popular(a1, a0, popular_so_far < cap, h1, c1, h0, c0)
        picks[:, j] = torch.where(take0, c0, c1)
        popular_so_far += take0
    return picks


def _first_free(values, ids, picked):
    """Head of a sorted candidate list after dropping items already picked: (value, id, exists);
    real entries are the finite ones."""
    free = torch.isfinite(values)
    if picked.shape[1]:
        free &= ~(ids.unsqueeze(2) == picked.unsqueeze(1)).any(dim=2)
    pos = free.float().argmax(dim=1, keepdim=True)
    return values.gather(1, pos).squeeze(1), ids.gather(1, pos).squeeze(1), free.any(dim=1)


def capped_row_decode_reference(scores: torch.Tensor, cap: int | None, is_popular: torch.Tensor | None,
                                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The definition of :func:`capped_row_decode`: k sequential masked argmaxes (kept for tests)."""
    b, k, n = scores.shape
    return _sequential_argmax(lambda j: scores[:, j], k, cap, is_popular, exclude, b, n, scores.device)
