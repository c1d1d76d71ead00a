"""A model's shape without its weights: config, parameter count, FLOP sizes, and a few-layer proxy.

`auditor run --plan` needs the parameter count (peak memory), the vocabulary and the
FLOP sizes (scaling timed rates), but not the weights: loading a 1.5B GGUF to count
them took minutes and ~16 GB. The config comes from config.json (an HF directory) or
from the GGUF's metadata (transformers reads the header, no tensor is dequantized);
the parameters are counted on a model built from that config on the meta device,
which allocates nothing and gives exactly the parameters `load_model` holds (tied
weights counted once, an untied head twice).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from auditor.artifacts.gguf_conversions import gguf_config
from auditor.artifacts.models import ModelSource
from auditor.core.errors import ModelError
from auditor.scoring.gemm import ModelDims

#: The proxy `--plan` times holds at most this many parameters (0.8 GB in float32): a model this small
#: (SmolLM2-135M) is timed at its full depth, so only its weights differ from the real model; a larger
#: one gets as many blocks as fit, and at least PROXY_MIN_LAYERS (the embedding and head keep their
#: full size: a 7-8B shape's proxy holds ~1.9B parameters).
PROXY_MAX_PARAMS = 200_000_000
#: Why 4: a call's costs that do not grow with the depth (the head's few answer rows reading the whole
#: vocabulary matrix, the embedding, Python) were scaled up with the blocks' FLOPs. On two blocks of
#: Qwen2.5-Coder-1.5B they made torch bfloat16 look half as fast as the real model (53 against 104
#: planned tokens/s, same 16 groups, batch 8); four and eight blocks both gave 85 (docs/engine.md).
#: Torch kinds now time those costs on their own (auditor.study.estimate.deepen); the llama.cpp kinds
#: are still scaled by FLOPs, and the deeper proxy keeps the blocks a larger share of every timing.
PROXY_MIN_LAYERS = 4


@dataclass(frozen=True)
class ModelShape:
    """What `--plan` knows of a model without reading its weights."""

    config: Any  # a transformers PretrainedConfig, as load_model would build it
    n_params: int  # parameters as loaded (tied weights once)
    dims: ModelDims

    @property
    def vocab(self) -> int:
        return self.dims.vocab


def load_config(source: ModelSource, *, trust_remote_code: bool = False):
    """The transformers config `load_model` builds for `source`, read from config.json or the GGUF header."""
    from transformers import AutoConfig

    try:
        if source.kind == "gguf":
            return gguf_config(source.path)
        return AutoConfig.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # e.g. a GGUF architecture transformers lacks
        raise ModelError(f"{source.path}: cannot read the model's config ({exc})") from None


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def count_parameters(config, *, trust_remote_code: bool = False) -> int:
    """Parameters of the causal LM `config` describes, counted on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters())


def model_shape(source: ModelSource, *, trust_remote_code: bool = False) -> ModelShape:
    """`source`'s config, parameter count and FLOP sizes, from its config alone (module docstring)."""
    config = load_config(source, trust_remote_code=trust_remote_code)
    try:
        return ModelShape(config, count_parameters(config, trust_remote_code=trust_remote_code),
                          ModelDims.from_config(_text_config(config)))
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:  # a config no model can follow
        raise ModelError(f"{source.path}: cannot build the model's shape from its config ({exc})") from None


def proxy_layers(shape: ModelShape, *, max_params: int = PROXY_MAX_PARAMS, min_layers: int = PROXY_MIN_LAYERS,
                 trust_remote_code: bool = False) -> int:
    """Decoder blocks of the proxy: the most whose parameters stay within `max_params`, within
    [min_layers, the model's depth]. A block's parameters: the model's minus a one-block model's, per block."""
    full = shape.dims.n_layers
    if full <= 1:
        return full
    one = count_parameters(proxy_config(shape.config, 1), trust_remote_code=trust_remote_code)
    per_block = (shape.n_params - one) / (full - 1)
    fit = int((max_params - (one - per_block)) // per_block) if per_block > 0 else full
    return max(min(min_layers, full), min(full, fit))


def proxy_config(config, n_layers: int):
    """`config` with `n_layers` decoder blocks: per-layer lists (layer_types, ...) cut to match.

    Widths, heads, vocabulary and attention settings stay the source's, so every matmul of a
    block and the head has the shape the real model computes.
    """
    proxy = copy.deepcopy(config)
    text = _text_config(proxy)
    full = text.num_hidden_layers
    n = min(n_layers, full)
    for name, value in list(vars(text).items()):
        if isinstance(value, list) and len(value) == full and name != "architectures":
            setattr(text, name, value[:n])
    text.num_hidden_layers = n
    return proxy


def proxy_model(source: ModelSource, shape: ModelShape, *, seed: int = 0, n_layers: int | None = None,
                trust_remote_code: bool = False):
    """A float32 model of `source`'s architecture with `n_layers` random blocks (`proxy_layers` when None),
    named after the source.

    Random weights compute at the same speed as trained ones (dense float kernels do not look at
    values); `config._name_or_path` is the source's, so a GGUF export finds its tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if n_layers is None:
        n_layers = proxy_layers(shape, trust_remote_code=trust_remote_code)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(proxy_config(shape.config, n_layers), dtype=torch.float32,
                                             trust_remote_code=trust_remote_code)
    model.config._name_or_path = str(source.path)
    return model.eval()
