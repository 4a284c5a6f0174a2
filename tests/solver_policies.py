"""Tiny policies and their closed-form KL, shared by the Fisher-vector-product tests (float64 throughout)."""
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _float64():
    """Import into a test module to run its tests in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Gaussian(nn.Module):
    """A tanh MLP mean with a state-independent log std: forward -> (mean, log_std) per state."""

    def __init__(self, obs=3, act=2, hidden=5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs, hidden), nn.Tanh(), nn.Linear(hidden, act))
        self.log_std = nn.Parameter(0.3 * torch.randn(act))

    def forward(self, s):
        return self.net(s), self.log_std.expand(s.shape[0], -1)


def gaussian_kl(mu0, ls0, mu1, ls1):
    """KL(N(mu0, e^{2 ls0}) || N(mu1, e^{2 ls1})), summed over action dims, mean over states."""
    v0, v1 = torch.exp(2 * ls0), torch.exp(2 * ls1)
    return (ls1 - ls0 + (v0 + (mu0 - mu1) ** 2) / (2 * v1) - 0.5).sum(-1).mean()
