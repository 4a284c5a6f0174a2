"""A tiny GPT-2 and a title tokenizer built offline, in seconds, for tests and smoke runs.

Nothing is downloaded: the byte-level BPE tokenizer is trained on the catalogue's titles
plus the prompt template's words (``tokenizers``), and the GPT-2 is built from a config
with random weights (``transformers``).  Both are deterministic for a given seed and title list.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = ["train_title_tokenizer", "tiny_gpt2", "build_tiny_lm", "write_tiny_gguf", "TINY_CHAT_TEMPLATE"]

#: a minimal Jinja chat template for tests (role-prefixed turns, ``<s>assistant:`` generation prompt)
TINY_CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}<s>assistant:{% endif %}")

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


def write_tiny_gguf(path, titles: Sequence[str], extra_text: Iterable[str] = (), vocab_size: int = 300,
                    seed: int = 0, dim: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                    chat_template: str | None = TINY_CHAT_TEMPLATE):
    """Write a tiny random Llama as a float32 GGUF file (``gguf`` package), with the title tokenizer
    and ``chat_template`` in its metadata -- a local stand-in for SmolLM2's GGUF in tests."""
    import json

    import gguf
    import numpy as np

    tok = train_title_tokenizer(titles, extra_text, vocab_size)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    tokens = [None] * len(tok)
    for t, i in tok.get_vocab().items():
        tokens[i] = t
    special = set(SPECIAL.values())
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(512)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(2 * dim)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(dim // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    if chat_template:
        w.add_chat_template(chat_template)
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    kv = kv_heads * (dim // heads)
    w.add_tensor("token_embd.weight", rand(len(tokens), dim))
    w.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    w.add_tensor("output.weight", rand(len(tokens), dim))
    for i in range(layers):
        for name, shape in (("attn_q", (dim, dim)), ("attn_k", (kv, dim)), ("attn_v", (kv, dim)),
                            ("attn_output", (dim, dim)), ("ffn_gate", (2 * dim, dim)), ("ffn_up", (2 * dim, dim)),
                            ("ffn_down", (dim, 2 * dim))):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dim, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dim, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
