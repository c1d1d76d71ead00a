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


def each_block(model, blocks=None) -> Iterator[tuple[int, object]]:
    """(index, block) for every transformer block, in order.

    With `blocks` (an `auditor.artifacts.block_weights.BlockWeights`) the build streams:
    each block's float32 weights are fetched before it is yielded and the block is cast
    to the scoring dtype once the caller moves on; after the last one the rest of the
    model is cast. Only a compressor that touches block i while block i is current may
    take `blocks` (its class sets `streams_blocks`).
    """
    for i, layer in enumerate(decoder_layers(model)):
        if blocks is not None:
            blocks.fetch(i, layer)
        yield i, layer
        if blocks is not None:
            blocks.done(i, layer)
    if blocks is not None:
        blocks.finish(model)


def linears_of(block) -> Iterator[tuple[str, object]]:
    """(name inside the block, nn.Linear) for every Linear of one block, in order."""
    import torch.nn as nn

    for name, module in block.named_modules():
        if isinstance(module, nn.Linear):
            yield name, module


def block_linears(model) -> Iterator[tuple[str, object]]:
    """(qualified name, nn.Linear) for every Linear inside a transformer block, in order."""
    for i, layer in enumerate(decoder_layers(model)):
        for name, module in linears_of(layer):
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
