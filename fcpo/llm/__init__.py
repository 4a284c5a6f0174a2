"""Language-model recommenders (optional ``llm`` extra: transformers, tokenizers, gguf, peft).

``fcpo.llm.text_policy`` (prompts, title log-probs, grounding) imports torch/numpy only; the
model builders import ``transformers`` when called, so ``import fcpo.llm`` works without the extra.
"""
from fcpo.llm.models import (LORA_ALPHA, LORA_RANK, SMOLLM2_ALIASES, apply_lora, gguf_folder, load_causal_lm,
                             smollm2_gguf_path, trainable_parameters)
from fcpo.llm.prompts import CHAT_TEMPLATE, ParsedAnswers, parse_answers, render_prompt
from fcpo.llm.scoring import batched_continuation_log_probs, packed_continuation_log_probs
from fcpo.llm.text_policy import PromptTemplate, TextPolicy, TitleIndex, continuation_log_probs
from fcpo.llm.trie import TokenTrie, trie_greedy_decode
from fcpo.llm.tiny import TINY_CHAT_TEMPLATE, build_tiny_lm, tiny_gpt2, train_title_tokenizer, write_tiny_gguf

__all__ = ["PromptTemplate", "TextPolicy", "TitleIndex", "continuation_log_probs", "load_causal_lm",
           "smollm2_gguf_path", "apply_lora", "SMOLLM2_ALIASES", "build_tiny_lm", "tiny_gpt2",
           "train_title_tokenizer", "CHAT_TEMPLATE", "ParsedAnswers", "parse_answers", "render_prompt",
           "batched_continuation_log_probs", "packed_continuation_log_probs", "TokenTrie", "trie_greedy_decode", "LORA_RANK", "LORA_ALPHA",
           "gguf_folder", "trainable_parameters", "write_tiny_gguf", "TINY_CHAT_TEMPLATE"]
