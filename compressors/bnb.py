"""bitsandbytes LLM.int8 (Dettmers et al. 2022) and NF4 (Dettmers et al. 2023, QLoRA) through transformers.

The incoming float model is saved as an HF directory in the work directory and
reloaded with a `BitsAndBytesConfig`, exactly as a user would load it, so the
variant is reloadable. bitsandbytes 0.50 runs both on CPU: LLM.int8 casts the
activations to float16 for its int8 matmul; NF4 dequantizes per block of 64
and computes in float32 here (its optimised CPU kernel needs the optional
`kernels` package, so the reference path is used). transformers quantizes
every nn.Linear except the output head: on Llama-family models that is the
block Linears, the same scope as pruning.

Bits per weight are measured from the saved quantized safetensors: the bytes
of each quantized weight and its statistics (int8: the int8 matrix, the
per-row fp32 scale SCB and a format byte; NF4: the packed 4-bit codes, the
fp32 absmax per block, the code table and the serialized quant state) * 8 /
the number of original weights.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from auditor.artifacts.models import from_folder_by_reads, read_float32_tensors
from auditor.artifacts.safetensors_dir import save_hf_dir, stored_tensors
from compressors.base import CalibrationData, Compressor, StepReport, Variant, chain_spec
from compressors.pruning import require_torch_model
from compressors.scope import block_linears

log = logging.getLogger(__name__)



class _QuietCast(logging.Filter):
    """bitsandbytes logs a warning on EVERY int8 matmul with float32 inputs; the cast to float16
    is documented above, so one line per forward pass is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


logging.getLogger("bitsandbytes.autograd._functions").addFilter(_QuietCast())


def artifact_bits(tensors: dict, original_numel: dict[str, int], total_params: int) -> dict[str, float]:
    """Bits per weight from a saved artifact's tensors (name -> StoredTensor).

    bits_per_weight = 8 * bytes of every tensor stored under a quantized module's name (weight and
    its statistics, bias excluded) / original weights of those modules; bits_per_weight_model =
    8 * bytes of all tensors / parameters of the float model. NaN on empty sets.
    """
    quant_bytes = sum(t.nbytes for name, t in tensors.items()
                      if _owner(name, original_numel) is not None and not name.endswith(".bias"))
    n_quant = sum(original_numel.values())
    total_bytes = sum(t.nbytes for t in tensors.values())
    return {"bits_per_weight": 8 * quant_bytes / n_quant if n_quant else float("nan"),
            "bits_per_weight_model": 8 * total_bytes / total_params if total_params else float("nan")}


def _owner(tensor_name: str, modules: dict[str, int]) -> str | None:
    """The module a stored tensor belongs to ("model.layers.0.mlp.up_proj.weight.absmax" ->
    "model.layers.0.mlp.up_proj"), when it is one of `modules`."""
    parts = tensor_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in modules:
            return prefix
    return None


def _zeros_preserved(quantized_model, zero_masks: dict[str, torch.Tensor]) -> bool:
    """Whether every weight that was exactly zero dequantizes to exactly zero."""
    import bitsandbytes.functional as F

    for name, linear in block_linears(quantized_model):
        mask = zero_masks.get(name)
        if mask is None or not mask.any():
            continue
        weight = linear.weight
        if weight.dtype == torch.int8:  # LLM.int8: w = CB * SCB / 127 per row; zero iff CB == 0
            values = weight.data
        elif hasattr(weight, "quant_state") and weight.quant_state is not None:
            values = F.dequantize_4bit(weight.data, weight.quant_state).reshape(mask.shape)
        else:
            values = weight.data
        if not bool((values[mask.to(values.device)] == 0).all()):
            return False
    return True


class _BnbQuantizer(Compressor):
    family = "quantize"
    bits_label: str
    modifies_model = False  # quantizes a new load of the weights; the input model is only read

    def quantization_config(self):
        raise NotImplementedError

    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None) -> Variant:
        require_torch_model(variant, self.spec)
        model = variant.model
        device = next(model.parameters()).device
        original_numel = {name: linear.weight.numel() for name, linear in block_linears(model)}
        total_params = sum(p.numel() for p in model.parameters())
        # The dense model's float32 folder (Variant.weights_dir) is loaded quantized as it is: no float32 copy
        # is saved or held; its exact zeros are read from the folder, kept only for the layers that have any.
        if variant.weights_dir is not None:
            stored = read_float32_tensors(variant.weights_dir, [f"{n}.weight" for n in original_numel])
            zero_masks = {name.removesuffix(".weight"): mask for name, weight in stored if (mask := weight == 0).any()}
        else:
            zero_masks = {name: (linear.weight == 0).cpu() for name, linear in block_linears(model)}
        start = time.perf_counter()
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bnb-", dir=workdir) as tmp:
            float_dir = variant.weights_dir or save_hf_dir(model, None, Path(tmp) / "float")
            # Read, not memory-mapped: the float32 pages are not held beside the quantized model.
            quantized = from_folder_by_reads(
                float_dir, quantization_config=self.quantization_config(), dtype=torch.float32,
                device_map={"": str(device)}).eval()
            wall_s = time.perf_counter() - start
            artifact = save_hf_dir(quantized, None, Path(tmp) / "quantized")
            measured: dict[str, Any] = artifact_bits(stored_tensors(artifact), original_numel, total_params)
        measured["quantized_modules"] = sum(1 for _, lin in block_linears(quantized)
                                            if lin.weight.dtype in (torch.int8, torch.uint8))
        measured["zeros_preserved"] = _zeros_preserved(quantized, zero_masks)
        params = {"library": "bitsandbytes", "config": self.config_summary(), "device": str(device),
                  "scope": "every nn.Linear except lm_head (transformers' default): the block Linears"}
        report = StepReport(self.spec, self.family, params, wall_s, measured)
        return Variant(chain_spec(variant.spec, self.spec), quantized, None, [*variant.steps, report])

    def config_summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.quantization_config().to_dict().items()
                if k in ("load_in_8bit", "load_in_4bit", "llm_int8_threshold", "bnb_4bit_quant_type",
                         "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage")}


class BnbInt8Quantizer(_BnbQuantizer):
    """LLM.int8: row-wise absmax int8 weights, outlier features (|x| > 6) in float16."""

    method = "bnb-int8"

    def quantization_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True)


class BnbNF4Quantizer(_BnbQuantizer):
    """NF4: 4-bit NormalFloat codes with an fp32 absmax per block of 64 weights (no double quant)."""

    method = "bnb-nf4"

    def quantization_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.float32)
