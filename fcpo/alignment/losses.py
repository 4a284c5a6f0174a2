"""Preference-alignment objectives as free functions of log-probabilities.

Every function takes log pi_theta(y | x) of the policy being trained and, where
needed, log pi_ref(y | x) of the frozen reference model, so any policy that
gives log-probabilities (item softmax, tree path, causal-LM title) plugs in.
Log-probabilities enter only through the implicit reward

    r(x, y) = log pi_theta(y | x) - log pi_ref(y | x),

so a normaliser shared by all items of one prompt (a full softmax, a softmax over
a candidate list) cancels in DPO and S-DPO.  All losses are means over the batch
(``reduction="none"`` gives one value per sample).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sft_nll", "dpo_loss", "sdpo_loss", "implicit_rewards"]


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and beta > 0 and beta == beta and beta != float("inf")):
        raise ValueError(f"beta must be a positive finite number, got {beta!r}")


def sft_nll(logp_pos: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Supervised fine-tuning: -log pi_theta(y | x) of the observed item (SPRec eq. 1; behaviour cloning).

    ``logp_pos``: [B] (or any shape) log-probabilities of the positives.
    """
    return _reduce(-logp_pos, reduction)


def implicit_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """beta * (log pi_theta - log pi_ref), the DPO implicit reward (Rafailov et al. 2023, eq. 5)."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must have the same shape")
    return beta * (logp - ref_logp)


def dpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_logp_w: torch.Tensor, ref_logp_l: torch.Tensor,
             beta: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """DPO (Rafailov et al., NeurIPS 2023, eq. 7):

        L = -log sigma( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] ).

    All four inputs have shape [B]; ``-logsigmoid`` keeps it finite for any margin.
    """
    _check_beta(beta)
    for name, t in (("logp_l", logp_l), ("ref_logp_w", ref_logp_w), ("ref_logp_l", ref_logp_l)):
        if t.shape != logp_w.shape:
            raise ValueError(f"dpo_loss: {name} has shape {tuple(t.shape)}, logp_w has {tuple(logp_w.shape)}")
    margin = beta * ((logp_w - ref_logp_w) - (logp_l - ref_logp_l))
    return _reduce(-F.logsigmoid(margin), reduction)


def sdpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_logp_w: torch.Tensor, ref_logp_l: torch.Tensor,
              beta: float = 1.0, mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Softmax-DPO (Chen et al., "On Softmax Direct Preference Optimization for Recommendation", NeurIPS 2024, the
    S-DPO objective of §3, derived from the Plackett-Luce model with one preferred item and M dispreferred ones):

        L = -log sigma( -log sum_{j=1..M} exp( beta * [r(y_j) - r(y_w)] ) ),   r = log pi - log pi_ref,

    computed with ``logsumexp`` so it stays finite (with finite gradients) for any beta (the authors'
    code sums ``exp`` directly, which overflows once beta * (r_j - r_w) exceeds ~88 in float32).
    ``logp_w``/``ref_logp_w``: [B]; ``logp_l``/``ref_logp_l``: [B, M] for M negatives;
    ``mask`` (bool [B, M], optional) marks the real negatives of rows with fewer than M
    (each row needs at least one).  With M = 1 it equals :func:`dpo_loss` exactly.
    """
    _check_beta(beta)
    if logp_l.dim() != 2 or logp_l.shape[0] != logp_w.shape[0] or logp_w.dim() != 1:
        raise ValueError(f"sdpo_loss: need logp_w [B] and logp_l [B, M], got {tuple(logp_w.shape)} and "
                         f"{tuple(logp_l.shape)}")
    if ref_logp_w.shape != logp_w.shape or ref_logp_l.shape != logp_l.shape:
        raise ValueError("sdpo_loss: the reference log-probabilities must have the policy's shapes")
    r_w = logp_w - ref_logp_w
    r_l = logp_l - ref_logp_l
    z = beta * (r_l - r_w[:, None])  # [B, M]
    if mask is not None:
        if mask.shape != z.shape:
            raise ValueError(f"sdpo_loss: mask has shape {tuple(mask.shape)}, expected {tuple(z.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("sdpo_loss: every row needs at least one negative (mask row all False)")
        z = z.masked_fill(~mask, float("-inf"))
    # -log sigma(-lse) = softplus(lse); logsigmoid is the stable form
    return _reduce(-F.logsigmoid(-torch.logsumexp(z, dim=1)), reduction)
