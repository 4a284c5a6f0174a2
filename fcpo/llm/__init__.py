"""Language-model recommenders (optional ``llm`` extra: transformers, tokenizers, gguf, peft).

``fcpo.llm.text_policy`` (prompts, title log-probs, grounding) imports torch/numpy only; the
model builders import ``transformers`` when called, so ``import fcpo.llm`` works without the extra.
"""
from fcpo.llm.models import SMOLLM2_ALIASES, apply_lora, load_causal_lm, smollm2_gguf_path
from fcpo.llm.text_policy import PromptTemplate, TextPolicy, TitleIndex, continuation_log_probs
from fcpo.llm.tiny import build_tiny_lm, tiny_gpt2, train_title_tokenizer

__all__ = ["PromptTemplate", "TextPolicy", "TitleIndex", "continuation_log_probs", "load_causal_lm",
           "smollm2_gguf_path", "apply_lora", "SMOLLM2_ALIASES", "build_tiny_lm", "tiny_gpt2",
           "train_title_tokenizer"]
