"""The FCPO slate actor in two modes (Ge et al., WSDM 2021; matrix reconstruction from
the large-action-space seed §7.1.2, with P = softmax(W Vᵀ)).

``gaussian`` (matrix reconstruction): a Gaussian head emits K vectors
W ∈ R^{K×d}; item scores are W Vᵀ against the item embedding matrix V; slot j
takes the masked argmax of row j, earlier slots' picks and excluded items set to
−inf.  ``log_prob_action`` is the exact Gaussian density of the *sampled* W — the
continuous action the decoder turns into items — so CPO's likelihood ratio and
KL refer to what was actually sampled.

``softmax`` (item softmax): one query q(s) ∈ R^d scores all items, s_i = q·v_i / τ;
K distinct items are drawn by Plackett–Luce (Gumbel top-K) with masking, and
``log_prob`` is the exact log-probability of the ordered slate.

Both parametrise the query as the user embedding plus a learned residual
(our design choice), so the untrained greedy policy is the MF ranker and
training starts from a sensible recommender rather than from noise.  The item
representation V may carry extra feature columns beyond the MF embedding
(FCPO passes a standardised log-popularity column, whose query coordinate
starts at 0): one coordinate then moves every slate towards or away from
popular items, which is the direction a popularity constraint needs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fcpo.policies.base import Policy, SlateState, gumbel_topk, masked_topk, plackett_luce_log_prob
from fcpo.policies.networks import StateEncoder, mlp

MODES = ("gaussian", "softmax")


class SlateActor(Policy):
    """Actor over K-item slates; see the module docstring for both modes."""

    def __init__(self, item_embeddings: torch.Tensor, n_history: int, slate_size: int, mode: str = "gaussian",
                 hidden: int = 64, init_std: float = 0.1, temperature: float = 0.1, residual_user: bool = True,
                 user_dim: int | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"actor mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.log_prob_kind = ("Gaussian density of the sampled W (K x d)" if mode == "gaussian"
                              else "exact item softmax (Plackett-Luce over K slots)")
        self.register_buffer("items", item_embeddings.detach().float().clone())
        self.n_items, self.dim = self.items.shape
        self.user_dim = int(user_dim) if user_dim is not None else self.dim
        if self.user_dim > self.dim:
            raise ValueError(f"user_dim {self.user_dim} exceeds the item feature size {self.dim}")
        self.k = int(slate_size)
        self.residual_user = residual_user
        self.temperature = float(temperature)
        self.encoder = StateEncoder(n_history, self.user_dim, hidden)
        # gaussian: one state-dependent residual shared by the K rows plus a learned offset per row
        # (K distinct items still come from the masked argmax); 1/K of the noisy output dimensions
        self.head = mlp([hidden, hidden, self.dim], out_gain=0.01)
        if mode == "gaussian":
            self.row_offset = nn.Parameter(torch.zeros(self.k, self.dim))
        if mode == "gaussian":
            # state-independent log std, relative to the spread of the item embeddings
            scale = float(self.items[:, :self.user_dim].std()) * init_std
            self.log_std = nn.Parameter(torch.full((self.k * self.dim,), math.log(max(scale, 1e-6))))

    # ----- continuous action (gaussian mode)
    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean of W, flat [B, K*d] (gaussian) or the query [B, d] (softmax)."""
        out = self.head(self.encoder(obs))
        if self.residual_user:
            user = self.encoder.split(obs)[1]
            if self.dim > self.user_dim:  # extra feature columns start at 0
                user = torch.nn.functional.pad(user, (0, self.dim - self.user_dim))
            out = out + user
        if self.mode == "gaussian":
            out = (out.unsqueeze(1) + self.row_offset).reshape(obs.shape[0], self.k * self.dim)
        return out

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        if self.mode != "gaussian":
            raise RuntimeError("distribution() is defined for the gaussian mode only")
        return torch.distributions.Normal(self.mean_action(obs), self.log_std.exp())

    def log_prob_action(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log N(W | μ(s), σ²) summed over the K×d entries (gaussian mode)."""
        return self.distribution(obs).log_prob(action).sum(dim=1)

    def decode(self, action: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Items from W: slot j = argmax_i (W_j · v_i) over items not excluded nor picked by slots < j.

        Equivalent to K sequential masked argmaxes, computed from each row's top-K
        list (slot j can lose at most j items to earlier slots, so its answer is
        the first of its top K not taken): one top-k over the catalogue, then
        O(K²) work per user.
        """
        w = action.view(-1, self.k, self.dim)
        if exclude is not None:  # scores with excluded items at -inf, fused into one batched GEMM
            bias = torch.where(exclude, float("-inf"), 0.0).to(w.dtype).unsqueeze(1)
            scores = torch.baddbmm(bias, w, self.items.T.expand(w.shape[0], self.dim, self.n_items))
        else:
            scores = w @ self.items.T  # [B, K, n_items]
        cand = torch.topk(scores, self.k, dim=2).indices  # [B, K, K]: row j's best K items
        b = scores.shape[0]
        picks = torch.empty(b, self.k, dtype=torch.long, device=scores.device)
        for j in range(self.k):  # K slots, vectorised over users
            c = cand[:, j]
            free = ~(c.unsqueeze(2) == picks[:, :j].unsqueeze(1)).any(dim=2) if j else torch.ones_like(c, dtype=torch.bool)
            picks[:, j] = c.gather(1, free.float().argmax(dim=1, keepdim=True)).squeeze(1)
        return picks

    def decode_reference(self, action: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The definition of :meth:`decode`: K sequential masked argmaxes (kept for tests)."""
        w = action.view(-1, self.k, self.dim)
        scores = w @ self.items.T
        taken = torch.zeros(scores.shape[0], self.n_items, dtype=torch.bool, device=scores.device)
        if exclude is not None:
            taken |= exclude
        picks = []
        rows = torch.arange(scores.shape[0], device=scores.device)
        for j in range(self.k):
            pick = scores[:, j].masked_fill(taken, float("-inf")).argmax(dim=1)
            picks.append(pick)
            taken[rows, pick] = True
        return torch.stack(picks, dim=1)

    # ----- item scores (softmax mode and greedy ranking)
    def scores(self, state: SlateState) -> torch.Tensor:
        """Item scores [B, n_items]: q·v/τ (softmax) or the mean of the K rows of W Vᵀ (gaussian)."""
        mean = self.mean_action(state.obs)
        if self.mode == "softmax":
            return mean @ self.items.T / self.temperature
        return (mean.view(-1, self.k, self.dim) @ self.items.T).mean(dim=1)

    def sample(self, obs: torch.Tensor, exclude: torch.Tensor | None = None, greedy: bool = False,
               generator: torch.Generator | None = None):
        """(items [B, K], action, log-prob): action is W (gaussian) or the items (softmax)."""
        if self.mode == "gaussian":
            dist = self.distribution(obs)
            if greedy:
                w = dist.mean
            else:
                noise = torch.randn(dist.mean.shape, device=obs.device, generator=generator)
                w = dist.mean + dist.stddev * noise
            return self.decode(w, exclude), w, dist.log_prob(w).sum(dim=1)
        s = self.mean_action(obs) @ self.items.T / self.temperature
        items = masked_topk(s, self.k, exclude) if greedy else gumbel_topk(s, self.k, exclude, generator)
        return items, items, plackett_luce_log_prob(s, items, exclude)

    def action_log_prob(self, obs: torch.Tensor, action: torch.Tensor, exclude: torch.Tensor | None = None,
                        per_slot: bool = False):
        """Log-probability of a stored action (W or items) under the current parameters;
        ``per_slot=True`` gives the K factors [B, K] (rows of W, or Plackett-Luce positions)."""
        if self.mode == "gaussian":
            lp = self.distribution(obs).log_prob(action).view(-1, self.k, self.dim).sum(dim=2)
            return lp if per_slot else lp.sum(dim=1)
        s = self.mean_action(obs) @ self.items.T / self.temperature
        return plackett_luce_log_prob(s, action.long(), exclude, per_slot=per_slot)

    def kl_from(self, obs: torch.Tensor, old: dict, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Mean KL(π_old || π_θ) over states: closed form between diagonal Gaussians, or between
        the item softmaxes (the Plackett–Luce base distribution) over non-excluded items."""
        if self.mode == "gaussian":
            mu, log_std = self.mean_action(obs), self.log_std.expand(obs.shape[0], -1)
            var, old_var = (2 * log_std).exp(), (2 * old["log_std"]).exp()
            kl = log_std - old["log_std"] + (old_var + (old["mean"] - mu) ** 2) / (2 * var) - 0.5
            return kl.sum(dim=1).mean()
        s = self.mean_action(obs) @ self.items.T / self.temperature
        if exclude is not None:
            s = s.masked_fill(exclude, -1e9)
        logp, old_logp = torch.log_softmax(s, dim=1), old["log_softmax"]
        return (old_logp.exp() * (old_logp - logp)).sum(dim=1).mean()

    @torch.no_grad()
    def old_stats(self, obs: torch.Tensor, exclude: torch.Tensor | None = None) -> dict:
        """Detached statistics of the current policy for :meth:`kl_from`."""
        if self.mode == "gaussian":
            return {"mean": self.mean_action(obs), "log_std": self.log_std.expand(obs.shape[0], -1).clone()}
        s = self.mean_action(obs) @ self.items.T / self.temperature
        if exclude is not None:
            s = s.masked_fill(exclude, -1e9)
        return {"log_softmax": torch.log_softmax(s, dim=1)}

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        if k == self.k:
            return self.sample(state.obs, exclude, greedy=mode == "greedy", generator=generator)[0]
        return super().act(state, k, mode, exclude, generator)  # other list lengths: rank by scores()

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "gaussian":
            raise NotImplementedError(
                "the gaussian actor has a density over W, not over items; use log_prob_action(obs, W) or "
                "construct the actor with mode='softmax' for an exact item log-probability")
        return super().log_prob(state, items, candidates, exclude)
