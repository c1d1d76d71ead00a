"""Which weights compression touches: the Linear layers inside the transformer blocks.

Embeddings, lm_head and norms are never pruned (as in Wanda and SparseGPT).
"""
from __future__ import annotations

from typing import Iterator


def decoder_layers(model):
    """The list of transformer blocks of an HF causal LM (Llama-family layout `model.model.layers`)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no transformer blocks at model.model.layers")
    return layers


def block_linears(model) -> Iterator[tuple[str, object]]:
    """(qualified name, nn.Linear) for every Linear inside a transformer block, in order."""
    import torch.nn as nn

    for i, layer in enumerate(decoder_layers(model)):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                yield f"model.layers.{i}.{name}", module
