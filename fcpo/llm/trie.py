"""Trie-constrained greedy decoding: the model may only spell one of the candidate titles.

A :class:`TokenTrie` holds the token-id sequences of a prompt's candidate answers (each ending
in the end-of-answer token, so no answer is a prefix of another).  :func:`trie_greedy_decode`
generates greedily for a batch of prompts, masking at every step all tokens except the children
of the current trie node; it stops at a leaf, i.e. at a complete candidate answer.  The answer is
therefore always exactly one candidate (ValidRatio 1 by construction), the one reached by the
greedy path (not necessarily the candidate of highest total log-probability; see
:func:`fcpo.llm.scoring.batched_continuation_log_probs` for that).
"""
from __future__ import annotations

from typing import Sequence

import torch

from fcpo.llm.scoring import run_prompts

__all__ = ["TokenTrie", "trie_greedy_decode"]


class _Node:
    __slots__ = ("children", "end")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.end: int | None = None  # index of the sequence ending here


class TokenTrie:
    """Prefix trie over token-id sequences; identical sequences share a leaf (the first index wins)."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.root = _Node()
        self.n = len(sequences)
        for j, seq in enumerate(sequences):
            seq = [int(t) for t in seq]
            if not seq:
                raise ValueError(f"sequence {j} is empty")
            node = self.root
            for t in seq:
                if node.end is not None:
                    raise ValueError(f"sequence {node.end} is a proper prefix of sequence {j}; "
                                     "end every sequence with an end-of-answer token")
                node = node.children.setdefault(t, _Node())
            if node.children:
                raise ValueError(f"sequence {j} is a proper prefix of another sequence; "
                                 "end every sequence with an end-of-answer token")
            if node.end is None:
                node.end = j

    def walk(self, prefix: Sequence[int]) -> _Node | None:
        """The node reached by ``prefix``, None when it leaves the trie."""
        node = self.root
        for t in prefix:
            node = node.children.get(int(t))
            if node is None:
                return None
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Token ids that continue ``prefix`` towards some sequence (empty at a leaf or off the trie)."""
        node = self.walk(prefix)
        return [] if node is None else sorted(node.children)

    def match(self, sequence: Sequence[int]) -> int | None:
        """Index of the sequence equal to ``sequence``, else None."""
        node = self.walk(sequence)
        return None if node is None else node.end


@torch.no_grad()
def trie_greedy_decode(model, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[Sequence[int]]],
                       pad_id: int = 0) -> tuple[list[int], list[list[int]]]:
    """Greedy decoding restricted to each prompt's candidate token sequences.

    Returns (index of the chosen candidate per prompt, its generated token ids).  All prompts run
    together: one left-padded prompt pass, then one cached single-token pass per step.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"got {len(prompts)} prompts but {len(candidates)} candidate lists")
    if not prompts:
        return [], []
    tries = [TokenTrie(c) for c in candidates]
    was_training = model.training
    model.eval()
    logits, cache, mask, plen = run_prompts(model, prompts, pad_id)
    device = logits.device
    B, V = logits.shape
    nodes = [t.root for t in tries]
    choice = [-1] * B
    generated: list[list[int]] = [[] for _ in range(B)]
    step = 0
    while True:
        allowed = torch.zeros(B, V, dtype=torch.bool)
        for b, node in enumerate(nodes):
            allowed[b, list(node.children) if choice[b] < 0 else [pad_id]] = True
        tokens = logits.float().masked_fill(~allowed.to(device), float("-inf")).argmax(1)
        for b, t in enumerate(tokens.tolist()):
            if choice[b] >= 0:
                continue
            generated[b].append(t)
            nodes[b] = nodes[b].children[t]
            if not nodes[b].children:
                choice[b] = nodes[b].end
        if min(choice) >= 0:
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=(plen + step)[:, None],
                    past_key_values=cache, use_cache=True)
        logits, cache = out.logits[:, -1, :], out.past_key_values
        step += 1
    model.train(was_training)
    return choice, generated
