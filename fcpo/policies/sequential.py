"""A GRU item-softmax model over the history ids: the natural non-LLM backbone for alignment.

GRU4Rec-style (Hidasi et al., ICLR 2016) next-item model: item embeddings of the history
window (oldest first) run through a GRU; its last hidden state, projected to the embedding
space, scores every item by a dot product with the (tied) item embeddings plus an item bias.

``log_prob`` is **exact**: the Plackett-Luce log-probability of the ordered slate under
softmax(scores) over the whole catalogue (earlier picks and ``exclude`` masked), or, with
``candidates``, under the softmax over the candidate list only.  It reads ``state.history``
only (``obs`` and ``user`` are ignored); ``-1`` in the history is padding.
"""
from __future__ import annotations

import torch
from torch import nn

from fcpo.policies.base import Policy, SlateState, plackett_luce_log_prob

__all__ = ["SequentialPolicy", "candidate_log_softmax"]


def candidate_log_softmax(scores: torch.Tensor, items: torch.Tensor, candidates: torch.Tensor | None = None,
                          normalize: bool = True) -> torch.Tensor:
    """log pi(item_j | state) [B, J] for single-item actions from full scores [B, n_items].

    With ``candidates`` [B, C] and ``normalize``, the softmax runs over each row's candidate
    list (every item must be among them); otherwise over the whole catalogue.
    """
    if candidates is not None and normalize:
        s_c = torch.gather(scores, 1, candidates)
        match = candidates[:, :, None] == items[:, None, :]  # [B, C, J]
        if not bool(match.any(dim=1).all()):
            raise ValueError("an item to score is not in its row's candidate list")
        lse = torch.logsumexp(s_c, dim=1, keepdim=True)
        return torch.gather(scores, 1, items) - lse
    return torch.gather(torch.log_softmax(scores, dim=1), 1, items)


class SequentialPolicy(Policy):
    """GRU over the history window -> exact item softmax (see the module docstring).

    n_items: catalogue size; dim: embedding size; hidden: GRU width (default ``dim``);
    seed: initialise the weights from this seed (the global RNG is left untouched).
    """

    log_prob_kind = "exact item softmax (Plackett-Luce over the catalogue, or over the candidate list)"
    #: the trainer's default for ``item_log_probs(normalize=...)`` when candidate lists are given
    default_normalize = True

    def __init__(self, n_items: int, dim: int = 64, hidden: int | None = None, num_layers: int = 1,
                 dropout: float = 0.0, seed: int | None = None):
        super().__init__()
        if n_items < 2 or dim < 1:
            raise ValueError(f"SequentialPolicy needs n_items >= 2 and dim >= 1, got n_items={n_items}, dim={dim}")
        self.n_items = int(n_items)
        self.config = {"n_items": int(n_items), "dim": int(dim), "hidden": int(hidden or dim),
                       "num_layers": int(num_layers), "dropout": float(dropout), "seed": seed}
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
            nn.init.normal_(self.item_emb.weight, std=dim ** -0.5)
            with torch.no_grad():
                self.item_emb.weight[n_items].zero_()
            self.gru = nn.GRU(dim, hidden or dim, num_layers=num_layers, batch_first=True,
                              dropout=dropout if num_layers > 1 else 0.0)
            self.drop = nn.Dropout(dropout)
            self.proj = nn.Linear(hidden or dim, dim)
            self.bias = nn.Parameter(torch.zeros(n_items))

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """[B, dim] user representation from [B, N] history ids (-1 = padding, anywhere)."""
        if history.dim() != 2:
            raise ValueError(f"history must be [B, N] item ids, got shape {tuple(history.shape)}")
        if history.numel() and int(history.max()) >= self.n_items:
            raise ValueError(f"history holds item id {int(history.max())} >= n_items={self.n_items}")
        pad = history < 0
        # move padding to the end (stable), so the last real step is at index length - 1
        order = torch.sort(pad.to(torch.int8), dim=1, stable=True).indices
        ids = torch.gather(history, 1, order).masked_fill(torch.gather(pad, 1, order), self.n_items)
        lengths = (~pad).sum(dim=1)
        out, _ = self.gru(self.drop(self.item_emb(ids)))
        last = out[torch.arange(len(ids), device=ids.device), (lengths - 1).clamp(min=0)]
        last = last * (lengths > 0).unsqueeze(1)  # an empty history gives the zero state
        return self.proj(self.drop(last))

    def scores(self, state: SlateState) -> torch.Tensor:
        u = self.encode(state.history)
        return u @ self.item_emb.weight[: self.n_items].T + self.bias

    def item_log_probs(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                       normalize: bool = True) -> torch.Tensor:
        """log pi(items[:, j] | state) [B, J], each item scored as a one-item action (exact softmax)."""
        return candidate_log_softmax(self.scores(state), items, candidates, normalize)

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Exact Plackett-Luce log-probability of the ordered slate ``items`` [B, k] (see the module docstring)."""
        s = self.scores(state)
        if candidates is not None:
            s_c = torch.gather(s, 1, candidates)
            match = candidates[:, :, None] == items[:, None, :]
            if not bool(match.any(dim=1).all()):
                raise ValueError("log_prob: an item is not in its row's candidate list")
            return plackett_luce_log_prob(s_c, match.float().argmax(dim=1))
        return plackett_luce_log_prob(s, items, exclude)
