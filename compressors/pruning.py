"""Unstructured pruning of block Linear layers: the lifecycle around the pure masks."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from compressors.base import CalibrationData, Compressor, StepReport, Variant
from compressors.masks import magnitude_mask, random_mask
from compressors.scope import block_linears

log = logging.getLogger(__name__)


def sparsity_report(model) -> dict[str, Any]:
    """Measured share of exact zeros per block Linear and overall."""
    per_layer, zeros, total = {}, 0, 0
    for name, linear in block_linears(model):
        w = linear.weight
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return {"sparsity_overall": zeros / total if total else 0.0, "sparsity_per_layer": per_layer}


class _MaskPruner(Compressor):
    """Prune each block Linear with a mask computed from that layer's weight alone."""

    family = "prune"

    def __init__(self, level: float | None, params: dict[str, Any] | None = None) -> None:
        super().__init__(level, params)
        self.params.setdefault("group", "layer")

    def mask(self, weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None) -> Variant:
        if variant.model is None:
            raise ValueError(f"{self.spec}: pruning needs a torch model; prune before GGUF quantization")
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, linear in block_linears(variant.model):
                mask = self.mask(linear.weight.data, generator)
                linear.weight.data[mask.to(linear.weight.device)] = 0
        report = StepReport(self.spec, self.family, {**self.params, "sparsity": self.level, "seed": seed},
                            time.perf_counter() - start, sparsity_report(variant.model))
        return Variant(_join(variant.spec, self.spec), variant.model, None, [*variant.steps, report])


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


def _join(base: str, step: str) -> str:
    return step if base == "dense" else f"{base}+{step}"
