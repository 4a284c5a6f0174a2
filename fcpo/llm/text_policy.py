"""A recommender policy over a causal language model: prompts from titles, title log-probs, grounding.

* Prompt (S-DPO/LLaRA style): ``The user watched: "A", "B". Which movie will the user choose next
  from: "X", "Y", ...? Answer:`` -- the candidate clause is left out when there is no list
  (the SPRec setting, ranking over the whole catalogue).
* ``log pi(title | prompt)`` = the sum of the log-probabilities of the answer tokens
  ``" " + title + <eos>`` given the prompt (the prompt tokens are masked out).  The prompt is
  run once and its key/value cache is shared by all titles scored for it.
* With a candidate list, :meth:`TextPolicy.item_log_probs` can normalise over it:
  ``log_softmax_j log pi(title_j | prompt)`` (the candidate-normalised distribution).
* ``act`` without candidates generates an answer (greedy or sampled) and grounds it to the
  catalogue: an exact (case- and quote-insensitive) title match, else the nearest title by
  cosine similarity of character 3-gram TF-IDF vectors; ``k > 1`` takes the k nearest titles.

``log_prob(state, items [B, k])`` is the **sum of the k titles' log-probabilities**, each
scored as a single answer (exact for k = 1; not a Plackett-Luce slate probability).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from fcpo.policies.base import Policy, SlateState, gumbel_topk, masked_topk

__all__ = ["PromptTemplate", "TitleIndex", "TextPolicy", "continuation_log_probs"]


@dataclass(frozen=True)
class PromptTemplate:
    """Prompt pieces; titles in the history and candidate lists are quoted and comma-separated."""

    history: str = "The user watched: {history}."
    question_candidates: str = " Which movie will the user choose next from: {candidates}?"
    question: str = " Which movie will the user choose next?"
    answer: str = " Answer:"
    separator: str = ", "
    quote: str = '"'

    def _list(self, titles: Sequence[str]) -> str:
        return self.separator.join(f"{self.quote}{t}{self.quote}" for t in titles)

    def build(self, history_titles: Sequence[str], candidate_titles: Sequence[str] | None = None) -> str:
        text = self.history.format(history=self._list(history_titles))
        if candidate_titles is not None:
            text += self.question_candidates.format(candidates=self._list(candidate_titles))
        else:
            text += self.question
        return text + self.answer

    @staticmethod
    def answer_text(title: str) -> str:
        """The answer continuation scored and generated after the prompt."""
        return " " + title


_STRIP = re.compile(r"^[\s\"'`*]+|[\s\"'`*.,;:!?]+$")


def _normalise(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _STRIP.sub("", first).lower()


class TitleIndex:
    """Ground free text to catalogue items: exact normalised match, else character n-gram TF-IDF cosine."""

    def __init__(self, titles: Sequence[str], ngram: int = 3):
        self.titles = [str(t) for t in titles]
        self.ngram = ngram
        self._norm = [_normalise(t) for t in self.titles]
        self.exact: dict[str, int] = {}
        for i, t in enumerate(self._norm):
            self.exact.setdefault(t, i)
        self.vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, t in enumerate(self._norm):
            for g in self._grams(t):
                rows.append(i)
                cols.append(self.vocab.setdefault(g, len(self.vocab)))
        tf = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(self.titles), len(self.vocab)))
        df = np.asarray((tf > 0).sum(axis=0)).ravel()
        self.idf = np.log((1 + len(self.titles)) / (1 + df)) + 1.0
        self.matrix = self._l2(tf @ sp.diags(self.idf))

    def _grams(self, t: str) -> list[str]:
        padded = f"  {t} "
        return [padded[i:i + self.ngram] for i in range(len(padded) - self.ngram + 1)]

    @staticmethod
    def _l2(m: sp.csr_matrix) -> sp.csr_matrix:
        norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return sp.diags(1.0 / np.where(norm > 0, norm, 1.0)) @ m

    def similarity(self, texts: Sequence[str]) -> np.ndarray:
        """[B, n_items] cosine similarity in [0, 1]; an exact title match scores 2."""
        rows, cols = [], []
        norm = [_normalise(t) for t in texts]
        for b, t in enumerate(norm):
            for g in self._grams(t):
                j = self.vocab.get(g)
                if j is not None:
                    rows.append(b)
                    cols.append(j)
        q = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(self.vocab)))
        sim = np.asarray((self._l2(q @ sp.diags(self.idf)) @ self.matrix.T).todense())
        for b, t in enumerate(norm):
            i = self.exact.get(t)
            if i is not None:
                sim[b, i] = 2.0
        return sim

    def ground(self, texts: Sequence[str], k: int = 1, exclude: np.ndarray | None = None,
               missing: bool = False) -> np.ndarray:
        """[B, k] item ids nearest to each text (ties: lowest id), never an ``exclude``d item.

        A text that shares no character n-gram with any title (e.g. an empty answer) still gets
        the lowest-id titles, unless ``missing``: then its row is -1 (no recommendation) -- the
        evaluation's choice, so that an empty answer is never counted as a recommendation.
        """
        raw = self.similarity(texts)
        sim = torch.as_tensor(raw)
        ex = None if exclude is None else torch.as_tensor(np.asarray(exclude), dtype=torch.bool)
        # tiny id-dependent tie-break keeps the order deterministic
        sim = sim - 1e-9 * torch.arange(sim.shape[1], dtype=sim.dtype)
        out = masked_topk(sim, k, ex).numpy()
        if missing:
            out[raw.max(axis=1) <= 0] = -1
        return out


def _forward(model, **kwargs):
    """model(**kwargs); ``logits_to_keep`` (the LM head only where needed) is dropped for models without it."""
    try:
        return model(**kwargs)
    except TypeError as exc:
        if "logits_to_keep" not in str(exc):
            raise
        kwargs.pop("logits_to_keep")
        out = model(**kwargs)
        return out


def continuation_log_probs(model, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]],
                           use_cache: bool = True) -> torch.Tensor:
    """[J] sum of log p(continuation tokens | prompt) under a causal LM, prompt tokens masked.

    With ``use_cache`` the prompt runs once and its key/value cache is repeated for the J
    continuations; otherwise each prompt + continuation runs in full (the reference path).
    Gradients flow in both cases.
    """
    device = next(model.parameters()).device
    J = len(continuations)
    if J == 0:
        return torch.zeros(0, device=device)
    lengths = torch.tensor([len(c) for c in continuations], device=device)
    if int(lengths.min()) < 1 or len(prompt_ids) < 1:
        raise ValueError("the prompt and every continuation need at least one token")
    T = int(lengths.max())
    cont = torch.zeros(J, T, dtype=torch.long, device=device)
    for j, c in enumerate(continuations):
        cont[j, :len(c)] = torch.as_tensor(list(c), dtype=torch.long)
    mask = torch.arange(T, device=device)[None, :] < lengths[:, None]
    P = len(prompt_ids)
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=device)[None, :]
    if use_cache:
        out = _forward(model, input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(J)
        first = out.logits[:, -1:, :].expand(J, 1, -1)
        if T > 1:
            attn = torch.cat([torch.ones(J, P, dtype=torch.long, device=device), mask.long()], dim=1)
            rest = model(input_ids=cont, attention_mask=attn, past_key_values=cache, use_cache=True).logits[:, :-1]
            logits = torch.cat([first, rest], dim=1)
        else:
            logits = first
    else:
        ids = torch.cat([prompt.expand(J, P), cont], dim=1)
        attn = torch.cat([torch.ones(J, P, dtype=torch.long, device=device), mask.long()], dim=1)
        logits = _forward(model, input_ids=ids, attention_mask=attn, logits_to_keep=T + 1).logits
        logits = logits[:, -(T + 1):-1] if logits.shape[1] > T else logits  # positions P-1 .. P+T-2
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, cont[:, :, None]).squeeze(2)
    return (logp * mask).sum(dim=1)


class TextPolicy(Policy):
    """Item policy over a causal LM and a title catalogue (see the module docstring).

    model/tokenizer: any ``transformers`` causal LM (``fcpo.llm.load_causal_lm``,
    ``fcpo.llm.build_tiny_lm``, optionally with LoRA); item_titles: title of each item id.
    prompt_candidates: list the candidates in the prompt when a candidate list is given.
    """

    log_prob_kind = ("sum of the answer title's token log-probs given the prompt (candidate-normalised "
                     "log-softmax with a candidate list and normalize=True); slates: sum over titles")
    #: the trainer scores raw title log-probs (LM SFT; DPO/S-DPO are invariant to the normaliser)
    default_normalize = False

    def __init__(self, model, tokenizer, item_titles: Sequence[str], template: PromptTemplate = PromptTemplate(),
                 prompt_candidates: bool = True, score_eos: bool = True, use_cache: bool = True,
                 max_new_tokens: int | None = None, gen_batch_size: int = 16):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.titles = [str(t) for t in item_titles]
        self.n_items = len(self.titles)
        self.template = template
        self.prompt_candidates = prompt_candidates
        self.use_cache = use_cache
        self.gen_batch_size = gen_batch_size
        self.index = TitleIndex(self.titles)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = [tokenizer.eos_token_id] if score_eos and tokenizer.eos_token_id is not None else []
        enc = tokenizer([template.answer_text(t) for t in self.titles], add_special_tokens=False)["input_ids"]
        self.answer_ids = [list(ids) + eos for ids in enc]
        self.max_new_tokens = max_new_tokens or max(len(a) for a in self.answer_ids) + 2

    # ----------------------------------------------------------------- prompts
    def prompt(self, history: Sequence[int], candidates: Sequence[int] | None = None) -> str:
        hist = [self.titles[i] for i in history if i >= 0]
        cands = None if candidates is None else [self.titles[i] for i in candidates]
        return self.template.build(hist, cands)

    def prompts(self, state: SlateState, candidates: torch.Tensor | None = None) -> list[str]:
        hist = state.history.cpu().numpy()
        cands = None if candidates is None or not self.prompt_candidates else candidates.cpu().numpy()
        return [self.prompt(hist[b], None if cands is None else cands[b]) for b in range(len(hist))]

    def _prompt_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------ log-probs
    def item_log_probs(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                       normalize: bool = False) -> torch.Tensor:
        """log pi(title of items[b, j] | prompt_b) [B, J]; with ``candidates`` and ``normalize`` the
        log-softmax over the row's candidate titles."""
        prompts = self.prompts(state, candidates)
        items_np = items.cpu().numpy()
        cands_np = None if candidates is None else candidates.cpu().numpy()
        rows = []
        for b, text in enumerate(prompts):
            pid = self._prompt_ids(text)
            if cands_np is not None and normalize:
                c = cands_np[b]
                lp = continuation_log_probs(self.model, pid, [self.answer_ids[i] for i in c], self.use_cache)
                lp = lp - torch.logsumexp(lp, dim=0)
                pos = [int(np.flatnonzero(c == i)[0]) if np.any(c == i) else -1 for i in items_np[b]]
                if min(pos) < 0:
                    raise ValueError("an item to score is not in its row's candidate list")
                rows.append(lp[torch.as_tensor(pos, device=lp.device)])
            else:
                rows.append(continuation_log_probs(self.model, pid, [self.answer_ids[i] for i in items_np[b]],
                                                   self.use_cache))
        return torch.stack(rows)

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over the slate of each title's log-probability (candidate-normalised with ``candidates``)."""
        return self.item_log_probs(state, items, candidates, normalize=candidates is not None).sum(dim=1)

    def scores(self, state: SlateState) -> torch.Tensor:
        raise NotImplementedError("TextPolicy has no full-catalogue score vector; use act(), log_prob() or "
                                  "item_log_probs() with a candidate list")

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, state: SlateState, candidates: torch.Tensor | None = None, mode: str = "greedy",
                 generator: torch.Generator | None = None, max_new_tokens: int | None = None) -> list[str]:
        """One answer per state (first line, special tokens removed): greedy or sampled (temperature 1)."""
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        prompts = [self._prompt_ids(p) for p in self.prompts(state, candidates)]
        pad = self.tokenizer.pad_token_id
        texts: list[str] = []
        was_training = self.model.training
        self.model.eval()
        seed = None if generator is None else int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for s in range(0, len(prompts), self.gen_batch_size):
                chunk = prompts[s:s + self.gen_batch_size]
                P = max(len(p) for p in chunk)
                ids = torch.full((len(chunk), P), pad, dtype=torch.long)
                attn = torch.zeros((len(chunk), P), dtype=torch.long)
                for i, p in enumerate(chunk):  # left padding
                    ids[i, P - len(p):] = torch.as_tensor(p)
                    attn[i, P - len(p):] = 1
                kwargs = {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0} if mode == "sample" \
                    else {"do_sample": False}
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                                          max_new_tokens=max_new_tokens or self.max_new_tokens,
                                          pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, **kwargs)
                for row in self.tokenizer.batch_decode(out[:, P:], skip_special_tokens=True):
                    row = row.strip()
                    texts.append(row.splitlines()[0].strip() if row else "")
        self.model.train(was_training)
        return texts

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude: torch.Tensor | None = None,
            generator: torch.Generator | None = None, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """k item ids per state: with ``candidates``, the top (or Plackett-Luce sampled) candidates by the
        candidate-normalised log-probs; otherwise a generated answer grounded to the catalogue."""
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        if candidates is not None:
            lp = self.item_log_probs(state, candidates, candidates, normalize=True)
            ex = None if exclude is None else torch.gather(exclude.to(lp.device), 1, candidates.to(lp.device))
            pos = masked_topk(lp, k, ex) if mode == "greedy" else gumbel_topk(lp, k, ex, generator)
            return torch.gather(candidates.to(pos.device), 1, pos)
        texts = self.generate(state, None, mode, generator)
        ex = None if exclude is None else exclude.cpu().numpy()
        return torch.as_tensor(self.index.ground(texts, k, ex), dtype=torch.long, device=state.history.device)

    def snapshot(self) -> "TextPolicy":
        frozen = copy.deepcopy(self)
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen.eval()
