"""fcpo.envs.adapters: the Box-query -> top-K slate adapter for continuous-action learners."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fcpo  # noqa: F401
from fcpo.envs.adapters import TopKQueryAdapter, top_k_slate
from fcpo.envs.wrappers import SafetyStepWrapper

KW = dict(dataset="synthetic", embedding_dim=8)


def test_top_k_slate_hand_checked():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [2.0, 0.0]])
    q = np.array([1.0, 0.5])  # scores: 1, 0.5, 1.5, -1, 2
    assert top_k_slate(q, emb, np.ones(5, bool), 3).tolist() == [4, 2, 0]
    mask = np.array([True, True, False, True, False])  # 2 and 4 already shown
    assert top_k_slate(q, emb, mask, 3).tolist() == [0, 1, 3]
    # fewer allowed items than K: the allowed ones first, then the best masked ones
    assert top_k_slate(q, emb, np.array([False, True, False, False, False]), 3).tolist() == [1, 4, 2]
    # ties keep the lower item id first
    assert top_k_slate(np.zeros(2), emb, np.ones(5, bool), 5).tolist() == [0, 1, 2, 3, 4]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k),
    hnp.arrays(np.float64, (12, 3), elements=st.integers(-3, 3).map(float)),
    hnp.arrays(np.float64, 3, elements=st.integers(-2, 2).map(float)),
    hnp.arrays(np.bool_, 12))))
def test_top_k_slate_matches_brute_force(args):
    k, emb, q, mask = args
    scores = emb @ q
    ranked = sorted(range(12), key=lambda i: (not mask[i], -scores[i], i))
    assert top_k_slate(q, emb, mask, k).tolist() == ranked[:k]


def test_adapter_query_of_user_embedding_gives_the_top_k_unshown_items():
    env = TopKQueryAdapter(gym.make("fcpo/MovieLensFair-v0", **KW))
    base = env.unwrapped
    d = base.env_data.item_embeddings.shape[1]
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (d,), np.float32)
    obs, _ = env.reset(seed=3)
    shown = set(base.history.tolist())
    for _ in range(3):
        user = obs[base.n_history * d: base.n_history * d + d]
        mask = base.item_mask()
        scores = base.env_data.item_embeddings @ user.astype(np.float64)
        expected = np.argsort(np.where(mask, -scores, np.inf), kind="stable")[:base.slate_size]
        obs, reward, terminated, truncated, info = env.step(user)
        assert info["slate"].tolist() == expected.tolist()
        assert not shown & set(info["slate"].tolist())  # never an item already shown
        assert info["cost"] == base.is_popular[info["slate"]].sum()
        shown |= set(info["slate"].tolist())
        if terminated or truncated:
            break


def test_adapter_under_safety_step_wrapper_returns_the_cost_in_the_tuple():
    env = SafetyStepWrapper(TopKQueryAdapter(gym.make("fcpo/MovieLensFair-v0", **KW)))
    env.reset(seed=0)
    out = env.step(env.action_space.sample())
    assert len(out) == 6
    obs, reward, cost, terminated, truncated, info = out
    assert isinstance(cost, np.float64) and cost == info["cost"] == env.unwrapped.is_popular[info["slate"]].sum()
    assert env.observation_space.contains(obs)


def test_adapter_rejects_bad_input():
    env = gym.make("fcpo/MovieLensFair-v0", **KW)
    n_items = env.unwrapped.n_items
    with pytest.raises(ValueError, match=r"item_embeddings must have shape \[n_items="):
        TopKQueryAdapter(env, item_embeddings=np.zeros((n_items - 1, 4)))
    with pytest.raises(ValueError, match="bound must be a positive"):
        TopKQueryAdapter(env, bound=0.0)
    with pytest.raises(TypeError, match="needs an fcpo slate env"):
        TopKQueryAdapter(gym.make("CartPole-v1"))
    adapter = TopKQueryAdapter(env, item_embeddings=np.eye(n_items)[:, :4])
    adapter.reset(seed=0)
    with pytest.raises(ValueError, match=r"query must have shape \(4,\)"):
        adapter.step(np.zeros(5))
    with pytest.raises(ValueError, match="query must be finite"):
        adapter.step(np.array([0.0, np.nan, 0.0, 0.0]))
    # custom embeddings: one-hot on the first 4 items, so the query picks them in its own order
    mask = adapter.unwrapped.item_mask()
    q = np.array([0.1, 0.4, 0.3, 0.2])
    slate = adapter.action(q)
    allowed_first4 = [i for i in (1, 2, 3, 0) if mask[i]]
    assert slate[:len(allowed_first4)].tolist() == allowed_first4
