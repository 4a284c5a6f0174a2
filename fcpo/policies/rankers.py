"""Non-RL rankers in the policy contract: popularity, random, MF top-K and the α'-fair re-ranker.

The α'-fair re-ranker (a static baseline a constrained RL method has to beat)
ranks by MF scores and caps the G0 share of every slate at α': a slate of K
holds at most ⌊α'K⌋ popular items, filled greedily in score order.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fcpo.policies.base import Policy, SlateState, check_alpha_prime


class PopularityRanker(Policy):
    """Items by training-period interaction count (ties: lower id first)."""

    log_prob_kind = "Plackett-Luce over log(1 + count) scores"

    def __init__(self, train_counts: np.ndarray):
        super().__init__()
        counts = torch.as_tensor(np.asarray(train_counts, dtype=np.float64))
        tie = torch.arange(len(counts), dtype=torch.float64) * 1e-9
        self.register_buffer("base", (torch.log1p(counts) - tie).float())

    def scores(self, state: SlateState) -> torch.Tensor:
        return self.base.expand(len(state), -1)


class RandomRanker(Policy):
    """Uniformly random items (fresh draws on every call; seeded)."""

    log_prob_kind = "uniform over non-excluded items"

    def __init__(self, n_items: int, seed: int = 0):
        super().__init__()
        self.n_items = n_items
        self.generator = torch.Generator().manual_seed(seed)

    def scores(self, state: SlateState) -> torch.Tensor:
        return torch.rand(len(state), self.n_items, generator=self.generator).to(state.obs.device)


class MFRanker(Policy):
    """MF top-K: scores u·v with the env's embeddings (trained on the train split only)."""

    log_prob_kind = "Plackett-Luce over MF scores"

    def __init__(self, user_embeddings: np.ndarray, item_embeddings: np.ndarray):
        super().__init__()
        self.register_buffer("users", torch.as_tensor(user_embeddings, dtype=torch.float32))
        self.register_buffer("items", torch.as_tensor(item_embeddings, dtype=torch.float32))

    def scores(self, state: SlateState) -> torch.Tensor:
        return self.users[state.user] @ self.items.T


def capped_topk(scores: torch.Tensor, k: int, is_popular: torch.Tensor, max_popular: int,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k by score with at most ``max_popular`` popular items (greedy in score order, vectorised)."""
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    order = torch.argsort(scores, dim=1, descending=True)
    pop_sorted = is_popular[order]
    pop_rank = torch.cumsum(pop_sorted.long(), dim=1) - 1  # rank among popular items in score order
    allowed = ~pop_sorted | (pop_rank < max_popular)
    sorted_scores = torch.gather(scores, 1, order).masked_fill(~allowed, float("-inf"))
    take = torch.topk(sorted_scores, k, dim=1).indices
    return torch.gather(order, 1, take)


class FairReRanker(MFRanker):
    """MF scores with the G0 share of each slate capped at α' (at most ⌊α'K⌋ popular items)."""

    log_prob_kind = "none (deterministic re-ranker)"

    def __init__(self, user_embeddings, item_embeddings, is_popular: np.ndarray, alpha_prime: float):
        super().__init__(user_embeddings, item_embeddings)
        self.alpha_prime = check_alpha_prime(alpha_prime, "FairReRanker")
        self.register_buffer("is_popular", torch.as_tensor(np.asarray(is_popular, dtype=bool)))

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude=None, generator=None) -> torch.Tensor:
        cap = math.floor(self.alpha_prime * k + 1e-9)
        return capped_topk(self.scores(state), k, self.is_popular, cap, exclude)


RANKERS = ("popularity", "random", "mf", "fair-mf")


def make_ranker(name: str, env_data, alpha_prime: float = 1.0, is_popular: np.ndarray | None = None,
                seed: int = 0) -> Policy:
    """A ranker over ``env_data`` (an :class:`fcpo.envs.EnvData`)."""
    if name == "popularity":
        return PopularityRanker(env_data.train_counts)
    if name == "random":
        return RandomRanker(env_data.n_items, seed)
    if name == "mf":
        return MFRanker(env_data.user_embeddings, env_data.item_embeddings)
    if name == "fair-mf":
        if is_popular is None:
            raise ValueError("the fair-mf re-ranker needs the popular-item mask (is_popular)")
        return FairReRanker(env_data.user_embeddings, env_data.item_embeddings, is_popular, alpha_prime)
    raise ValueError(f"unknown ranker {name!r}; choose one of {', '.join(RANKERS)}")
