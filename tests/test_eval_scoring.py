"""The gaussian actor's item scores (the evaluator's ranking path for lists longer or shorter than K)
average the K rows of W before the product with the item matrix: (1/K) Σ_j W_j Vᵀ = ((1/K) Σ_j W_j) Vᵀ.
The picks must be the ones of the row-by-row definition, on random actors and through the evaluator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fcpo.envs import EnvSpec
from fcpo.policies.actor import SlateActor
from fcpo.policies.base import SlateState, masked_topk

TINY = {"dataset": "synthetic", "horizon": 3, "embedding_dim": 8}


def row_by_row_scores(actor: SlateActor, state: SlateState) -> torch.Tensor:
    """The definition: score every item against each of the K rows of W, then average the K scores."""
    mean = actor.mean_action(state.obs)
    return (mean.view(-1, actor.k, actor.dim) @ actor.items.T).mean(dim=1)


def random_actor(seed: int, n_items: int = 400, dim: int = 9, n_history: int = 4, k: int = 5) -> SlateActor:
    gen = torch.Generator().manual_seed(seed)
    actor = SlateActor(torch.randn(n_items, dim, generator=gen), n_history, k, mode="gaussian", user_dim=dim - 1)
    with torch.no_grad():  # non-trivial residuals and row offsets (the fresh head is near zero)
        for p in actor.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return actor.eval()


def random_state(actor: SlateActor, batch: int, seed: int) -> SlateState:
    gen = torch.Generator().manual_seed(seed + 1000)
    obs_dim = (actor.encoder.n_history + 1) * actor.user_dim + 1  # history embeddings | user embedding | t/T
    obs = torch.randn(batch, obs_dim, generator=gen)
    return SlateState(obs, torch.zeros(batch, 1, dtype=torch.long), torch.arange(batch))


@pytest.mark.parametrize("seed", range(6))
def test_mean_of_rows_scores_equal_the_row_by_row_definition_and_pick_the_same_items(seed):
    actor = random_actor(seed)
    state = random_state(actor, 64, seed)
    with torch.no_grad():
        new, old = actor.scores(state), row_by_row_scores(actor, state)
        ref = (actor.mean_action(state.obs).double().view(-1, actor.k, actor.dim) @ actor.items.double().T).mean(1)
    assert new.shape == (64, actor.n_items) and new.dtype == torch.float32
    # the same values (not a rescaling: a sum over rows would pick the same items but fail here)
    torch.testing.assert_close(new.double(), ref, rtol=1e-5, atol=1e-5)
    exclude = torch.rand(new.shape, generator=torch.Generator().manual_seed(seed)) < 0.3
    for k in (1, 3, 10, 50):
        assert torch.equal(masked_topk(new, k, exclude), masked_topk(old, k, exclude)), k
        assert torch.equal(masked_topk(new, k), masked_topk(old, k)), k


def test_mean_of_rows_matches_a_hand_checked_case():
    actor = SlateActor(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), 1, 2, mode="gaussian", user_dim=2)
    w = torch.tensor([[2.0, 0.0, 0.0, 4.0]])  # rows (2, 0) and (0, 4): mean row (1, 2)
    actor.mean_action = lambda obs: w  # the scores are a function of W only
    s = actor.scores(SlateState(torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1)))
    assert s.tolist() == [[1.0, 2.0, 3.0]]


@pytest.mark.usefixtures("synthetic_only_one_thread")
@pytest.mark.parametrize("protocol,k,steps", [("rollout", 1, 6), ("ranking", 7, None)])
def test_the_evaluator_recommends_exactly_what_the_row_by_row_scores_recommend(monkeypatch, protocol, k, steps):
    """A K=3 actor evaluated with another list length ranks by ``scores``: same lists, same report."""
    from fcpo.evaluate import evaluate

    spec = EnvSpec("fcpo/MovieLensFair-v0", {**TINY, "slate_size": 3})
    env = spec.make_vector(1)
    gen = torch.Generator().manual_seed(3)
    actor = SlateActor(torch.as_tensor(env.env_data.item_embeddings, dtype=torch.float32), env.n_history, 3,
                       mode="gaussian")
    with torch.no_grad():
        for p in actor.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    new = evaluate(actor, spec, protocol=protocol, k=k, steps=steps)
    monkeypatch.setattr(SlateActor, "scores", row_by_row_scores)
    old = evaluate(actor, spec, protocol=protocol, k=k, steps=steps)
    assert new["k"] == k and new["users"] > 10
    assert new["exposure_counts"] == old["exposure_counts"]
    assert new["metrics"] == old["metrics"]
    assert np.count_nonzero(new["exposure_counts"]) > k  # the actor does not recommend one list to everyone
