"""Group-wise affine round-to-nearest quantization of block Linears ("fake-quant" torch variant).

Weights are quantized with `compressors.quantize_math` and the dequantized
values stored back in float32, so the variant runs in torch like any other;
its size is accounted for as if the codes, scales and zero-points were stored.
Same scope as pruning: the Linears inside the transformer blocks.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from compressors.base import CalibrationData, Compressor, StepReport, Variant, chain_spec
from compressors.pruning import BLOCK_SCOPE, require_torch_model
from compressors.quantize_math import dequantize_affine, group_error_bound, quantize_affine
from compressors.scope import block_linears, untouched_report

DEFAULT_GROUP_SIZE = 128


def model_bits_per_weight(model, quantized_bits: dict[str, int]) -> float:
    """(storage bits of quantized weights + element bits of every other parameter) / parameters.

    Parameters are counted once (tied embeddings are one tensor). NaN for a model without parameters.
    """
    total_bits, total_params = 0, 0
    for name, param in model.named_parameters():
        module_name = name.removesuffix(".weight")
        if name.endswith(".weight") and module_name in quantized_bits:
            total_bits += quantized_bits[module_name]
        else:
            total_bits += param.numel() * param.element_size() * 8
        total_params += param.numel()
    return total_bits / total_params if total_params else float("nan")


class RTNQuantizer(Compressor):
    """rtn@BITS[:gGROUP]: asymmetric min-max RTN per group of GROUP consecutive inputs of a row."""

    method = "rtn"
    family = "quantize"

    def __init__(self, level: float | None, params: dict[str, Any] | None = None) -> None:
        super().__init__(level, params)
        self.params.setdefault("group_size", DEFAULT_GROUP_SIZE)

    def _level_text(self) -> str:
        group = self.params["group_size"]
        return f"{self.level:g}" if group == DEFAULT_GROUP_SIZE else f"{self.level:g}:g{group}"

    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None) -> Variant:
        require_torch_model(variant, self.spec)
        bits, group_size = int(self.level), int(self.params["group_size"])
        start = time.perf_counter()
        quantized_bits: dict[str, int] = {}
        n_weights, zeros_before, zeros_kept, worst_ratio = 0, 0, 0, 0.0
        with torch.no_grad():
            for name, linear in block_linears(variant.model):
                w = linear.weight.data
                qt = quantize_affine(w, bits, group_size)
                dq = dequantize_affine(qt).to(dtype=w.dtype, device=w.device)
                # Self-check against the theoretical bound |w - dq| <= scale/2 of the group.
                ratio = ((w.float() - dq.float()).abs() / group_error_bound(qt).to(w.device)).max().item()
                worst_ratio = max(worst_ratio, ratio)
                was_zero = w == 0
                zeros_before += int(was_zero.sum())
                zeros_kept += int((dq[was_zero] == 0).sum())
                w.copy_(dq)
                quantized_bits[name] = qt.storage_bits
                n_weights += qt.n_weights
        wall_s = time.perf_counter() - start
        measured = {
            "bits_per_weight": sum(quantized_bits.values()) / n_weights if n_weights else float("nan"),
            "bits_per_weight_model": model_bits_per_weight(variant.model, quantized_bits),
            "quantized_weights": n_weights,
            "zeros_before": zeros_before,
            "zeros_preserved": zeros_kept == zeros_before,
            "error_max_over_bound": worst_ratio,
            **untouched_report(variant.model),
        }
        params = {"bits": bits, "group_size": group_size, "scheme": "asymmetric min-max, range includes 0",
                  "scale_zero_storage": "float16", "storage": "dequantized float32 weights (fake-quant)",
                  "scope": BLOCK_SCOPE}
        report = StepReport(self.spec, self.family, params, wall_s, measured)
        return Variant(chain_spec(variant.spec, self.spec), variant.model, None, [*variant.steps, report])
