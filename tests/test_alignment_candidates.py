"""fcpo.evaluate.candidates: the S-DPO candidate protocol on a hand-checked case, and protocol selection."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fcpo.evaluate import CANDIDATE_PROTOCOLS, evaluate_candidates


class _FixedScores(torch.nn.Module):
    """Scores items by a fixed table (no state dependence): log-softmax over the candidate list."""

    def __init__(self, item_scores):
        super().__init__()
        self.s = torch.as_tensor(item_scores, dtype=torch.float32)

    def item_log_probs(self, state, items, candidates, normalize=True):
        assert torch.equal(items, candidates)  # the protocol scores every candidate of the list
        return torch.log_softmax(self.s[candidates], dim=1)


class _Samples(SimpleNamespace):
    def __len__(self):
        return len(self.positive)


def test_sdpo_candidates_hand_checked():
    # 3 users, 3 candidates each; item scores rank 4 > 3 > 2 > 1 > 0
    samples = _Samples(history=np.zeros((3, 2), dtype=np.int64), user=np.arange(3), row=np.arange(3),
                       positive=np.array([4, 1, 3]), candidates=np.array([[0, 4, 2], [1, 3, 0], [2, 1, 3]]))
    policy = _FixedScores([0.0, 1.0, 2.0, 3.0, 4.0])
    out = evaluate_candidates(policy, samples, split=None, item_titles=None, item_genres=None,
                              protocols=("sdpo-candidates",))
    # argmax per list: 4 (target 4: hit), 3 (target 1: miss), 3 (target 3: hit)
    assert out["hr1"] == pytest.approx(2 / 3) and out["valid_ratio"] == 1.0
    assert out["n_test_users"] == 3 and not any(k.startswith("ndcg") for k in out)  # the other protocol not run


def test_unknown_protocol_is_refused():
    assert CANDIDATE_PROTOCOLS == ("sdpo-candidates", "sprec-topk")
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_candidates(_FixedScores([0.0]), _Samples(positive=np.zeros(0)), None, None, None, protocols=("x",))
