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

Per-slate constraint mode (``slate_cap=m``, FCPO eq. 7-9 enforced per slate): every
K-slate the actor emits — greedy or sampled, both modes — holds at most m items of
the popular group G0 (``is_popular``, updated by :meth:`SlateActor.set_groups`), see
:mod:`fcpo.policies.capped` for the capped process and its too-few-G1 rule.  The
log-probabilities are those of the capped process (softmax: capped Plackett-Luce;
gaussian: the density of W, since the capped decoder is deterministic in W).
``slate_cap=None`` is exactly the unconstrained actor.

Popular-group logit offset (``expected`` mode, :meth:`SlateActor.set_popular_offset`): every item
score of a G0 item is lowered by λ ≥ 0 (``popular_offset``, a persistent buffer; 0 = the plain actor, and
then every code path is the one without it).  For the item softmax this is the exponential tilt
π_λ(a|s) ∝ π(a|s)·exp(−λ·c(a)) slot by slot, the KL-closest (I-projection) policy whose expected G0
count is lowered; for the gaussian actor it is the same bias in the decoder's scores W Vᵀ − λ·1[G0]
(the decoder stays deterministic in W, so the density of W is still the exact log-probability).  The
agent sets λ by bisection so that the deployed policy's estimated cost meets the limit
(:meth:`fcpo.agents.actor_critic.SlateActorCritic.calibrate_offset`).

Deployment: ``deploy_mode`` ("greedy" unless an agent says otherwise: ``expected``-mode agents
deploy the sampled policy they trained) and ``alpha_prime`` (None unless set by the agent) are read
by :func:`fcpo.evaluate.evaluate` to evaluate the deployed policy against its own α'.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fcpo.policies.base import Policy, SlateState, exclusion_bias
from fcpo.policies.capped import (capped_greedy_slate, capped_plackett_luce_log_prob, capped_plackett_luce_sample,
                                  capped_row_decode_from_embeddings, capped_row_decode_reference, row_decode,
                                  row_scores, shared_row_decode)
from fcpo.policies.networks import StateEncoder, mlp

MODES = ("gaussian", "softmax")


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(value | mean, exp(log_std)²) -- the value ``torch.distributions.Normal(mean,
    log_std.exp()).log_prob(value)`` gives, bit for bit, without building the distribution: no argument
    validation (the Fisher product and the solver check finiteness) and no distribution object."""
    scale = log_std.exp().expand(mean.shape)  # expanded as Normal's broadcast_all: gradients bit for bit
    return -((value - mean) ** 2) / (2 * scale ** 2) - scale.log() - math.log(math.sqrt(2 * math.pi))


def gaussian_kl(old: dict, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Mean over states of KL(N(old mean, old σ²) || N(mean, σ²)), diagonal Gaussians in closed form
    (``old``: :meth:`SlateActor.old_stats`; ``mean``, ``log_std`` [B, K·d])."""
    var, old_var = (2 * log_std).exp(), (2 * old["log_std"]).exp()
    kl = log_std - old["log_std"] + (old_var + (old["mean"] - mean) ** 2) / (2 * var) - 0.5
    return kl.sum(dim=1).mean()


#: scores per user block of the greedy decode (8 MB of float32; 2^20-2^22 measured best on ml-1m, 1 thread)
GREEDY_BLOCK_SCORES = 1 << 21


class SlateActor(Policy):
    """Actor over K-item slates; see the module docstring for both modes."""

    #: how the policy is deployed (the evaluator's default mode); agents set it per constraint mode
    deploy_mode: str = "greedy"
    #: α' of the constraint the actor was trained under (None: unknown), for the evaluator's report
    alpha_prime: float | None = None

    def __init__(self, item_embeddings: torch.Tensor, n_history: int, slate_size: int, mode: str = "gaussian",
                 hidden: int = 64, init_std: float = 0.1, temperature: float = 0.1, residual_user: bool = True,
                 user_dim: int | None = None, slate_cap: int | None = None, is_popular: torch.Tensor | None = None):
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
        if slate_cap is not None and (isinstance(slate_cap, bool) or int(slate_cap) != slate_cap or slate_cap < 0):
            raise ValueError(f"slate_cap must be a non-negative integer (G0 items per slate) or None, "
                             f"got {slate_cap!r}")
        self.slate_cap = None if slate_cap is None else int(slate_cap)
        if self.slate_cap is not None:
            self.log_prob_kind += f", decoded under a per-slate cap of {self.slate_cap} G0 items"
        # the popular group G0: data, not a learned parameter, so not saved in state_dict (old checkpoints load)
        self.register_buffer("is_popular", torch.zeros(self.n_items, dtype=torch.bool), persistent=False)
        self.has_groups = False
        if is_popular is not None:
            self.set_groups(is_popular)
        # λ of the popular-group logit offset (module docstring); saved with the actor, 0 = no offset
        self.register_buffer("popular_offset", torch.zeros((), dtype=torch.float32))
        # the calibration's record, kept with λ so that training resumes identically: its deployed-share
        # estimate at λ, the sensitivity −dshare/dλ, the score spread and |the last change of λ| (−1 = not
        # measured yet; all are >= 0, and a NaN would read as divergence to the checkpoint's finiteness check)
        self.register_buffer("offset_calibration", torch.full((4,), -1.0, dtype=torch.float64))
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

    # ----- per-slate cap on G0 items
    def set_groups(self, is_popular) -> None:
        """Set the popular group G0 (bool [n_items]); dynamic groupings call this whenever G0 changes."""
        mask = torch.as_tensor(is_popular, device=self.is_popular.device)
        if mask.dtype != torch.bool or mask.shape != (self.n_items,):
            raise ValueError(f"is_popular must be a bool mask of shape [{self.n_items}], "
                             f"got dtype {mask.dtype} shape {list(mask.shape)}")
        self.is_popular.copy_(mask)
        self.has_groups = True

    def set_popular_offset(self, value: float) -> None:
        """Set λ ≥ 0, the amount every G0 item's score is lowered by (module docstring); needs the groups."""
        value = float(value)
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"popular_offset must be a finite number >= 0, got {value!r}")
        if value and self.cap_active(self.k):
            raise ValueError("SlateActor.set_popular_offset: the offset is for the uncapped (expected-mode) actor; "
                             f"this one caps every slate at {self.slate_cap} G0 items")
        if value and not self.has_groups:
            raise RuntimeError("SlateActor.set_popular_offset: the offset acts on the popular group G0; call "
                               "set_groups() first")
        self.popular_offset.fill_(value)

    @property
    def offset_active(self) -> bool:
        return bool(self.popular_offset != 0)

    @property
    def group_dependent(self) -> bool:
        """Whether the actor's slates depend on the G0 in force (a binding cap or a non-zero offset)."""
        return self.cap_active(self.k) or self.offset_active

    def _offset_scores(self, scores: torch.Tensor, is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """``scores`` [..., n_items] with λ subtracted from G0 items (unchanged, same tensor, when λ = 0)."""
        if not self.offset_active:
            return scores
        groups = self._groups(is_popular)
        if groups.dim() == 2 and scores.dim() == 3:
            groups = groups.unsqueeze(1)
        return scores - self.popular_offset * groups.to(scores.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the offset existed load as λ = 0, never calibrated
        state_dict.setdefault(prefix + "popular_offset", torch.zeros((), dtype=torch.float32))
        state_dict.setdefault(prefix + "offset_calibration", torch.full((4,), -1.0, dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def cap_for(self, k: int) -> int | None:
        """The cap on a k-item list: ``slate_cap`` for the K-slate; for another list length the
        same share, floor(slate_cap · k / K) (None when the actor is unconstrained)."""
        if self.slate_cap is None:
            return None
        return self.slate_cap if k == self.k else (self.slate_cap * k) // self.k

    def cap_active(self, k: int) -> bool:
        """True when the cap can bind on a k-item list."""
        cap = self.cap_for(k)
        return cap is not None and cap < k

    def _groups(self, is_popular: torch.Tensor | None) -> torch.Tensor:
        """The G0 mask for one call: the override ([n] or [B, n]) or the actor's own groups."""
        if is_popular is not None:
            return is_popular
        if not self.has_groups:
            raise RuntimeError(f"SlateActor has slate_cap={self.slate_cap} but no popular group: pass "
                               "is_popular= to the constructor or call set_groups() before decoding")
        return self.is_popular

    # ----- continuous action (gaussian mode)
    def query(self, obs: torch.Tensor) -> torch.Tensor:
        """The state's query u [B, d]: the softmax mode's query, and the part the gaussian mode's K rows share."""
        out = self.head(self.encoder(obs))
        if self.residual_user:
            user = self.encoder.split(obs)[1]
            if self.dim > self.user_dim:  # extra feature columns start at 0
                user = torch.nn.functional.pad(user, (0, self.dim - self.user_dim))
            out = out + user
        return out

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean of W, flat [B, K*d] (gaussian: row j is u + o_j) or the query [B, d] (softmax)."""
        out = self.query(obs)
        if self.mode == "gaussian":
            out = (out.unsqueeze(1) + self.row_offset).reshape(obs.shape[0], self.k * self.dim)
        return out

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        if self.mode != "gaussian":
            raise RuntimeError("distribution() is defined for the gaussian mode only")
        return torch.distributions.Normal(self.mean_action(obs), self.log_std.exp())

    def log_prob_action(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log N(W | μ(s), σ²) summed over the K×d entries (gaussian mode)."""
        return gaussian_log_prob(self.mean_action(obs), self.log_std, action).sum(dim=1)

    def decode(self, action: torch.Tensor, exclude: torch.Tensor | None = None,
               is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """Items from W: slot j = argmax_i (W_j · v_i) over items not excluded nor picked by slots < j
        (and, with a slate cap, not in G0 once the cap is reached: :func:`capped_row_decode`).

        K sequential masked argmaxes (ties: the lower item id), slot by slot on the
        [B, K, n] scores with the columns earlier slots took masked in the later
        rows: one max pass over the scores in all.  The decoder is deterministic in W, capped or not, so
        the Gaussian density of W is the exact log-probability of the action taken.
        ``is_popular`` ([n] or [B, n]) overrides the actor's groups for this call.
        """
        w = action.view(-1, self.k, self.dim)
        if self.cap_active(self.k):
            return capped_row_decode_from_embeddings(w, self.items, self.slate_cap, self._groups(is_popular), exclude)
        # [B, K, n_items]: one GEMM, excluded items at -inf, then the G0 offset (if any)
        return row_decode(self._offset_scores(row_scores(w, self.items, exclude), is_popular), overwrite=True)

    def decode_mean(self, query: torch.Tensor, exclude: torch.Tensor | None = None,
                    is_popular: torch.Tensor | None = None, stats: dict | None = None) -> torch.Tensor:
        """:meth:`decode` of the mean W (rows u + o_j) from the query u [B, d], without the [B, K, n] scores.

        Row j's scores are s + t_j with s = u Vᵀ (excluded items at -inf, the G0 offset λ subtracted)
        and t_j = o_j Vᵀ, so each row's candidate list comes from one selection over the shared s plus
        the K corrections (:func:`fcpo.policies.shared_topk.shared_plus_row_topk`, exact), then the same
        slot-by-slot merge as :meth:`decode`.  Users are processed in blocks of about
        ``GREEDY_BLOCK_SCORES`` scores, so each block's s stays in the CPU cache between its product,
        mask and selection.  The picks are those of :meth:`decode` on the scores s + t_j; against W Vᵀ
        computed in one product they can differ only where two scores of a row agree to float rounding
        (u·v + o_j·v and (u + o_j)·v round differently).  ``stats``, if given, accumulates the rows
        decoded, retried and recomputed in full (:func:`~fcpo.policies.shared_topk.shared_plus_row_topk`)."""
        if self.mode != "gaussian":
            raise RuntimeError("decode_mean is defined for the gaussian mode only")
        cap = self.slate_cap if self.cap_active(self.k) else None
        groups = self._groups(is_popular) if cap is not None or self.offset_active else None
        t = self.row_offset.detach() @ self.items.T  # [K, n]: the row corrections
        rows = max(1, GREEDY_BLOCK_SCORES // self.n_items)
        picks = []
        for lo in range(0, query.shape[0], rows):
            s = query[lo:lo + rows] @ self.items.T
            if exclude is not None:
                s.add_(exclusion_bias(exclude[lo:lo + rows], s.dtype))
            block_groups = groups if groups is None or groups.dim() == 1 else groups[lo:lo + rows]
            if self.offset_active:
                s = self._offset_scores(s, block_groups)
            picks.append(shared_row_decode(s, t, self.k, cap, block_groups if cap is not None else None, stats))
        return torch.cat(picks) if len(picks) != 1 else picks[0]

    def decode_reference(self, action: torch.Tensor, exclude: torch.Tensor | None = None,
                         is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """The definition of :meth:`decode`: K sequential masked argmaxes (kept for tests)."""
        w = action.view(-1, self.k, self.dim)
        cap = self.slate_cap if self.cap_active(self.k) else None
        groups = self._groups(is_popular) if cap is not None else None
        return capped_row_decode_reference(self._offset_scores(w @ self.items.T, is_popular), cap, groups, exclude)

    # ----- item scores (softmax mode and greedy ranking)
    def scores(self, state: SlateState) -> torch.Tensor:
        """Item scores [B, n_items]: q·v/τ (softmax) or the mean of the K rows of W Vᵀ (gaussian).

        Gaussian: (1/K) Σ_j W_j Vᵀ = ((1/K) Σ_j W_j) Vᵀ, so the K rows are averaged first and the
        catalogue is scored by one [B, d] × [d, n] product instead of K of them (K× fewer flops)."""
        mean = self.mean_action(state.obs)
        if self.mode == "softmax":
            return self._softmax_scores(mean)
        return self._offset_scores(mean.view(-1, self.k, self.dim).mean(dim=1) @ self.items.T)

    def _greedy_ranking(self, state: SlateState, k: int, exclude: torch.Tensor | None) -> torch.Tensor:
        """Top-k by :meth:`scores` with excluded items at -inf, in user blocks of about
        ``GREEDY_BLOCK_SCORES`` scores: each block's product, exclusion (an in-place add of
        :func:`~fcpo.policies.base.exclusion_bias`) and top-k run while its scores are in the CPU cache.
        The same values as ``scores()`` row by row."""
        mean = self.mean_action(state.obs)
        query = mean if self.mode == "softmax" else mean.view(-1, self.k, self.dim).mean(dim=1)
        rows = max(1, GREEDY_BLOCK_SCORES // self.n_items)
        picks = []
        for lo in range(0, query.shape[0], rows):
            if self.mode == "softmax":
                s = self._softmax_scores(query[lo:lo + rows])
            else:
                s = self._offset_scores(query[lo:lo + rows] @ self.items.T)
            if exclude is not None:
                s.add_(exclusion_bias(exclude[lo:lo + rows], s.dtype))
            # k = 1 (the authors' one-item protocol): a max, under half of top-k's time
            picks.append(s.max(dim=1, keepdim=True).indices if k == 1 else torch.topk(s, k, dim=1).indices)
        return torch.cat(picks) if len(picks) != 1 else picks[0]

    def _softmax_scores(self, query: torch.Tensor, is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax-mode item scores q·v/τ − λ·1[G0] [B, n_items]."""
        return self._offset_scores(query @ self.items.T / self.temperature, is_popular)

    def sample(self, obs: torch.Tensor, exclude: torch.Tensor | None = None, greedy: bool = False,
               generator: torch.Generator | None = None, is_popular: torch.Tensor | None = None):
        """(items [B, K], action, log-prob): action is W (gaussian) or the items (softmax).

        With a slate cap the items obey it and the log-prob is that of the capped process
        (gaussian: density of W; softmax: capped Plackett-Luce); ``is_popular`` overrides
        the actor's groups for this call."""
        if self.mode == "gaussian":
            if greedy:  # W = μ: rows u + o_j, decoded from the shared scores uVᵀ plus the row corrections o_j Vᵀ
                u = self.query(obs)
                mean = (u.unsqueeze(1) + self.row_offset).reshape(obs.shape[0], self.k * self.dim)
                items = self.decode_mean(u, exclude, is_popular)
                return items, mean, gaussian_log_prob(mean, self.log_std, mean).sum(dim=1)
            mean = self.mean_action(obs)
            noise = torch.randn(mean.shape, device=obs.device, generator=generator)
            w = mean + self.log_std.exp() * noise
            return self.decode(w, exclude, is_popular), w, gaussian_log_prob(mean, self.log_std, w).sum(dim=1)
        s = self._softmax_scores(self.mean_action(obs), is_popular)
        cap = self.cap_for(self.k)
        groups = self._groups(is_popular) if self.cap_active(self.k) else None
        if greedy:
            items = capped_greedy_slate(s, self.k, cap, groups, exclude)
        else:
            items = capped_plackett_luce_sample(s, self.k, cap, groups, exclude, generator)
        return items, items, capped_plackett_luce_log_prob(s, items, cap, groups, exclude)

    def action_log_prob(self, obs: torch.Tensor, action: torch.Tensor, exclude: torch.Tensor | None = None,
                        per_slot: bool = False, is_popular: torch.Tensor | None = None):
        """Log-probability of a stored action (W or items) under the current parameters;
        ``per_slot=True`` gives the K factors [B, K] (rows of W, or Plackett-Luce positions).
        With a slate cap (softmax mode) it is the capped Plackett-Luce log-prob, so pass the
        ``exclude`` and groups (``is_popular`` [n] or [B, n], default the actor's) the action was
        sampled under for exact likelihood ratios."""
        if self.mode == "gaussian":
            lp = gaussian_log_prob(self.mean_action(obs), self.log_std, action).view(-1, self.k, self.dim).sum(dim=2)
            return lp if per_slot else lp.sum(dim=1)
        s = self._softmax_scores(self.mean_action(obs), is_popular)
        cap = self.cap_for(self.k)
        groups = self._groups(is_popular) if self.cap_active(self.k) else None
        return capped_plackett_luce_log_prob(s, action.long(), cap, groups, exclude, per_slot=per_slot)

    def kl_from(self, obs: torch.Tensor, old: dict, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Mean KL(π_old || π_θ) over states: closed form between diagonal Gaussians, or between
        the item softmaxes (the Plackett–Luce base distribution) over non-excluded items.

        With a slate cap this stays the KL of the unconstrained base distribution (W, or the
        item softmax): it is used only as the trust-region metric, not as the KL between the
        capped slate distributions."""
        if self.mode == "gaussian":
            return gaussian_kl(old, self.mean_action(obs), self.log_std.expand(obs.shape[0], -1))
        s = self._softmax_scores(self.mean_action(obs))
        if exclude is not None:
            s = s.masked_fill(exclude, -1e9)
        logp, old_logp = torch.log_softmax(s, dim=1), old["log_softmax"]
        return (old_logp.exp() * (old_logp - logp)).sum(dim=1).mean()

    @torch.no_grad()
    def old_stats(self, obs: torch.Tensor, exclude: torch.Tensor | None = None) -> dict:
        """Detached statistics of the current policy for :meth:`kl_from`."""
        if self.mode == "gaussian":
            return {"mean": self.mean_action(obs), "log_std": self.log_std.expand(obs.shape[0], -1).clone()}
        s = self._softmax_scores(self.mean_action(obs))
        if exclude is not None:
            s = s.masked_fill(exclude, -1e9)
        return {"log_softmax": torch.log_softmax(s, dim=1)}

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """K-slates come from :meth:`sample`; other list lengths rank by :meth:`scores` (greedy top-k
        or Plackett-Luce), under the cap :meth:`cap_for` gives that length."""
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        if k == self.k:
            return self.sample(state.obs, exclude, greedy=mode == "greedy", generator=generator)[0]
        if not self.cap_active(k):  # other list lengths: rank by scores()
            if mode == "greedy":
                return self._greedy_ranking(state, k, exclude)
            return super().act(state, k, mode, exclude, generator)
        s, cap, groups = self.scores(state), self.cap_for(k), self._groups(None)
        if mode == "greedy":
            return capped_greedy_slate(s, k, cap, groups, exclude)
        return capped_plackett_luce_sample(s, k, cap, groups, exclude, generator)

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "gaussian":
            raise NotImplementedError(
                "the gaussian actor has a density over W, not over items; use log_prob_action(obs, W) or "
                "construct the actor with mode='softmax' for an exact item log-probability")
        if not self.cap_active(items.shape[1]):
            return super().log_prob(state, items, candidates, exclude)
        s, cap, groups = self.scores(state), self.cap_for(items.shape[1]), self._groups(None)
        if candidates is not None:  # the capped process over the candidate list
            pos = (candidates[:, :, None] == items[:, None, :]).float().argmax(dim=1)
            return capped_plackett_luce_log_prob(torch.gather(s, 1, candidates), pos, cap, groups[candidates])
        return capped_plackett_luce_log_prob(s, items, cap, groups, exclude)
