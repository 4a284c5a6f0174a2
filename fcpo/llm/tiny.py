"""A tiny GPT-2 and a title tokenizer built offline, in seconds, for tests and smoke runs.

Nothing is downloaded: the byte-level BPE tokenizer is trained on the catalogue's titles
plus the prompt template's words (``tokenizers``), and the GPT-2 is built from a config
with random weights (``transformers``).  Both are deterministic for a given seed and title list.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = ["train_title_tokenizer", "tiny_gpt2", "build_tiny_lm"]

SPECIAL = {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "</s>", "bos_token": "<s>"}


def train_title_tokenizer(titles: Sequence[str], extra_text: Iterable[str] = (), vocab_size: int = 2000):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``titles`` (+ ``extra_text``), with
    ``<pad>``, ``<unk>``, ``<s>`` and ``</s>`` (the end-of-answer token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [" " + str(t) for t in titles] + [str(t) for t in titles] + list(extra_text)
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def tiny_gpt2(vocab_size: int, n_embd: int = 64, n_layer: int = 2, n_head: int = 2, n_positions: int = 1024,
              seed: int = 0, eos_token_id: int | None = None, pad_token_id: int | None = None):
    """A randomly initialised ``GPT2LMHeadModel`` (float32) from a config; the global RNG is untouched."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_positions=n_positions,
                        bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.float().eval()


def build_tiny_lm(titles: Sequence[str], extra_text: Iterable[str] = (), vocab_size: int = 2000, seed: int = 0,
                  **model_kwargs):
    """(model, tokenizer): a tiny GPT-2 over a tokenizer trained on ``titles`` (see the module docstring)."""
    tokenizer = train_title_tokenizer(titles, extra_text, vocab_size)
    model = tiny_gpt2(len(tokenizer), seed=seed, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, **model_kwargs)
    return model, tokenizer
