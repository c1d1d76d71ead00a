"""A model's HF architecture, read before it is loaded, and whether llama.cpp can convert it to GGUF.

`source_architecture` reads `config.json` (`architectures[0]`) of an HF directory, or the
GGUF's `general.architecture` mapped to the class transformers loads it as (through
transformers' own causal-LM table). `check_gguf_convertible` then refuses, naming the
architecture, before a model is loaded for a GGUF export that could not be written.
"""
from __future__ import annotations

import json

from auditor.artifacts.gguf_header import gguf_metadata
from auditor.artifacts.llama_converter import check_convertible
from auditor.artifacts.models import ModelSource
from auditor.core.errors import ModelError

# llama.cpp's general.architecture -> transformers model_type, where they differ
# (transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint does the same renames).
_GGUF_MODEL_TYPES = {"gemma3": "gemma3_text", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe",
                     "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2", "command-r": "cohere"}


def source_architecture(source: ModelSource) -> str | None:
    """The HF class name the model loads as (e.g. "Gemma3ForCausalLM"); None when nothing says."""
    if source.kind == "hf":
        try:
            config = json.loads((source.path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{source.path / 'config.json'}: unreadable ({exc})") from None
        arches = config.get("architectures") or []
        return str(arches[0]) if arches else None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = gguf_metadata(source.path).get("general.architecture")
    if arch is None:
        return None
    arch = str(arch)
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(_GGUF_MODEL_TYPES.get(arch, arch))


def check_gguf_convertible(source: ModelSource) -> str:
    """The source's architecture, after checking llama.cpp's converter has a class for it (ModelError if not)."""
    arch = source_architecture(source)
    try:
        check_convertible(arch)
    except ModelError as exc:
        raise ModelError(f"{source.path}: {exc}") from None
    return str(arch)
