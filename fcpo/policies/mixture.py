"""A-iALP_ap's mixture policy (ours): item distribution w·π₀(i|s) + (1 − w)·π_θ(i|s) of a frozen anchor
actor π₀ and an online actor π_θ (both :class:`fcpo.policies.actor.SlateActor` in softmax mode), with the
weight w = σ(ω) a learned parameter; slates are Plackett-Luce draws from the mixture."""
from __future__ import annotations

import math

import torch
from torch import nn

from fcpo.policies.actor import SlateActor
from fcpo.policies.base import Policy, SlateState, gumbel_topk, masked_topk, plackett_luce_log_prob


def item_logits(actor: SlateActor, obs: torch.Tensor) -> torch.Tensor:
    """The softmax actor's item scores q(s)·v_i / τ [B, n_items]."""
    return actor.mean_action(obs) @ actor.items.T / actor.temperature


class MixturePolicy(Policy):
    """π(i|s) = w·π₀(i|s) + (1 − w)·π_θ(i|s), π₀ frozen, w = σ(ω) learned (A-iALP_ap, ours).

    ``log_prob`` (inherited) is the exact Plackett-Luce log-probability under the mixture item distribution.
    """

    log_prob_kind = "exact Plackett-Luce over the mixture item softmax w*pi_0 + (1-w)*pi_theta"

    def __init__(self, online: SlateActor, anchor: SlateActor, w_init: float = 0.5):
        super().__init__()
        if not 0.0 < w_init < 1.0:
            raise ValueError(f"w_init must lie in (0, 1), got {w_init!r}")
        self.online = online
        self.anchor = anchor
        for p in self.anchor.parameters():
            p.requires_grad_(False)
        self.mix_logit = nn.Parameter(torch.tensor(math.log(w_init / (1.0 - w_init))))
        self.k, self.n_items = online.k, online.n_items

    @property
    def weight(self) -> float:
        return float(torch.sigmoid(self.mix_logit.detach()))

    def log_mixture(self, obs: torch.Tensor) -> torch.Tensor:
        """log π(i|s) [B, n_items] of the mixture (gradients reach ω and π_θ, not π₀)."""
        w = torch.sigmoid(self.mix_logit)
        with torch.no_grad():
            log_p0 = torch.log_softmax(item_logits(self.anchor, obs), dim=1)
        log_p1 = torch.log_softmax(item_logits(self.online, obs), dim=1)
        return torch.logaddexp(torch.log(w) + log_p0, torch.log1p(-w) + log_p1)

    def scores(self, state: SlateState) -> torch.Tensor:
        return self.log_mixture(state.obs)

    def sample(self, obs, exclude=None, greedy: bool = False, generator=None):
        s = self.log_mixture(obs)
        items = masked_topk(s, self.k, exclude) if greedy else gumbel_topk(s, self.k, exclude, generator)
        return items, items, plackett_luce_log_prob(s, items, exclude)

    def action_log_prob(self, obs, action, exclude=None, per_slot: bool = False):
        return plackett_luce_log_prob(self.log_mixture(obs), action.long(), exclude, per_slot=per_slot)


def policy_scores(policy, obs: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce scores [B, n_items] of a softmax :class:`SlateActor` or a :class:`MixturePolicy`."""
    return policy.log_mixture(obs) if isinstance(policy, MixturePolicy) else item_logits(policy, obs)
