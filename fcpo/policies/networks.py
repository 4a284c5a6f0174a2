"""Networks shared by actors and critics: the state encoder and an MLP."""
from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int], activation=nn.Tanh, out_gain: float = 1.0) -> nn.Sequential:
    """Fully connected net; orthogonal init, last layer scaled by ``out_gain``."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        nn.init.orthogonal_(lin.weight, gain=out_gain if i == len(sizes) - 2 else 2 ** 0.5)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class StateEncoder(nn.Module):
    """Attention pooling over the N history embeddings plus the user embedding and t / T.

    Reads the env observation ``[e(h_1) .. e(h_N) | e(u) | t/T]``: each history
    slot gets a learned position embedding, one learned query attends over the
    window (a single-head "small attention"), and an MLP mixes the pooled
    history, the user embedding and the step fraction into ``hidden`` features.
    """

    def __init__(self, n_history: int, dim: int, hidden: int = 64):
        super().__init__()
        self.n_history, self.dim, self.hidden = n_history, dim, hidden
        self.position = nn.Parameter(torch.zeros(n_history, dim))
        self.query = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, dim, bias=False)
        self.mix = mlp([2 * dim + 1, hidden, hidden])
        self.out_dim = hidden

    def split(self, obs: torch.Tensor):
        nd = self.n_history * self.dim
        hist = obs[:, :nd].reshape(-1, self.n_history, self.dim)
        return hist, obs[:, nd:nd + self.dim], obs[:, -1:]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        hist, user, frac = self.split(obs)
        h = hist + self.position
        attn = torch.softmax(self.key(h) @ self.query / self.dim ** 0.5, dim=1)  # [B, N]
        pooled = (attn.unsqueeze(-1) * hist).sum(dim=1)
        return torch.tanh(self.mix(torch.cat([pooled, user, frac], dim=1)))


class ValueCritic(nn.Module):
    """V(s) for reward or cost: an MLP on the flat observation (Ge et al. 2021, eq. 21-22)."""

    def __init__(self, obs_dim: int, hidden: int = 128):
        super().__init__()
        self.net = mlp([obs_dim, hidden, hidden, 1], out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)
