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


def untouched_report(model) -> dict:
    """What block-scoped compression leaves as it was: every parameter outside the block Linears
    (embeddings, an untied lm_head, norms), with the share of all parameters it holds.

    Parameters are counted once (a tied lm_head is the embedding). For Gemma 3 270M the
    embedding alone is 63% of the parameters, so whole-model figures move much less than
    block-only ones; reports show both.
    """
    in_blocks = {id(linear.weight) for _, linear in block_linears(model)}
    total = block = 0
    others: dict[str, int] = {}
    for name, param in model.named_parameters():  # named_parameters yields a shared tensor once
        total += param.numel()
        if id(param) in in_blocks:
            block += param.numel()
        elif param.dim() >= 2:
            others[name] = param.numel()
    rest = total - block
    return {
        "untouched_tensors": others,  # matrices outside the blocks (norm vectors are counted in the share)
        "untouched_share_of_parameters": rest / total if total else float("nan"),
        "block_linear_parameters": block,
        "total_parameters": total,
        "tied_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
    }
