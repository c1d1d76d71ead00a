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


def cast_for_scoring(model, dtype: str, *, in_place: bool = False):
    """`model` in `dtype` for scoring: the model itself when already there, else cast.

    With `in_place` the model's own tensors are cast one by one (`Module.to`), each
    float32 storage freed as its bfloat16 replacement is made: for a variant nothing
    needs in float32 afterwards. Without it a cast copy is made (`cast_copy`) and the
    float32 model is left intact for the next variant's compression, the float32
    precision baseline and the GGUF export. A bitsandbytes model keeps its own compute
    path (int8 matmuls with float16 activations, NF4 dequantized to float32) and is
    returned as it is.
    """
    if is_bnb_quantized(model):
        if dtype != FLOAT32:
            log.info("bitsandbytes model kept in its own compute dtype (%s), not cast to %s",
                     model_compute_dtype(model), dtype)
        return model
    if model_compute_dtype(model) == dtype:
        return model
    if in_place:
        return model.to(torch_dtype(dtype))
    return cast_copy(model, dtype)


def cast_copy(model, dtype: str):
    """A copy of `model` with its floating-point parameters and buffers in `dtype`; `model` is unchanged.

    The same model `copy.deepcopy(model).to(dtype)` gives, value for value, without the
    float32 copy in between: each floating tensor is cast straight from the original
    (deepcopy's memo hands the cast tensor to the copy), so the peak is the original
    plus its cast, not twice the original. Tied weights stay tied (one memo entry per
    tensor object); everything else (config, non-floating buffers) is deep-copied.
    """
    import torch

    target = torch_dtype(dtype)
    memo: dict[int, object] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if id(tensor) in memo or not tensor.is_floating_point():
            continue
        cast = tensor.detach().to(target)
        if isinstance(tensor, torch.nn.Parameter):
            cast = torch.nn.Parameter(cast, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = cast
    copied = copy.deepcopy(model, memo)
    return copied.to(target)  # a no-op for the tensors cast above; casts what `.to` would and memo missed
