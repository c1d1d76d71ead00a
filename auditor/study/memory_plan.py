"""Predicted peak memory of each unit of a run, and the units a machine cannot hold (issue 28).

A step's predicted peak is the bound of docs/memory.md ("The bound"), which the CI scaling
test (tests/study/test_memory_scaling.py) holds every step to:

    peak = FIXED_BYTES + WEIGHT_FACTOR x (bytes per parameter of the step's dtype) x parameters + extra

- FIXED_BYTES = 1.5 GB: Python, torch, transformers, the tokenizer and the prompts. Measured at
  0.5 GB on SmolLM2-135M (docs/memory.md, "Measured": the constant that dominates there) and
  0.6-0.9 GB in the review's fits (../shared/reviews/memory.md); the bound rounds it up.
- WEIGHT_FACTOR = 1.25: the weights resident in the step's dtype plus a quarter for
  activations, mask temporaries and allocator slack (the slope the scaling test asserts).
- the dtype: a step that holds float32 weights (writing the float32 folder of a bfloat16
  checkpoint, building a compressed variant whole, the float32 precision baseline, a GGUF
  export) counts 4 bytes per parameter; a step that scores in bfloat16/float16, or builds a
  variant block by block into that dtype (`compressors.registry.can_stream`), counts 2; a
  llama.cpp step maps its GGUF, counted as F16 (2 bytes, the largest type a run scores; on an AMX
  CPU ggml also copies a quantized file's weights into its AMX buffer, `llama_amx`: Qwen 1.5B Q8_0
  scoring peaked at 4.36 GB against 2.79 GB with the buffers off, inside this step's 5.94 GB). A GGUF
  source is dequantized into its float32 folder tensor by tensor: one shard (SHARD_BYTES).
- extra: what does not scale with the weights. Wanda's calibration keeps the hidden states of
  every window in and out of a block (2 x n_samples x seq_len x hidden float32 values);
  perplexity in torch computes the head on slices of HEAD_CHUNK_BYTES of float32 logits, each
  costing the model-dtype logits plus BYTES_PER_LOGIT (the float32 copy and its log-softmax,
  measured at 8.0 bytes per logit at three vocabularies in the review); llama.cpp keeps float32
  logits for every position of the window.

The prediction is an upper bound by construction (the bound's constant and factor), so a unit it
refuses may in fact fit; a unit it admits should not run out of memory unless other processes
take the machine's memory meanwhile. Pure functions: the caller gives the sizes and the memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from auditor.analysis.baselines import DENSE_GGUF_F16
from auditor.artifacts.gguf_float32 import SHARD_BYTES
from auditor.core.names import DENSE, LLAMA_CPP
from auditor.data.rundir import MEASURE, PPL, Unit
from auditor.scoring.perplexity import HEAD_CHUNK_BYTES
from auditor.study.runner import unit_dtype
from auditor.study.spec import chain_of
from compressors.registry import can_stream

if TYPE_CHECKING:
    from auditor.study.model_shape import ModelShape
    from auditor.study.runner import RunPlan

GB = 1e9
#: Python, torch, transformers, tokenizer, prompts: docs/memory.md's bound constant (measured ~0.5 GB).
FIXED_BYTES = 1.5e9
#: Resident weights plus a quarter for activations and allocator slack: docs/memory.md's bound factor.
WEIGHT_FACTOR = 1.25
#: Bytes per parameter of the weights a step holds, by dtype ("gguf": a llama.cpp runtime mapping its file).
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2, "gguf": 2}
#: Float32 logits copy + log-softmax output per logit of a head slice (review: 8.0 at V = 49k, 152k, 262k).
BYTES_PER_LOGIT = 8


@dataclass(frozen=True)
class StepPeak:
    """One step of a unit and its predicted peak resident memory."""

    step: str  # e.g. "load (float32 folder)", "build wanda@0.5", "score bfloat16", "perplexity bfloat16"
    dtype: str  # the dtype of the weights the step holds (BYTES_PER_PARAM's keys)
    peak_bytes: float


@dataclass(frozen=True)
class UnitMemory:
    """A unit's steps and the one that peaks highest."""

    unit: Unit
    steps: tuple[StepPeak, ...]

    @property
    def peak(self) -> StepPeak:
        return max(self.steps, key=lambda s: s.peak_bytes)


def step_peak_bytes(n_params: int, dtype: str, extra_bytes: float = 0.0) -> float:
    """FIXED_BYTES + WEIGHT_FACTOR x bytes per parameter of `dtype` x n_params + extra_bytes (module docstring)."""
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"no bytes-per-parameter for dtype {dtype!r}; known: {', '.join(BYTES_PER_PARAM)}")
    return FIXED_BYTES + WEIGHT_FACTOR * BYTES_PER_PARAM[dtype] * n_params + extra_bytes


def head_slice_bytes(vocab: int, window: int, dtype: str) -> float:
    """Transient bytes of one perplexity head slice in torch: rows x vocab x (model-dtype logits + 8).

    Rows = HEAD_CHUNK_BYTES of float32 logits (ChunkedHeadScorer.positions_per_chunk), at most the window.
    """
    rows = min(window, max(1, HEAD_CHUNK_BYTES // (4 * vocab)))
    return rows * vocab * (BYTES_PER_PARAM[dtype] + BYTES_PER_LOGIT)


def largest_tensor_bytes(vocab: int, hidden: int) -> float:
    """Three float32 copies of the largest tensor, the embedding: what a tensor-at-a-time step holds
    (a dequantization's or a quantizer's input, output and work buffers)."""
    return 3 * 4 * vocab * hidden


def gguf_load_bytes(vocab: int, hidden: int) -> float:
    """What dequantizing a GGUF into its float32 folder holds besides the file's map: one pending shard
    and the dequantization temporaries of the largest tensor."""
    return SHARD_BYTES + largest_tensor_bytes(vocab, hidden)


def calibration_bytes(tokens: int, hidden: int) -> float:
    """Wanda's cached block inputs and outputs for every calibration token (n_samples x seq_len), float32."""
    return 2 * 4 * tokens * hidden


def unit_steps(unit: Unit, *, dtype: str, n_params: int, vocab: int, hidden: int, source_float32: bool,
               calibration_tokens: int = 0, window: int = 0, source_gguf: bool = False,
               gguf_bytes: int = 0) -> tuple[StepPeak, ...]:
    """The steps a fresh worker runs for `unit` and their predicted peaks.

    `dtype` is the unit's torch compute dtype (`unit_dtype`); `source_float32`: the source is a float32
    (or quantized) HF directory, memory-mapped as it is, else the worker first writes its float32
    folder (a float32 step; for a GGUF, `source_gguf` of `gguf_bytes`, written tensor by tensor with the
    file memory-mapped). Every unit counts that
    load step: any unit may be the first of its worker.
    `calibration_tokens`: n_samples x seq_len when the unit's chain calibrates (Wanda), else 0; `window`:
    the perplexity window (tokens) of a perplexity unit.
    """
    def step(name: str, step_dtype: str, extra: float = 0.0) -> StepPeak:
        return StepPeak(name, step_dtype, step_peak_bytes(n_params, step_dtype, extra))

    steps = []
    if source_gguf:  # dequantized tensor by tensor into the folder: one shard held at a time
        steps.append(StepPeak("load (GGUF to float32 folder, by tensor)", "float32",
                              FIXED_BYTES + gguf_bytes + WEIGHT_FACTOR * gguf_load_bytes(vocab, hidden)))
    elif not source_float32:
        steps.append(step("load (float32 folder)", "float32"))
    def from_folder(name: str) -> StepPeak:
        # A GGUF export straight from the float32 folder (compressors.registry.build_on_load) holds no
        # weights: llama.cpp's converter and quantizer work a tensor at a time.
        return StepPeak(f"{name} (from the float32 folder)", "float32",
                        FIXED_BYTES + WEIGHT_FACTOR * largest_tensor_bytes(vocab, hidden))

    chain = chain_of(unit.spec)
    if unit.spec != DENSE:
        # Built block by block into the scoring dtype when its first unit is torch in a cheaper dtype
        # (UnitWorker._variant); a GGUF quantization of the dense model from its folder; otherwise
        # compressed whole in float32. bitsandbytes loads the folder quantized with plain reads (5.3 GB at
        # 1.78B) but stays a float32 step: measured at one size only, the float32 bound is its upper bound.
        streamed = unit.backend != LLAMA_CPP and dtype != "float32" and can_stream(chain)
        if streamed:
            steps.append(step(f"build {unit.spec} (by block)", dtype, calibration_bytes(calibration_tokens, hidden)))
        elif len(chain) == 1 and chain[0].method.startswith("gguf-"):
            steps.append(from_folder(f"build {unit.spec}"))
        else:
            steps.append(step(f"build {unit.spec}", "float32", calibration_bytes(calibration_tokens, hidden)))
    elif unit.variant == DENSE_GGUF_F16:
        steps.append(from_folder("export GGUF F16"))
    # the measurement unit holds one float32 model at a time, built or loaded in a worker process
    what = "perplexity" if unit.kind == PPL else "measure" if unit.kind == MEASURE else "score"
    if unit.backend == LLAMA_CPP:
        extra = 4.0 * window * vocab if unit.kind == PPL else 0.0
        steps.append(step(f"{what} llama.cpp", "gguf", extra))
    else:
        extra = head_slice_bytes(vocab, window, dtype) if unit.kind == PPL else 0.0
        steps.append(step(f"{what} {dtype}", dtype, extra))
    return tuple(steps)


def plan_memory(plan: RunPlan, shape: ModelShape) -> list[UnitMemory]:
    """Every unit of `plan` with its steps' predicted peaks, from the model's shape (no weights read)."""
    ctx = plan.context
    # float32_weights_dir: a float32 (or quantized) HF directory is its own float32 folder; anything else is
    # written once as one (auditor.artifacts.models).
    source_float32 = ctx.source.kind == "hf" and ctx.source.reference_precision not in ("bfloat16", "float16")
    calibration_tokens = ctx.calibration.n_samples * ctx.calibration.seq_len
    window = ctx.perplexity.max_length if ctx.perplexity is not None else 0
    return [UnitMemory(u, unit_steps(
        u, dtype=unit_dtype(u, ctx.dtype), n_params=shape.n_params, vocab=shape.vocab, hidden=shape.dims.hidden,
        source_float32=source_float32, source_gguf=ctx.source.kind == "gguf", window=window,
        gguf_bytes=ctx.source.path.stat().st_size if ctx.source.kind == "gguf" else 0,
        calibration_tokens=calibration_tokens if any(s.needs_calibration for s in chain_of(u.spec)) else 0))
        for u in plan.units]


def refusals(units: Sequence[UnitMemory], available_bytes: float, *, limit_given: bool = False) -> list[str]:
    """One line per unit whose predicted peak exceeds `available_bytes` (the machine's, or the user's
    --memory-limit when `limit_given`), naming the unit and its step."""
    where = (f"--memory-limit is {available_bytes / GB:.1f} GB" if limit_given else
             f"this machine has {available_bytes / GB:.1f} GB available")
    return [f"unit {m.unit.name} needs ~{m.peak.peak_bytes / GB:.1f} GB at step '{m.peak.step}' (predicted); "
            f"{where}; drop it or use --memory-limit" for m in units if m.peak.peak_bytes > available_bytes]


def available_memory_bytes() -> float:
    """The memory this machine can give a new process now: MemAvailable (/proc/meminfo, via psutil)."""
    import psutil

    return float(psutil.virtual_memory().available)


def format_memory(units: Sequence[UnitMemory], available_bytes: float, limit_given: bool) -> str:
    """The --plan table: each unit's steps with their predicted peaks, the highest marked."""
    where = "--memory-limit" if limit_given else "available now"
    lines = [f"predicted peak memory per step (GB; docs/memory.md's bound; {where}: {available_bytes / GB:.1f} GB)",
             f"{'unit':<58} {'peak GB':>8}  steps"]
    for m in units:
        steps = ", ".join(f"{s.step} {s.peak_bytes / GB:.1f}" for s in m.steps)
        flag = "  REFUSED" if m.peak.peak_bytes > available_bytes else ""
        lines.append(f"{m.unit.name:<58} {m.peak.peak_bytes / GB:>8.1f}  {steps}{flag}")
    return "\n".join(lines)
