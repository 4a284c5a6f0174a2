"""The two evaluation protocols of the preference-alignment papers, for next-item samples.

``"sdpo-candidates"`` (S-DPO, Chen et al. 2024)
    One sample per test user with a list of candidates (the target and random
    never-rated items).  HR@1 (the chosen candidate is the target) and
    ValidRatio (the answer is one of the candidates).  A text policy (one with
    ``generate``) is judged on its generated text by the metric's substring
    rule; ``hr1_scored`` is its candidate-normalised argmax.
``"sprec-topk"`` (SPRec, Gao et al. 2025)
    A top-K list over the whole catalogue, the user's train items excluded (a
    text policy: its greedy answer to the open prompt grounded to the K
    nearest titles; an answer matching no title recommends nothing, -1).
    NDCG@K and HR@K against all test targets; DivRatio@K, ORRatio@K and MGU@K
    (genre distribution of the lists vs the histories, population level).

Samples are duck-typed (``fcpo.alignment.PreferenceData``): ``history`` [N, n],
``user`` [N], ``row`` [N] (rows of the split), ``positive`` [N] and
``candidates`` [N, C].
"""
from __future__ import annotations

import time

import numpy as np
import torch

from fcpo.metrics import (
    div_ratio,
    hit_rate_at_k,
    hr_at_1,
    hr_at_1_text,
    mgu_at_k,
    ndcg_at_k,
    or_ratio,
    valid_ratio,
    valid_ratio_text,
)
from fcpo.policies.base import SlateState, masked_topk

CANDIDATE_PROTOCOLS = ("sdpo-candidates", "sprec-topk")


def _state(samples, idx: np.ndarray) -> SlateState:
    h = torch.as_tensor(samples.history[idx], dtype=torch.long)
    return SlateState(obs=torch.zeros(len(h), 0), history=h, user=torch.as_tensor(samples.user[idx], dtype=torch.long))


def _candidate_log_probs(policy, state: SlateState, cands: torch.Tensor) -> torch.Tensor:
    if hasattr(policy, "item_log_probs"):
        return policy.item_log_probs(state, cands, cands, normalize=True)
    return torch.stack([policy.log_prob(state, cands[:, j:j + 1], candidates=cands) for j in range(cands.shape[1])], 1)


@torch.no_grad()
def evaluate_candidates(policy, samples, split, item_titles, item_genres, ks=(5, 10),
                        protocols=CANDIDATE_PROTOCOLS, batch_size: int = 512) -> dict:
    """Both protocols (or the ones named in ``protocols``) on ``samples`` of ``split``'s test users.

    Returns flat metrics: ``hr1``, ``valid_ratio`` (and for text policies ``hr1_scored``,
    ``examples``) for "sdpo-candidates"; ``ndcg@k``, ``hr@k``, ``div_ratio@k``,
    ``or_ratio@k``, ``mgu@k`` for every k of ``ks`` for "sprec-topk"; ``n_test_users``, ``eval_seconds``.
    """
    unknown = set(protocols) - set(CANDIDATE_PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; choose from {CANDIDATE_PROTOCOLS}")
    cand_proto, topk_proto = "sdpo-candidates" in protocols, "sprec-topk" in protocols
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    n, kmax = len(samples), max(ks)
    is_text = hasattr(policy, "generate")
    cands = torch.as_tensor(samples.candidates)
    exclude_all = split.train_items().to_mask(split.n_items, samples.row) if topk_proto else None
    pred = np.empty(n, dtype=np.int64)
    top = np.empty((n, kmax), dtype=np.int64)
    texts: list[str] = []
    open_texts: list[str] = []
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(s + batch_size, n))
        state = _state(samples, idx)
        if cand_proto:
            c = cands[idx]
            lp = _candidate_log_probs(policy, state, c)
            pred[idx] = c.gather(1, lp.argmax(1, keepdim=True))[:, 0].numpy()
            if is_text:
                texts += policy.generate(state, c)
        if topk_proto:
            exclude = torch.as_tensor(exclude_all[idx])
            if is_text:
                gen = policy.generate(state, None)
                open_texts += gen
                top[idx] = policy.index.ground(gen, kmax, exclude.numpy(), missing=True)
            else:
                top[idx] = masked_topk(policy.scores(state), kmax, exclude).numpy()
    out: dict = {}
    if cand_proto:
        if is_text:
            cand_titles = [[item_titles[i] for i in row] for row in samples.candidates]
            tgt_titles = [item_titles[i] for i in samples.positive]
            out["hr1"] = hr_at_1_text(texts, cand_titles, tgt_titles)
            out["valid_ratio"] = valid_ratio_text(texts, cand_titles)
            out["hr1_scored"] = hr_at_1(pred, samples.positive, samples.candidates)
            out["examples"] = [{"prompt_history": [item_titles[i] for i in samples.history[j]], "answer": texts[j],
                                "open_answer": open_texts[j] if open_texts else None, "target": tgt_titles[j]}
                               for j in range(min(3, n))]
        else:
            out["hr1"] = hr_at_1(pred, samples.positive, samples.candidates)
            out["valid_ratio"] = valid_ratio(pred, samples.candidates)
    if topk_proto:
        relevant = split.test_targets.to_mask(split.n_items, samples.row)
        for k in ks:
            out[f"ndcg@{k}"] = ndcg_at_k(top, relevant, k)
            out[f"hr@{k}"] = hit_rate_at_k(top, relevant, k)
            out[f"div_ratio@{k}"] = div_ratio(top, k)
            out[f"or_ratio@{k}"] = or_ratio(top, k)
            out[f"mgu@{k}"] = mgu_at_k(top, samples.history, item_genres, k)
    out["n_test_users"] = n
    out["eval_seconds"] = time.perf_counter() - t0
    policy.train(was_training)
    return out
