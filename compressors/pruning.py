"""Unstructured pruning of block Linear layers: the lifecycle around the pure masks."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from auditor.core.errors import SpecError
from compressors.base import CalibrationData, Compressor, StepReport, Variant, chain_spec
from compressors.masks import magnitude_mask, random_mask
from compressors.scope import block_linears, each_block, linears_of, untouched_report

log = logging.getLogger(__name__)

BLOCK_SCOPE = "Linears inside the transformer blocks (attention and MLP); embeddings, lm_head and norms untouched"


def sparsity_report(model, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Measured share of exact zeros per block Linear and overall (zeros / weights, over `names`
    when given, else over every block Linear). NaN overall when no weights are counted."""
    wanted = set(names) if names is not None else None
    per_layer, zeros, total = {}, 0, 0
    for name, linear in block_linears(model):
        w = linear.weight
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        if wanted is None or name in wanted:
            zeros, total = zeros + z, total + w.numel()
    return {"sparsity_overall": zeros / total if total else float("nan"), "sparsity_per_layer": per_layer}


def max_deviation_weights(per_layer: dict[str, float], target: float, group_sizes: dict[str, int]) -> float:
    """max over layers of |measured - target| * group size: how many weights per comparison group
    the achieved sparsity is off the target. Exact counts give at most 0.5 (k = round(s * size))."""
    deviations = [abs(per_layer[name] - target) * size for name, size in group_sizes.items()]
    return max(deviations) if deviations else float("nan")


def prune_(linear, mask: torch.Tensor) -> None:
    """Zero the masked weights in place; every other weight keeps its exact bits."""
    linear.weight.data[mask.to(linear.weight.device)] = 0


def pruned_report(model, level: float, group_sizes: dict[str, int]) -> dict[str, Any]:
    """Measured sparsity (all block Linears and the pruned ones) and its deviation from target."""
    measured = sparsity_report(model)
    measured["sparsity_requested"] = level
    measured["sparsity_pruned_layers"] = sparsity_report(model, group_sizes)["sparsity_overall"]
    deviation = max_deviation_weights(measured["sparsity_per_layer"], level, group_sizes)
    measured["sparsity_max_deviation_weights_per_group"] = deviation
    measured.update(untouched_report(model))
    # Share of exact zeros over every parameter: what the model as a whole has lost.
    measured["sparsity_model"] = (measured["sparsity_overall"] * measured["block_linear_parameters"]
                                  / measured["total_parameters"]) if measured["total_parameters"] else float("nan")
    if deviation > 1.0:
        # Possible only when the input already held exact zeros beyond the mask.
        log.warning("measured sparsity is %.2f weights per group off the target %.3f", deviation, level)
    return measured


def require_torch_model(variant: Variant, spec: str) -> None:
    if variant.model is None:
        raise SpecError(f"{spec}: needs a torch model; put it before any GGUF step in the chain")


class _MaskPruner(Compressor):
    """Prune each block Linear with a mask computed from that layer's weight alone."""

    family = "prune"
    streams_blocks = True  # each mask reads one weight matrix: the build can go block by block

    def __init__(self, level: float | None, params: dict[str, Any] | None = None) -> None:
        super().__init__(level, params)
        self.params.setdefault("group", "layer")

    def mask(self, weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None, blocks=None) -> Variant:
        require_torch_model(variant, self.spec)
        start = time.perf_counter()
        # One generator for the whole model, advanced layer by layer in block order: the same seed
        # gives the same masks.
        generator = torch.Generator().manual_seed(seed)
        group_sizes = {}
        with torch.no_grad():
            for i, block in each_block(variant.model, blocks):
                for name, linear in linears_of(block):
                    prune_(linear, self.mask(linear.weight.data, generator))
                    w = linear.weight
                    group_sizes[f"model.layers.{i}.{name}"] = w.shape[1] if self.params["group"] == "row" else w.numel()
        wall_s = time.perf_counter() - start
        report = StepReport(self.spec, self.family, {**self.params, "sparsity": self.level, "seed": seed,
                                                     "scope": BLOCK_SCOPE},
                            wall_s, pruned_report(variant.model, self.level, group_sizes))
        return Variant(chain_spec(variant.spec, self.spec), variant.model, None, [*variant.steps, report])


class MagnitudePruner(_MaskPruner):
    """Smallest |W| per weight matrix."""

    method = "magnitude"

    def mask(self, weight, generator):
        return magnitude_mask(weight, self.level, self.params["group"])


class RandomPruner(_MaskPruner):
    """A seeded uniform mask per layer: the floor any informed method should beat."""

    method = "random"

    def mask(self, weight, generator):
        return random_mask(weight, self.level, generator, self.params["group"])
