"""A recommender policy over a causal language model: prompts from titles, title log-probs, grounding.

* Prompt (S-DPO/LLaRA style, :mod:`fcpo.llm.prompts`): ``The user watched: "A", "B". Which movie
  will the user choose next from: "X", "Y", ...? Answer:`` -- the candidate clause is left out when
  there is no list (the SPRec setting, ranking over the whole catalogue).  A model whose tokenizer
  has a chat template (SmolLM2-Instruct) gets the question as a user turn of that template
  (``chat=None``: automatic) and answers after the assistant's generation prompt.
* ``log pi(title | prompt)`` = the sum of the log-probabilities of the answer tokens
  ``" " + title + <eos>`` (chat: ``title + <eos>``) given the prompt (the prompt tokens are masked
  out).  The titles of a batch of prompts are scored in one forward pass that shares each prompt:
  tree attention over ``[prompt | title_1 | ... | title_J]`` (default), or the prompt's key/value
  cache expanded over its titles (:mod:`fcpo.llm.scoring`).
* ``generate(..., constrained=True)`` decodes greedily inside a trie of the candidate titles
  (:mod:`fcpo.llm.trie`): the answer is always exactly one candidate.
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
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from fcpo.llm.prompts import CHAT_TEMPLATE, PromptTemplate, answer_prefix, chat_template_of, render_prompt
from fcpo.llm.scoring import _forward, batched_continuation_log_probs, packed_continuation_log_probs
from fcpo.llm.trie import trie_greedy_decode
from fcpo.policies.base import Policy, SlateState, gumbel_topk, masked_topk

__all__ = ["PromptTemplate", "TitleIndex", "TextPolicy", "continuation_log_probs", "batched_continuation_log_probs"]


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
    template: the question (default: :data:`~fcpo.llm.prompts.CHAT_TEMPLATE` for a chat model,
    ``PromptTemplate()`` otherwise).  prompt_candidates: list the candidates in the prompt when a
    candidate list is given.  chat: render prompts with the tokenizer's chat template (None: when it
    has one).  system: optional system turn of chat prompts.  device: move the model there
    (default: leave it where it is).  score_batch_size: prompts scored per batched forward pass
    (each expands its key/value cache over its J titles: memory ~ score_batch_size * J * prompt length).
    scoring: "packed" (one tree-attention pass per batch, :func:`~fcpo.llm.scoring.packed_continuation_log_probs`),
    "cache" (prompt pass + cache expanded over the titles) or None: "packed" when the model's attention
    implementation takes custom 4-D masks (sdpa, eager), else "cache".  Both equal the per-title
    reference (``use_cache=False``) to float rounding.
    """

    log_prob_kind = ("sum of the answer title's token log-probs given the prompt (candidate-normalised "
                     "log-softmax with a candidate list and normalize=True); slates: sum over titles")
    #: the trainer scores raw title log-probs (LM SFT; DPO/S-DPO are invariant to the normaliser)
    default_normalize = False

    def __init__(self, model, tokenizer, item_titles: Sequence[str], template: PromptTemplate | None = None,
                 prompt_candidates: bool = True, score_eos: bool = True, use_cache: bool = True,
                 max_new_tokens: int | None = None, gen_batch_size: int = 16, *, chat: bool | None = None,
                 system: str | None = None, device: str | torch.device | None = None, score_batch_size: int = 4,
                 scoring: str | None = None):
        super().__init__()
        if device is not None:
            model = model.to(device)
        self.model = model
        self.tokenizer = tokenizer
        self.titles = [str(t) for t in item_titles]
        self.n_items = len(self.titles)
        self.chat = chat_template_of(tokenizer) is not None if chat is None else bool(chat)
        if self.chat and chat_template_of(tokenizer) is None:
            raise ValueError("chat=True but the tokenizer has no chat_template")
        self.template = template if template is not None else (CHAT_TEMPLATE if self.chat else PromptTemplate())
        self.system = system
        self.prompt_candidates = prompt_candidates
        self.use_cache = use_cache
        self.gen_batch_size = gen_batch_size
        self.score_batch_size = score_batch_size
        if scoring is None:
            impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
            scoring = "packed" if impl in ("sdpa", "eager") else "cache"
        if scoring not in ("packed", "cache"):
            raise ValueError(f"scoring must be 'packed', 'cache' or None, got {scoring!r}")
        self.scoring = scoring
        self.index = TitleIndex(self.titles)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_id = tokenizer.eos_token_id
        eos = [self.eos_id] if score_eos and self.eos_id is not None else []
        prefix = answer_prefix(self.chat)
        enc = tokenizer([prefix + t for t in self.titles], add_special_tokens=False)["input_ids"]
        self.answer_ids = [list(ids) + eos for ids in enc]
        self.max_new_tokens = max_new_tokens or max(len(a) for a in self.answer_ids) + 2

    # ----------------------------------------------------------------- prompts
    def prompt(self, history: Sequence[int], candidates: Sequence[int] | None = None) -> str:
        """The model input text: the template's question, in the chat template when ``self.chat``."""
        hist = [self.titles[i] for i in history if i >= 0]
        cands = None if candidates is None else [self.titles[i] for i in candidates]
        if not self.chat:
            return self.template.build(hist, cands)
        return render_prompt(self.tokenizer, self.template.question_text(hist, cands), self.system, chat=True)

    def prompts(self, state: SlateState, candidates: torch.Tensor | None = None) -> list[str]:
        hist = state.history.cpu().numpy()
        cands = None if candidates is None or not self.prompt_candidates else candidates.cpu().numpy()
        return [self.prompt(hist[b], None if cands is None else cands[b]) for b in range(len(hist))]

    def _prompt_ids(self, text: str) -> list[int]:
        # a rendered chat prompt already holds its special tokens
        return list(self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------ log-probs
    def title_log_probs(self, prompt_ids: Sequence[Sequence[int]], items: np.ndarray) -> torch.Tensor:
        """[B, J] log pi(title of items[b, j] | prompt b), ``score_batch_size`` prompts per batched pass."""
        items = np.asarray(items)
        if not self.use_cache:  # reference path: every prompt + title in full
            return torch.stack([continuation_log_probs(self.model, p, [self.answer_ids[i] for i in row], False)
                                for p, row in zip(prompt_ids, items)])
        pad = self.tokenizer.pad_token_id
        score = packed_continuation_log_probs if self.scoring == "packed" else batched_continuation_log_probs
        chunks = []
        for s in range(0, len(prompt_ids), max(1, self.score_batch_size)):
            rows = items[s:s + self.score_batch_size]
            chunks.append(score(
                self.model, prompt_ids[s:s + self.score_batch_size],
                [[self.answer_ids[i] for i in row] for row in rows], pad))
        return torch.cat(chunks)

    def item_log_probs(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                       normalize: bool = False) -> torch.Tensor:
        """log pi(title of items[b, j] | prompt_b) [B, J], on the state's device (the model may sit on a GPU
        while an evaluation keeps its tensors on the CPU); with ``candidates`` and ``normalize`` the
        log-softmax over the row's candidate titles."""
        return self._item_log_probs(state, items, candidates, normalize).to(state.history.device)

    def _item_log_probs(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None,
                        normalize: bool) -> torch.Tensor:
        prompt_ids = [self._prompt_ids(text) for text in self.prompts(state, candidates)]
        items_np = items.cpu().numpy()
        if candidates is None or not normalize:
            return self.title_log_probs(prompt_ids, items_np)
        cands_np = candidates.cpu().numpy()
        lp = self.title_log_probs(prompt_ids, cands_np)
        lp = lp - torch.logsumexp(lp, dim=1, keepdim=True)
        eq = cands_np[:, :, None] == items_np[:, None, :]  # [B, C, J]
        if not eq.any(axis=1).all():
            raise ValueError("an item to score is not in its row's candidate list")
        pos = torch.as_tensor(eq.argmax(axis=1), device=lp.device)
        return lp.gather(1, pos)

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over the slate of each title's log-probability (candidate-normalised with ``candidates``)."""
        return self.item_log_probs(state, items, candidates, normalize=candidates is not None).sum(dim=1)

    def scores(self, state: SlateState) -> torch.Tensor:
        raise NotImplementedError("TextPolicy has no full-catalogue score vector; use act(), log_prob() or "
                                  "item_log_probs() with a candidate list")

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def constrained_choice(self, state: SlateState, candidates: torch.Tensor) -> torch.Tensor:
        """[B] item id chosen by trie-constrained greedy decoding over each row's candidate titles."""
        cands = candidates.cpu().numpy()
        prompt_ids = [self._prompt_ids(p) for p in self.prompts(state, candidates)]
        eos = [] if self.eos_id is None else [self.eos_id]
        seqs = [[a if a and a[-1] == self.eos_id else a + eos for a in (self.answer_ids[i] for i in row)]
                for row in cands]
        picks = []
        for s in range(0, len(prompt_ids), self.gen_batch_size):
            idx, _ = trie_greedy_decode(self.model, prompt_ids[s:s + self.gen_batch_size],
                                        seqs[s:s + self.gen_batch_size], self.tokenizer.pad_token_id)
            picks += idx
        return torch.as_tensor(cands[np.arange(len(cands)), picks], dtype=torch.long, device=candidates.device)

    @torch.no_grad()
    def generate(self, state: SlateState, candidates: torch.Tensor | None = None, mode: str = "greedy",
                 generator: torch.Generator | None = None, max_new_tokens: int | None = None,
                 constrained: bool = False) -> list[str]:
        """One answer per state (first line, special tokens removed): greedy or sampled (temperature 1).

        ``constrained`` (needs ``candidates``, greedy only): trie-constrained decoding, the answer is
        exactly one candidate title.
        """
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        if constrained:
            if candidates is None or mode != "greedy":
                raise ValueError("constrained=True needs a candidate list and mode='greedy'")
            return [self.titles[i] for i in self.constrained_choice(state, candidates).tolist()]
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
