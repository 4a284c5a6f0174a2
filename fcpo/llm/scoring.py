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
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["left_pad", "run_prompts", "batched_continuation_log_probs"]


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
