"""The policy contract every recommender in fcpo fulfils (see DESIGN.md, "Contracts").

A policy maps a batch of user states to K distinct items:

* ``act(state, k, mode="greedy"|"sample", exclude=None) -> LongTensor [B, k]``;
* ``log_prob(state, items, candidates=None) -> Tensor [B]`` — each policy says in
  its docstring *which* log-probability it returns (exact item softmax /
  Plackett-Luce, the Gaussian density of a continuous action, a tree path);
* ``snapshot()`` — a frozen deep copy (reference model, previous self-play player).

A :class:`SlateState` carries every view of the state an env or the evaluator
has, so RL actors (``obs``), sequential models (``history``) and MF rankers
(``user``) share one call signature.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SlateState:
    """A batch of B user states.

    obs: float32 [B, obs_dim] env observation (history embeddings | user embedding | t/T);
    history: int64 [B, N] item ids of the positive-history window (oldest first);
    user: int64 [B] dense user ids.
    """

    obs: torch.Tensor
    history: torch.Tensor
    user: torch.Tensor

    @classmethod
    def from_numpy(cls, obs: np.ndarray, history: np.ndarray, user: np.ndarray, device="cpu") -> "SlateState":
        return cls(torch.as_tensor(obs, dtype=torch.float32, device=device),
                   torch.as_tensor(history, dtype=torch.long, device=device),
                   torch.as_tensor(user, dtype=torch.long, device=device))

    def to(self, device) -> "SlateState":
        return SlateState(self.obs.to(device), self.history.to(device), self.user.to(device))

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def index(self, idx) -> "SlateState":
        return SlateState(self.obs[idx], self.history[idx], self.user[idx])


CONSTRAINT_MODES = ("per-slate", "expected")
"""How a constrained agent meets "at most α'·K G0 items per slate" (``--constraint``):

* ``per-slate`` (default; Ge et al. eq. 7-9 as worded): the cap m = ⌊α'K⌋ is enforced inside the
  policy's decoding (:mod:`fcpo.policies.capped`), for greedy and sampled slates alike;
* ``expected``: the CMDP constraint E[Σ_t c_t] ≤ d trained by CPO / Lagrange multipliers, for costs
  that cannot be masked before acting; the deployed policy is the stochastic policy that was trained.
"""


def check_constraint_mode(value, owner: str = "config") -> str:
    """Validate a ``constraint`` option (one of :data:`CONSTRAINT_MODES`)."""
    if value not in CONSTRAINT_MODES:
        raise ValueError(f"{owner}: constraint (--constraint) must be one of {', '.join(CONSTRAINT_MODES)}, got {value!r}")
    return value


def check_alpha_prime(value, owner: str = "config") -> float:
    """α' (the share of G0 items allowed per slate, FCPO's constraint) must lie in (0, 1]; returns it as a float.

    The one check used by every agent config and the α'-fair re-ranker."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{owner}: alpha_prime (--alpha, α') must lie in (0, 1], got {value!r}")
    return float(value)


#: the bit patterns of -inf, as the signed integers of the float's width
_NEG_INF_BITS = {torch.float32: (torch.int32, -(1 << 23)), torch.float64: (torch.int64, -(1 << 52))}


def exclusion_bias(exclude: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive form of a bool mask: 0 where ``exclude`` is False, -inf where True (``dtype``).

    ``scores + exclusion_bias(exclude)`` equals ``scores.masked_fill(exclude, -inf)`` for finite
    scores.  Built as integers (True · the bit pattern of -inf, viewed as floats): one vectorised
    pass, about 3x faster on a CPU than a masked fill (``benchmarks/decode_speed.py``), applied by
    an (in-place) add, which vectorises where a masked fill does not."""
    if exclude.dtype != torch.bool:
        raise ValueError(f"exclude must be a bool mask, got dtype {exclude.dtype}")
    if dtype in _NEG_INF_BITS:
        int_dtype, bits = _NEG_INF_BITS[dtype]
        return exclude.to(int_dtype).mul_(bits).view(dtype)
    return torch.zeros(exclude.shape, dtype=dtype, device=exclude.device).masked_fill_(exclude, float("-inf"))


def masked_topk(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k distinct items per row; excluded items get -inf (never multiplied away)."""
    if exclude is not None:
        scores = scores + exclusion_bias(exclude, scores.dtype)
    return torch.topk(scores, k, dim=1).indices


def gumbel_topk(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct items sampled without replacement from softmax(scores) (Plackett-Luce, Gumbel top-k)."""
    u = torch.rand(scores.shape, device=scores.device, generator=generator).clamp_(1e-20, 1.0)
    return masked_topk(scores - torch.log(-torch.log(u)), k, exclude)


def shown_mask(shown: torch.Tensor, n_items: int) -> torch.Tensor:
    """Dense bool [B, n_items] from padded item lists [B, S] (-1 = padding): True for listed items."""
    dense = torch.zeros(shown.shape[0], n_items + 1, dtype=torch.bool, device=shown.device)
    dense.scatter_(1, torch.where(shown < 0, torch.full_like(shown, n_items), shown), True)
    return dense[:, :n_items]


PL_METHODS = ("sequential", "cumsum")


def plackett_luce_log_prob(scores: torch.Tensor, items: torch.Tensor, exclude: torch.Tensor | None = None,
                           per_slot: bool = False, method: str = "sequential", floor: float = 1e-6) -> torch.Tensor:
    """Exact log P(items in this order) under Plackett-Luce over softmax(scores) with earlier picks
    (and ``exclude``) masked: sum_j [s_{i_j} - logsumexp_{i not yet taken} s_i]
    (``per_slot=True``: the K terms, shape [B, K]).

    ``method="sequential"``: one masked logsumexp per slot (K passes over the catalogue).
    ``method="cumsum"``: one logsumexp per state, term_j = log p_{i_j} - log(1 - sum_{l<j} p_{i_l}) with
    p = softmax(scores) over non-excluded items (``items`` distinct); equal to the sequential form while
    the mass left after the earlier picks exceeds ``floor``, floored below it (near-deterministic slates).
    """
    if method not in PL_METHODS:
        raise ValueError(f"method must be one of {PL_METHODS}, got {method!r}")
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    if method == "cumsum":
        log_p = torch.gather(scores, 1, items) - torch.logsumexp(scores, dim=1, keepdim=True)
        p = log_p.double().exp()
        left = (1.0 - (torch.cumsum(p, dim=1) - p)).clamp_min(floor)
        terms = log_p - torch.log(left).to(log_p.dtype)
        return terms if per_slot else terms.sum(dim=1)
    b, k = items.shape
    terms = []
    taken = torch.zeros_like(scores, dtype=torch.bool)
    rows = torch.arange(b, device=scores.device)
    for j in range(k):  # K slate positions, vectorised over users and items
        masked = scores.masked_fill(taken, float("-inf"))
        terms.append(masked[rows, items[:, j]] - torch.logsumexp(masked, dim=1))
        taken = taken.clone()
        taken[rows, items[:, j]] = True
    terms = torch.stack(terms, dim=1)
    return terms if per_slot else terms.sum(dim=1)


class Policy(torch.nn.Module):
    """Base class: subclasses implement ``scores`` or override ``act``/``log_prob``."""

    #: which log-probability ``log_prob`` returns, shown in reports
    log_prob_kind: str = "exact item softmax (Plackett-Luce)"

    def scores(self, state: SlateState) -> torch.Tensor:  # [B, n_items]
        raise NotImplementedError

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        s = self.scores(state)
        return masked_topk(s, k, exclude) if mode == "greedy" else gumbel_topk(s, k, exclude, generator)

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Plackett-Luce log-probability of ``items`` [B, k]; with ``candidates`` [B, C] the softmax
        runs over the candidate list only (items must then be among the candidates)."""
        s = self.scores(state)
        if candidates is not None:
            s_c = torch.gather(s, 1, candidates)
            pos = (candidates[:, :, None] == items[:, None, :]).float().argmax(dim=1)
            return plackett_luce_log_prob(s_c, pos)
        return plackett_luce_log_prob(s, items, exclude)

    def snapshot(self) -> "Policy":
        frozen = copy.deepcopy(self)
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen.eval()
