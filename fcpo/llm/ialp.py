"""iALP steps 1-2 (arXiv 2501.13816, built "iALP-style"; every concrete choice is ours): query the
oracle with user states and learn a reward model from its preferences.

1. **States and oracle feedback.**  :func:`sample_states` draws windows of N consecutive training
   positives of training users; :func:`state_observations` turns (user, window) pairs into env
   observations; the oracle (:func:`catalogue_oracle`, :mod:`fcpo.llm.oracle`) picks its favourites among
   sampled candidates (:func:`fcpo.llm.oracle.query_preferences`).
2. **Reward model.**  :class:`PreferenceRewardModel` r_φ(s, i) = g(s)·h(f_i), a two-tower model over
   the user embedding, the history window and item features that include the oracle's own text view
   of the items, fitted by :func:`train_reward_model` with the pairwise Bradley-Terry loss
   −log σ(r_φ(s, i⁺) − r_φ(s, i⁻)) on :func:`preference_pairs` (i⁺ preferred, i⁻ sampled).

The agent that uses them (offline pre-training, online fine-tuning) is :mod:`fcpo.agents.ialp`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fcpo.llm.oracle import ItemCatalogue, make_oracle
from fcpo.policies.networks import mlp

NEGATIVES = ("candidates", "uniform", "mixed")


def sample_states(split, n_states: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rows [S], histories [S, N]): windows of N consecutive training positives (initial state +
    train targets, time order) of uniformly drawn training users (ours)."""
    n = split.n_initial
    rows = rng.integers(0, split.n_episode_users, n_states)
    targets = split.train_targets
    length = n + targets.lengths[rows]
    start = np.floor(rng.random(n_states) * (length - n + 1)).astype(np.int64)
    pos = start[:, None] + np.arange(n)[None, :]
    from_init = split.train_initial[rows[:, None], np.minimum(pos, n - 1)]
    flat = np.clip(targets.indptr[rows][:, None] + pos - n, 0, max(len(targets.values) - 1, 0))
    from_targets = targets.values[flat] if len(targets.values) else from_init
    return rows, np.where(pos < n, from_init, from_targets).astype(np.int64)


def state_observations(env_data, rows: np.ndarray, histories: np.ndarray) -> np.ndarray:
    """Env observations [S, N*d + d + 1] of (user row, history) pairs with t / T = 0."""
    s, n = histories.shape
    d = env_data.dim
    obs = np.zeros((s, n * d + d + 1), dtype=np.float32)
    obs[:, :n * d] = env_data.item_embeddings[histories].reshape(s, n * d)
    obs[:, n * d:n * d + d] = env_data.user_embeddings[env_data.split.user_ids[rows]]
    return obs


def catalogue_oracle(name: str, data, model: str | None = None):
    """The oracle ``name`` (:data:`fcpo.llm.oracle.ORACLES`) over the item catalogue of ``data`` (RatingsData)."""
    return make_oracle(name, ItemCatalogue.from_ratings(data), model)


class PreferenceRewardModel(nn.Module):
    """r_φ(s, i) = g(s) · h(f_i), a two-tower model (ours).

    f_i = z-scored [actor item features (MF + log-popularity) | genre multi-hot | the oracle's text
    features of the item (:meth:`fcpo.llm.oracle.PreferenceOracle.item_features`, zeros when the oracle
    has none)], so the model can express the text-based preferences it learns from;
    g(s) = MLP([mean of f over the history window | user embedding]).
    """

    def __init__(self, item_features: torch.Tensor, genres: torch.Tensor, n_history: int, user_dim: int,
                 text_dim: int = 32, hidden: int = 64, out_dim: int = 32):
        super().__init__()
        base = torch.cat([item_features.detach().float(), genres.detach().float(),
                          torch.zeros(item_features.shape[0], text_dim, device=item_features.device)], dim=1)
        self.register_buffer("raw", base.clone())
        self.register_buffer("features", _zscore(base))
        self.n_items, n_feat = base.shape
        self.text_dim, self.n_history, self.user_dim = int(text_dim), int(n_history), int(user_dim)
        self.state_head = mlp([n_feat + user_dim, hidden, out_dim])
        self.item_head = mlp([n_feat, hidden, out_dim])

    def set_text_features(self, text: np.ndarray | None) -> None:
        """Write the oracle's item text features (at most ``text_dim`` columns) into f."""
        if not self.text_dim:
            return
        block = torch.zeros(self.n_items, self.text_dim, device=self.raw.device)
        if text is not None:
            t = torch.as_tensor(np.asarray(text, dtype=np.float32)[:, :self.text_dim], device=self.raw.device)
            block[:, :t.shape[1]] = t
        self.raw[:, -self.text_dim:] = block
        self.features.copy_(_zscore(self.raw))

    def state_vectors(self, obs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        start = self.n_history * self.user_dim
        user = obs[:, start:start + self.user_dim]
        pooled = self.features[history].mean(dim=1)
        return self.state_head(torch.cat([pooled, user], dim=1))

    def forward(self, obs: torch.Tensor, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Rewards [B, m] of items [B, m] in states (obs [B, obs_dim], history [B, N])."""
        return torch.einsum("bd,bmd->bm", self.state_vectors(obs, history), self.item_head(self.features[items]))

    def all_scores(self, obs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Rewards [B, n_items] of the whole catalogue."""
        return self.state_vectors(obs, history) @ self.item_head(self.features).T


def _zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-6)


def preference_pairs(feedback, n_negatives: int, rng: np.random.Generator, mode: str = "mixed",
                     n_items: int | None = None):
    """(state index, preferred item, sampled item) triples: each preferred item against ``n_negatives``
    sampled items -- candidates the oracle ranked below its top m (``"candidates"``), uniform catalogue
    items outside the state's preferred set (``"uniform"``), or alternately one and the other
    (``"mixed"``; ours)."""
    if mode not in NEGATIVES:
        raise ValueError(f"mode must be one of {NEGATIVES}, got {mode!r}")
    s, m = feedback.preferred.shape
    c = feedback.candidates.shape[1]
    order = np.argsort(-feedback.scores, axis=1, kind="stable")
    rest = np.take_along_axis(feedback.candidates, order[:, m:], axis=1)  # [S, C - m]
    state = np.repeat(np.arange(s), m * n_negatives)
    pos = np.repeat(feedback.preferred.reshape(-1), n_negatives)
    neg = rest[state, rng.integers(0, c - m, len(state))]
    if mode != "candidates":
        n_items = int(n_items if n_items is not None else feedback.candidates.max() + 1)
        uniform = rng.integers(0, n_items, len(state))
        # redraw the (rare) draws that hit a preferred item of the state
        for _ in range(10):
            clash = (feedback.preferred[state] == uniform[:, None]).any(axis=1)
            if not clash.any():
                break
            uniform[clash] = rng.integers(0, n_items, int(clash.sum()))
        use = np.ones(len(state), dtype=bool) if mode == "uniform" else (np.arange(len(state)) % 2 == 1)
        neg = np.where(use, uniform, neg)
    return state, pos, neg


def train_reward_model(model: PreferenceRewardModel, obs: np.ndarray, feedback, rng: np.random.Generator,
                       generator: torch.Generator, device="cpu", *, negatives: int = 4, negative_sampling: str = "mixed",
                       epochs: int = 20, lr: float = 3e-3, batch_size: int = 1024) -> dict:
    """Bradley-Terry fit on 90 % of the queried states; accuracy on the other 10 % (ours).

    ``negatives`` sampled items per preferred item (:func:`preference_pairs` with ``negative_sampling``),
    ``epochs`` passes of Adam (step ``lr``, minibatches of ``batch_size`` pairs)."""
    n_states = obs.shape[0]
    perm = rng.permutation(n_states)
    n_val = max(1, n_states // 10) if n_states >= 10 else 0
    train_states = perm[n_val:]  # the first n_val states are held out
    state, pos, neg = preference_pairs(feedback, negatives, rng, negative_sampling, model.n_items)
    is_train = np.isin(state, train_states)
    obs_t = torch.as_tensor(obs, device=device)
    hist_t = torch.as_tensor(feedback.histories, device=device)
    tr = [torch.as_tensor(x[is_train], device=device) for x in (state, pos, neg)]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    losses = []
    model.train()
    n = len(tr[0])
    for _ in range(epochs):
        order = torch.randperm(n, device=device, generator=generator)
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            st = tr[0][idx]
            r = model(obs_t[st], hist_t[st], torch.stack([tr[1][idx], tr[2][idx]], dim=1))
            loss = nn.functional.softplus(-(r[:, 0] - r[:, 1])).mean()  # −log σ(r⁺ − r⁻)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(n, 1))
    model.eval()
    stats = {"reward_pairs": float(n), "reward_loss": losses[-1] if losses else float("nan")}
    if n_val:
        va = ~is_train
        with torch.no_grad():
            st = torch.as_tensor(state[va], device=device)
            r = model(obs_t[st], hist_t[st], torch.as_tensor(np.stack([pos[va], neg[va]], 1), device=device))
            rand = torch.as_tensor(rng.integers(0, model.n_items, int(va.sum())), device=device)
            r_rand = model(obs_t[st], hist_t[st], torch.stack([torch.as_tensor(pos[va], device=device), rand], 1))
        stats["reward_val_pair_acc"] = float((r[:, 0] > r[:, 1]).float().mean())
        stats["reward_val_vs_random"] = float((r_rand[:, 0] > r_rand[:, 1]).float().mean())
    return stats
