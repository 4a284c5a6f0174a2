"""A continuous action for the slate envs: a query vector scored against the item embeddings.

Continuous-action safe-RL libraries (SAC/PPO-Lagrangian with a Gaussian policy, OmniSafe-style
learners) need a ``Box`` action.  :class:`TopKQueryAdapter` gives them one: the action is a query
q in R^d, and the slate is the K items with the highest scores q . v_i over the item embeddings
V [n_items, d] (the embeddings the observation is built from), items already shown this episode
(``item_mask()`` False) ranked last, in descending score order (ties: the lower item id first).
This is the action-embedding decoding of Dulac-Arnold et al. (2015, "Deep RL in large discrete
action spaces") with k-NN replaced by an exact top-K inner product.  Combine with
:class:`fcpo.envs.wrappers.SafetyStepWrapper` for the 6-tuple step with the cost.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def top_k_slate(query: np.ndarray, item_embeddings: np.ndarray, item_mask: np.ndarray, k: int) -> np.ndarray:
    """Int64 [k]: the k items of highest ``item_embeddings @ query`` among ``item_mask`` (then the masked
    ones, if fewer than k are allowed), best first; equal scores keep the lower item id first."""
    scores = item_embeddings @ np.asarray(query, dtype=np.float64)
    order = np.lexsort((np.arange(scores.size), -scores, ~np.asarray(item_mask, dtype=bool)))
    return order[:k].astype(np.int64)


class TopKQueryAdapter(gym.ActionWrapper):
    """``Box(-bound, bound, (d,))`` query -> the env's ``MultiDiscrete`` slate by top-K scores q . v
    (see the module docstring).  ``item_embeddings`` [n_items, d] defaults to the env's own
    (``env.unwrapped.env_data.item_embeddings``).  Scores only rank, so the bound only sets the
    scale the learner explores in.  ``info["slate"]`` (int64 [K]) after a step is the slate shown."""

    def __init__(self, env: gym.Env, item_embeddings: np.ndarray | None = None, bound: float = 1.0):
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(env.action_space, spaces.MultiDiscrete) or not hasattr(base, "item_mask"):
            raise TypeError(f"TopKQueryAdapter needs an fcpo slate env (MultiDiscrete action and item_mask()), "
                            f"got {type(base).__name__} with {env.action_space}")
        if item_embeddings is None:
            item_embeddings = base.env_data.item_embeddings
        item_embeddings = np.asarray(item_embeddings, dtype=np.float64)
        n_items = int(env.action_space.nvec[0])
        if item_embeddings.ndim != 2 or item_embeddings.shape[0] != n_items:
            raise ValueError(f"item_embeddings must have shape [n_items={n_items}, d], got {item_embeddings.shape}")
        if not np.isfinite(item_embeddings).all():
            raise ValueError("item_embeddings must be finite")
        if not (np.isfinite(bound) and bound > 0):
            raise ValueError(f"bound must be a positive finite number, got {bound!r}")
        self.item_embeddings = item_embeddings
        self.slate_size = int(env.action_space.shape[0])
        self.action_space = spaces.Box(-float(bound), float(bound), (item_embeddings.shape[1],), dtype=np.float32)

    def action(self, action) -> np.ndarray:
        query = np.asarray(action, dtype=np.float64)
        if query.shape != self.action_space.shape:
            raise ValueError(f"query must have shape {self.action_space.shape}, got {query.shape}")
        if not np.isfinite(query).all():
            raise ValueError(f"query must be finite, got {query}")
        return top_k_slate(query, self.item_embeddings, self.env.unwrapped.item_mask(), self.slate_size)

    def step(self, action):
        slate = self.action(action)
        obs, reward, terminated, truncated, info = self.env.step(slate)
        info["slate"] = slate
        return obs, reward, terminated, truncated, info
