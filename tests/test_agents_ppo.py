"""The shared PPO-clip epochs and critic fitting (fcpo.agents.ppo): step counts, early stop, the
objective rising, and which minibatches each critic sees."""
from __future__ import annotations

import math

import pytest
import torch

from fcpo.agents.ppo import KL_STOP_FACTOR, fit_critics, ppo_clip_epochs


def _policy(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(torch.zeros(n))
    adv = torch.randn(n, generator=g)
    return logits, adv


def test_ppo_clip_epochs_steps_and_objective():
    logits, adv = _policy()
    old = torch.zeros(40)
    opt = torch.optim.SGD([logits], lr=0.05)
    stats = ppo_clip_epochs(lambda idx: logits[idx], old, adv, opt, epochs=3, minibatch_size=16, clip=0.2,
                            generator=torch.Generator().manual_seed(0), params=[logits], max_grad_norm=10.0)
    assert stats["policy_steps"] == 3 * math.ceil(40 / 16) and stats["policy_epochs"] == 3
    assert stats["early_stop"] == 0.0 and 0.0 <= stats["clip_fraction"] <= 1.0
    # the surrogate rose: log-probs moved in the direction of the advantages
    assert float((logits.detach() * adv).sum()) > 0
    assert bool((logits.detach() - old).abs().max() > 0)


def test_ppo_clip_epochs_early_stop_and_bonus():
    logits, adv = _policy()
    old = torch.full((40,), -1.0)  # ratio e^1 everywhere: approx KL = e - 2 > 1.5 * target_kl
    opt = torch.optim.SGD([logits], lr=0.05)
    stats = ppo_clip_epochs(lambda idx: logits[idx], old, adv, opt, epochs=2, minibatch_size=8, clip=0.2,
                            target_kl=(math.e - 2) / KL_STOP_FACTOR * 0.99)
    assert (stats["policy_steps"], stats["policy_epochs"], stats["early_stop"]) == (0.0, 0.0, 1.0)
    assert math.isnan(stats["policy_loss"]) and float(logits.detach().abs().sum()) == 0.0
    stats = ppo_clip_epochs(lambda idx: (logits[idx], torch.tensor(0.5)), torch.zeros(40), adv, opt, epochs=1,
                            minibatch_size=40, clip=0.2)
    assert stats["bonus"] == pytest.approx(0.5) and stats["policy_loss"] == pytest.approx(-0.5 - float(adv.mean()))


class Recorder(torch.nn.Module):
    """A linear critic that records the rows it is trained on."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.seen = []

    def forward(self, x):
        self.seen.append(x[:, 0].tolist())
        return self.lin(x).squeeze(-1)


@pytest.mark.parametrize("shared", [True, False])
def test_fit_critics_minibatches(shared):
    obs = torch.arange(10, dtype=torch.float32)[:, None]
    a, b = Recorder(), Recorder()
    opts = [torch.optim.SGD(c.parameters(), lr=1e-3) for c in (a, b)]
    losses = fit_critics([(a, opts[0], 2 * obs[:, 0]), (b, opts[1], -obs[:, 0])], obs, epochs=2, minibatch_size=4,
                         generator=torch.Generator().manual_seed(0), shared_minibatches=shared)
    assert len(losses) == 2 and all(l > 0 for l in losses)
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(10, generator=g).tolist() for _ in range(4)]
    chunks = lambda p: [[float(i) for i in p[s:s + 4]] for s in range(0, 10, 4)]  # noqa: E731
    if shared:  # one shuffle per epoch, both critics on it
        expected_a = expected_b = chunks(perms[0]) + chunks(perms[1])
    else:  # critic a's two epochs, then critic b's two
        expected_a, expected_b = chunks(perms[0]) + chunks(perms[1]), chunks(perms[2]) + chunks(perms[3])
    check = [[float(i) for i in range(10)]]  # after fitting, one pass over the first states checks for divergence
    assert a.seen == expected_a + check and b.seen == expected_b + check
