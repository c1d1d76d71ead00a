"""Compute precision: which floating-point type a torch model scores in, and the one cast into it.

Weights are loaded, compressed and quantized in float32 (masks, Wanda's scores,
RTN's groups: compressors compute from the float32 dense weights); only the
finished model is cast to the run's `dtype` for scoring, so a mask never
depends on the dtype. `auto` is bfloat16 where the hardware multiplies it
natively (a CPU with AVX512_BF16 or AMX, a CUDA GPU with bf16), float32
elsewhere: on a CPU without those units bfloat16 is emulated and slower than
float32.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

from auditor.core.errors import AuditorError

log = logging.getLogger(__name__)

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
FLOAT16 = "float16"
AUTO = "auto"
#: Values of the `dtype` setting (study file `[execution] dtype`, `--dtype`).
DTYPES = (FLOAT32, BFLOAT16, FLOAT16, AUTO)
#: CPU feature flags (as /proc/cpuinfo spells them) that make bfloat16 matmuls native.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The `flags` of the first CPU in /proc/cpuinfo (empty where the file does not exist)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """AVX512_BF16 or AMX-BF16 in the CPU flags (falling back to torch's reported CPU capability)."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return any(f in flags for f in BF16_CPU_FLAGS)
    import torch

    return "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()


def resolve_dtype(name: str, device: str = "cpu") -> str:
    """The concrete dtype for `name` on `device`: `auto` becomes bfloat16 or float32 (module docstring)."""
    if name not in DTYPES:
        raise AuditorError(f"dtype {name!r}: valid values are {', '.join(DTYPES)}")
    if name != AUTO:
        return name
    if device.startswith("cuda"):
        import torch

        return BFLOAT16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else FLOAT32
    return BFLOAT16 if cpu_has_native_bf16() else FLOAT32


def torch_dtype(name: str):
    """torch.float32 / bfloat16 / float16 for a resolved dtype name."""
    import torch

    if name not in (FLOAT32, BFLOAT16, FLOAT16):
        raise AuditorError(f"dtype {name!r} is not a concrete torch dtype (resolve `auto` first)")
    return getattr(torch, name)


def is_bnb_quantized(model) -> bool:
    """Whether bitsandbytes holds the model's linears (those run their own kernels and cannot be cast)."""
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False)
                or getattr(getattr(model, "config", None), "quantization_config", None))


def model_compute_dtype(model) -> str:
    """The dtype a torch model computes in: its embeddings' type ("float32", "bfloat16", ...)."""
    return str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")


def cast_for_scoring(model, dtype: str):
    """`model` in `dtype` for scoring: the model itself when already there, else a cast copy.

    The copy leaves the float32 model intact for the next variant's compression and
    for the GGUF export. A bitsandbytes model keeps its own compute path (int8
    matmuls with float16 activations, NF4 dequantized to float32) and is returned
    as it is.
    """
    if is_bnb_quantized(model):
        if dtype != FLOAT32:
            log.info("bitsandbytes model kept in its own compute dtype (%s), not cast to %s",
                     model_compute_dtype(model), dtype)
        return model
    if model_compute_dtype(model) == dtype:
        return model
    return copy.deepcopy(model).to(torch_dtype(dtype))
