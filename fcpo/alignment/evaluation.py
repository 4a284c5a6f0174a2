"""Evaluation of an aligned policy: the candidate protocols, trie-constrained answers, 95 % intervals.

* ``hr1`` / ``valid_ratio`` -- :func:`fcpo.evaluate.candidates.evaluate_candidates` ("sdpo-candidates"):
  an item policy's argmax over the 20 candidates; a language model's **free** greedy answer to the
  S-DPO prompt, parsed by S-DPO's rule (valid when exactly one candidate title occurs in it, a hit
  when it is valid and the target title occurs in it; :func:`fcpo.llm.prompts.parse_answers`).
  ``hr1_scored``: the LM's argmax of the candidate title log-probabilities.
* ``hr1_trie`` / ``valid_ratio_trie`` (language models, ``trie=True``): greedy decoding inside the
  trie of the row's candidate titles (:mod:`fcpo.llm.trie`), parsed by the same rule -- ValidRatio 1
  by construction, reported apart from the free answers.
* ``<metric>_ci95``: the Wilson score interval of a proportion measured on n users
  (Wilson 1927, J. Am. Stat. Assoc. 22: centre ``(p + z^2/2n) / (1 + z^2/n)``, half-width
  ``z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)``, z = 1.96); it stays inside [0, 1] and is not
  degenerate at p = 0 with a few hundred users.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

__all__ = ["Z95", "wilson_interval", "trie_candidate_metrics", "evaluate_alignment", "PROPORTIONS"]

#: the two-sided 95 % normal quantile
Z95 = 1.959963984540054
#: the per-user proportions that get a ``_ci95`` interval when present
PROPORTIONS = ("hr1", "valid_ratio", "hr1_scored", "hr1_trie")


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """[lo, hi] Wilson score interval of a proportion ``p`` observed on ``n`` trials (module docstring)."""
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 trials, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"wilson_interval needs a proportion in [0, 1], got {p}")
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    # at p = 0 (p = 1) the lower (upper) end is exactly 0 (1); rounding would leave 1e-17 off
    lo = 0.0 if p == 0.0 else max(0.0, centre - half)
    hi = 1.0 if p == 1.0 else min(1.0, centre + half)
    return lo, hi


def trie_candidate_metrics(policy, samples, item_titles: Sequence[str], batch_size: int = 64) -> dict:
    """HR@1 and ValidRatio of trie-constrained greedy answers over each sample's candidate list.

    ``policy``: a :class:`fcpo.llm.TextPolicy`; ``samples``: ``PreferenceData`` with candidates.
    The decoded titles are parsed with S-DPO's rule like free answers (a candidate title that is a
    substring of another makes an answer invalid even here)."""
    import torch

    from fcpo.llm.prompts import parse_answers
    from fcpo.policies.base import SlateState

    if samples.candidates is None:
        raise ValueError("trie-constrained evaluation needs samples with candidate lists")
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    texts: list[str] = []
    for s in range(0, len(samples), batch_size):
        idx = np.arange(s, min(s + batch_size, len(samples)))
        h = torch.as_tensor(samples.history[idx], dtype=torch.long)
        state = SlateState(torch.zeros(len(idx), 0), h, torch.as_tensor(samples.user[idx], dtype=torch.long))
        texts += policy.generate(state, torch.as_tensor(samples.candidates[idx]), constrained=True)
    policy.train(was_training)
    cand_titles = [[item_titles[i] for i in row] for row in samples.candidates]
    parsed = parse_answers(texts, cand_titles, [item_titles[i] for i in samples.positive])
    return {"hr1_trie": parsed.hr1, "valid_ratio_trie": parsed.valid_ratio,
            "trie_seconds": time.perf_counter() - t0, "trie_examples": texts[:3]}


def evaluate_alignment(policy, samples, split, item_titles, item_genres, ks=(5, 10),
                       protocols: Sequence[str] = ("sdpo-candidates", "sprec-topk"), trie: bool = True,
                       batch_size: int = 512) -> dict:
    """The candidate protocols (plus, for a text policy with ``trie``, the trie-constrained answers),
    with a 95 % Wilson interval for every per-user proportion (module docstring)."""
    from fcpo.evaluate.candidates import evaluate_candidates

    out = evaluate_candidates(policy, samples, split, item_titles, item_genres, ks=ks, protocols=tuple(protocols),
                              batch_size=batch_size)
    out["decoding"] = "free" if hasattr(policy, "generate") else "argmax"
    if trie and hasattr(policy, "constrained_choice") and "sdpo-candidates" in protocols:
        out.update(trie_candidate_metrics(policy, samples, item_titles, batch_size=getattr(policy, "gen_batch_size",
                                                                                            64)))
    n = len(samples)
    for key in PROPORTIONS:
        if out.get(key) is not None and n:
            out[f"{key}_ci95"] = list(wilson_interval(float(out[key]), n))
    return out
