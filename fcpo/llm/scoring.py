"""Batched log-probabilities of answer continuations under a causal LM, the prompt run once.

``log pi(y | x) = sum_t log p(y_t | x, y_<t)`` (the sequence log-likelihood that SFT, DPO and
S-DPO use; Rafailov et al. 2023 Eq. 7, Chen et al. 2024 Eq. 9) for B prompts x_b with J answer
candidates y_bj each, in two forward passes for the whole batch:

1. the B prompts, left-padded, with their key/value cache (``position_ids`` count real tokens
   only, so padding changes nothing);
2. the cache repeated J times per prompt (``batch_repeat_interleave``) and the B*J candidates,
   right-padded, attending to their own prompt.

The first answer token is scored by the prompt pass's last logits, the others by pass 2.
Gradients flow through both passes.

:func:`packed_continuation_log_probs` computes the same numbers in ONE pass without copying the
cache: each row packs ``[prompt | y_1 | ... | y_J]`` and a 4-D attention mask lets a token of
``y_j`` see the prompt and the earlier tokens of ``y_j`` only ("tree attention"); ``y_j``'s
position ids restart at the prompt length.  It needs a model that accepts custom 4-D masks
(``transformers`` >= 4.4x with SDPA or eager attention; GPT-2 and Llama do).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["left_pad", "run_prompts", "batched_continuation_log_probs", "packed_continuation_log_probs"]


def _forward(model, **kwargs):
    """model(**kwargs); ``logits_to_keep`` (the LM head only where needed) is dropped for models without it."""
    try:
        return model(**kwargs)
    except TypeError as exc:
        if "logits_to_keep" not in str(exc):
            raise
        kwargs.pop("logits_to_keep")
        return model(**kwargs)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, L], mask [B, L]) with every sequence right-aligned (left padding)."""
    if any(len(s) < 1 for s in sequences):
        raise ValueError("every prompt needs at least one token")
    L = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), L), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), L), dtype=torch.long)
    for b, s in enumerate(sequences):
        ids[b, L - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, L - len(s):] = 1
    return ids.to(device), mask.to(device)


def run_prompts(model, prompts: Sequence[Sequence[int]], pad_id: int):
    """One cached forward pass over left-padded prompts: (last logits [B, V], cache, mask [B, L], lengths [B])."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    out = _forward(model, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   logits_to_keep=1)
    return out.logits[:, -1, :], out.past_key_values, mask, mask.sum(1)


def batched_continuation_log_probs(model, prompts: Sequence[Sequence[int]],
                                   continuations: Sequence[Sequence[Sequence[int]]], pad_id: int = 0) -> torch.Tensor:
    """[B, J] sum of log p(continuations[b][j] | prompts[b]) (module docstring); every row has J continuations."""
    device = next(model.parameters()).device
    B = len(prompts)
    if B != len(continuations):
        raise ValueError(f"got {B} prompts but {len(continuations)} continuation lists")
    if B == 0:
        return torch.zeros(0, 0, device=device)
    J = len(continuations[0])
    if any(len(c) != J for c in continuations):
        raise ValueError("every prompt needs the same number of continuations (pad the candidate lists)")
    if J == 0:
        return torch.zeros(B, 0, device=device)
    flat = [list(c) for row in continuations for c in row]
    lengths = torch.tensor([len(c) for c in flat], device=device)
    if int(lengths.min()) < 1:
        raise ValueError("every continuation needs at least one token")
    T = int(lengths.max())
    cont = torch.zeros(B * J, T, dtype=torch.long)
    for r, c in enumerate(flat):
        cont[r, :len(c)] = torch.as_tensor(c, dtype=torch.long)
    cont = cont.to(device)
    cmask = torch.arange(T, device=device)[None, :] < lengths[:, None]
    last, cache, pmask, plen = run_prompts(model, prompts, pad_id)
    first = last.repeat_interleave(J, dim=0)[:, None, :]
    if T > 1:
        cache.batch_repeat_interleave(J)
        attn = torch.cat([pmask.repeat_interleave(J, dim=0), cmask.long()], dim=1)
        positions = plen.repeat_interleave(J)[:, None] + torch.arange(T, device=device)[None, :]
        rest = _forward(model, input_ids=cont, attention_mask=attn, position_ids=positions, past_key_values=cache,
                        use_cache=True).logits[:, :-1]
        logits = torch.cat([first, rest], dim=1)
    else:
        logits = first
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, cont[:, :, None]).squeeze(2)
    return (logp * cmask).sum(dim=1).view(B, J)


def _packed_mask(seg: torch.Tensor, attn_impl: str | None, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] mask: key k visible from query q iff k <= q, k is real and (k in the prompt or
    in q's own candidate); a padding query sees itself only (keeps softmax finite)."""
    L = seg.shape[1]
    idx = torch.arange(L, device=seg.device)
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    causal = idx[None, :, None] >= idx[None, None, :]
    visible = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    visible = visible | ((q_seg < 0) & (idx[None, :, None] == idx[None, None, :]))
    visible = visible[:, None]
    if attn_impl == "sdpa":
        return visible
    return torch.zeros(visible.shape, dtype=dtype, device=seg.device).masked_fill(~visible, torch.finfo(dtype).min)


def packed_continuation_log_probs(model, prompts: Sequence[Sequence[int]],
                                  continuations: Sequence[Sequence[Sequence[int]]], pad_id: int = 0) -> torch.Tensor:
    """[B, J] sum of log p(continuations[b][j] | prompts[b]) in one tree-attention pass (module docstring)."""
    device = next(model.parameters()).device
    B = len(prompts)
    if B != len(continuations):
        raise ValueError(f"got {B} prompts but {len(continuations)} continuation lists")
    J = len(continuations[0]) if B else 0
    if any(len(c) != J for c in continuations):
        raise ValueError("every prompt needs the same number of continuations (pad the candidate lists)")
    if B == 0 or J == 0:
        return torch.zeros(B, J, device=device)
    if any(len(p) < 1 for p in prompts) or any(len(c) < 1 for row in continuations for c in row):
        raise ValueError("the prompt and every continuation need at least one token")
    rows_ids, rows_seg, rows_pos, rows_prev = [], [], [], []
    for p, conts in zip(prompts, continuations):
        ids, seg, pos, prev = list(p), [0] * len(p), list(range(len(p))), []
        for j, c in enumerate(conts):
            start = len(ids)
            ids += list(c)
            seg += [j + 1] * len(c)
            pos += range(len(p), len(p) + len(c))
            prev.append([len(p) - 1] + list(range(start, start + len(c) - 1)))  # where each token is predicted
        rows_ids.append(ids), rows_seg.append(seg), rows_pos.append(pos), rows_prev.append(prev)
    L = max(len(r) for r in rows_ids)
    T = max(len(c) for row in continuations for c in row)
    ids = torch.full((B, L), int(pad_id), dtype=torch.long)
    seg = torch.full((B, L), -1, dtype=torch.long)
    pos = torch.zeros((B, L), dtype=torch.long)
    target = torch.zeros((B, J, T), dtype=torch.long)
    where = torch.zeros((B, J, T), dtype=torch.long)
    valid = torch.zeros((B, J, T), dtype=torch.bool)
    for b in range(B):
        off = L - len(rows_ids[b])  # left padding
        ids[b, off:] = torch.as_tensor(rows_ids[b])
        seg[b, off:] = torch.as_tensor(rows_seg[b])
        pos[b, off:] = torch.as_tensor(rows_pos[b])
        for j, c in enumerate(continuations[b]):
            target[b, j, :len(c)] = torch.as_tensor(list(c))
            where[b, j, :len(c)] = torch.as_tensor(rows_prev[b][j]) + off
            valid[b, j, :len(c)] = True
    ids, seg, pos = ids.to(device), seg.to(device), pos.to(device)
    target, where, valid = target.to(device), where.to(device), valid.to(device)
    first = int(where[:, :, 0].min())  # logits are needed from here on only
    keep = L - first
    dtype = next(model.parameters()).dtype
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    mask = _packed_mask(seg, impl, dtype if dtype.is_floating_point else torch.float32)
    logits = _forward(model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                      logits_to_keep=keep).logits
    logits = logits[:, -keep:]
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, keep, V]
    flat = (where - first).clamp(min=0).view(B, J * T)
    rows = torch.arange(B, device=device)[:, None]
    tok_lp = logp[rows, flat, target.view(B, J * T)].view(B, J, T)
    return (tok_lp * valid).sum(dim=2)
