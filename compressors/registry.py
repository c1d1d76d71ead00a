"""Parse compressor specs ("magnitude@0.5", "rtn@3:g64", "wanda@0.5+gguf-q4_k_m") into Compressors.

Targets are lazy "module:Class" strings so that importing the registry imports
no torch; unknown names get a "did you mean" error listing what is valid.
"""
from __future__ import annotations

import copy
import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from auditor.artifacts.models import read_weights_privately
from auditor.artifacts.safetensors_dir import holds_only_float32
from auditor.core.errors import SpecError
from auditor.core.names import DENSE, normalize_spec
from compressors.base import Variant
from compressors.calibration import DEFAULT_SAMPLES, DEFAULT_SEQ_LEN, load_calibration


@dataclass(frozen=True)
class Entry:
    target: str  # "module:Class"
    family: str
    parse_level: Callable[[str | None, str], tuple[float | None, dict[str, Any]]]
    levels: str  # human-readable description of valid levels


def _sparsity(text: str | None, spec: str) -> tuple[float | None, dict[str, Any]]:
    if text is None:
        raise SpecError(f"{spec!r}: a sparsity is required, e.g. {spec}@0.5 (valid: a number in [0, 1))")
    try:
        value = float(text)
    except ValueError:
        hint = "; N:M patterns are for wanda and wanda-dense only" if ":" in text else ""
        raise SpecError(f"{spec!r}: sparsity {text!r} is not a number (valid: a number in [0, 1)){hint}") from None
    if not 0.0 <= value < 1.0:
        raise SpecError(f"{spec!r}: sparsity {value} is outside [0, 1) (valid: a number in [0, 1))")
    return value, {}


def _no_level(text: str | None, spec: str) -> tuple[float | None, dict[str, Any]]:
    if text is not None:
        raise SpecError(f"{spec!r}: this method takes no level (write {spec.partition('@')[0]})")
    return None, {}


def _sparsity_or_nm(text: str | None, spec: str) -> tuple[float | None, dict[str, Any]]:
    """A sparsity in [0, 1) or an N:M pattern such as 2:4 (N of every M weights pruned)."""
    if text is not None and ":" in text:
        n_text, _, m_text = text.partition(":")
        try:
            n, m = int(n_text), int(m_text)
        except ValueError:
            raise SpecError(f"{spec!r}: N:M pattern {text!r} needs two integers, e.g. 2:4") from None
        if not 0 < n < m <= MAX_NM:
            raise SpecError(f"{spec!r}: N:M needs 0 < N < M <= {MAX_NM}, got {n}:{m}")
        return n / m, {"n": n, "m": m}
    return _sparsity(text, spec)


RTN_BITS = (3, 4, 8)
#: Largest RTN group size: a group is a slice of one weight row (16384 covers every row of the models in
#: scope); an absurd size asks for a padded copy of the matrix that exhausts memory.
MAX_GROUP = 16384
#: Largest M of an N:M pattern (hardware patterns are 2:4 and 4:8).
MAX_NM = 64


def _bits_and_group(text: str | None, spec: str) -> tuple[float | None, dict[str, Any]]:
    """Bits (3, 4 or 8) and an optional group size: rtn@4, rtn@3:g64. Default group 128."""
    if text is None:
        raise SpecError(f"{spec!r}: bits are required, e.g. rtn@4 or rtn@3:g64 (valid bits: {RTN_BITS})")
    bits_text, _, group_text = text.partition(":")
    try:
        bits = int(bits_text)
        group = int(group_text.removeprefix("g")) if group_text else 128
    except ValueError:
        raise SpecError(f"{spec!r}: expected BITS[:gGROUP] such as 3:g64") from None
    if bits not in RTN_BITS:
        raise SpecError(f"{spec!r}: {bits} bits not supported (valid: {', '.join(map(str, RTN_BITS))})")
    if not 0 < group <= MAX_GROUP:
        raise SpecError(f"{spec!r}: group size {group} is outside [1, {MAX_GROUP}]")
    return float(bits), {"group_size": group}


_PRUNE_LEVELS = "sparsity in [0, 1)"
REGISTRY: dict[str, Entry] = {
    "random": Entry("compressors.pruning:RandomPruner", "prune", _sparsity, _PRUNE_LEVELS),
    "magnitude": Entry("compressors.pruning:MagnitudePruner", "prune", _sparsity, _PRUNE_LEVELS),
    "wanda": Entry("compressors.wanda:WandaPruner", "prune", _sparsity_or_nm, _PRUNE_LEVELS + " or N:M"),
    # The reference studies' variant: o_proj/down_proj skipped, norms from the dense model only.
    "wanda-dense": Entry("compressors.wanda:WandaDensePruner", "prune", _sparsity_or_nm, _PRUNE_LEVELS + " or N:M"),
    "rtn": Entry("compressors.rtn:RTNQuantizer", "quantize", _bits_and_group, "3|4|8[:gGROUP]"),
    "bnb-int8": Entry("compressors.bnb:BnbInt8Quantizer", "quantize", _no_level, ""),
    "bnb-nf4": Entry("compressors.bnb:BnbNF4Quantizer", "quantize", _no_level, ""),
    # llama.cpp quantization types, spelled as llama.cpp spells them (lower-cased in specs).
    "gguf-q8_0": Entry("compressors.gguf_quant:GGUFQuantizer", "quantize", _no_level, ""),
    "gguf-q4_k_m": Entry("compressors.gguf_quant:GGUFQuantizer", "quantize", _no_level, ""),
    "gguf-q3_k_m": Entry("compressors.gguf_quant:GGUFQuantizer", "quantize", _no_level, ""),
}


def register(name: str, entry: Entry) -> None:
    REGISTRY[name] = entry


def valid_specs() -> str:
    return "; ".join(f"{name}@<{e.levels}>" if e.parse_level is not _no_level else name
                     for name, e in sorted(REGISTRY.items()))


def parse_one(spec: str):
    """One compressor from "method[@level]" (whitespace anywhere is ignored: `normalize_spec`)."""
    text = normalize_spec(spec)
    name, _, level = text.partition("@")
    entry = REGISTRY.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"unknown compressor {name!r} in {spec!r}.{hint} Valid: {valid_specs()}")
    value, params = entry.parse_level(level if "@" in text else None, text)
    module, _, cls = entry.target.partition(":")
    compressor = getattr(importlib.import_module(module), cls)(value, params)
    compressor.method = name  # one class may serve several specs (gguf-q8_0, gguf-q4_k_m, ...)
    return compressor


def parse_chain(spec: str) -> list:
    """Compressors of a "+"-joined chain, in application order; "dense" is the empty chain.

    Whitespace is ignored (`auditor.core.names.normalize_spec`), so "a@0.5 + b" and "a@0.5+b" are one chain.
    """
    spec = normalize_spec(spec)
    if spec in ("", "dense"):
        return []
    steps = [parse_one(part) for part in spec.split("+")]
    families = [s.family for s in steps]
    if "quantize" in families and "prune" in families[families.index("quantize"):]:
        raise SpecError(f"{spec!r}: prune before quantizing (a chain is prune steps, then one quantize step)")
    if families.count("quantize") > 1:
        # Re-quantizing an already quantized model measures neither format; refuse it.
        raise SpecError(f"{spec!r}: at most one quantize step per chain "
                        "(a chain is prune steps, then one quantize step)")
    return steps


def apply_chain(spec: str, model, *, tokenizer=None, calib: str | None = None, calib_samples: int | None = None,
                calib_seq_len: int | None = None, calib_seed: int = 0, seed: int = 0, workdir=None):
    """Apply the chain `spec` to `model` (modified in place; pass a copy to keep the dense one) and
    return the Variant. Calibration text is loaded only when a step needs it (then `tokenizer` is
    required); its defaults are those of `compressors.calibration`."""
    steps = parse_chain(spec)
    calibration = None
    if any(step.needs_calibration for step in steps):
        if tokenizer is None:
            raise SpecError(f"{spec!r}: needs calibration text, hence a tokenizer")
        calibration = load_calibration(tokenizer, calib, n_samples=calib_samples or DEFAULT_SAMPLES,
                                       seq_len=calib_seq_len or DEFAULT_SEQ_LEN, seed=calib_seed)
    return build_variant(steps, model, calibration=calibration, seed=seed, workdir=workdir, copy_model=False)


def build_variant(steps: Sequence, dense_model, *, calibration=None, seed: int = 0, workdir=None,
                  copy_model: bool = True, blocks=None, weights_dir=None):
    """The Variant made by applying `steps` (from `parse_chain`) in order to the dense model.

    The one way every caller (study units, measurements, `auditor compress`) builds a variant.
    With `copy_model` the steps work on a deep copy, so the dense model stays usable; the empty
    chain returns the dense model itself. With `blocks` (a `BlockWeights`, see `can_stream`) the
    one step builds block by block into the scoring dtype, in place. `weights_dir`: a float32
    safetensors folder equal to the dense model's weights, which a first exporting step reads
    instead of the model (`Variant.weights_dir`).
    """
    if blocks is not None and not can_stream(steps):
        raise ValueError(f"{'+'.join(s.spec for s in steps) or DENSE}: cannot be built block by block")
    model = copy.deepcopy(dense_model) if steps and copy_model else dense_model
    variant = Variant(DENSE, model=model, weights_dir=weights_dir)
    for step in steps:
        extra = {"blocks": blocks} if blocks is not None else {}
        variant = step.apply(variant, calibration=calibration, seed=seed, workdir=workdir, **extra)
    return variant


def build_on_load(steps: Sequence, model, weights: Path, *, calibration=None, seed: int = 0, workdir=None,
                  blocks=None):
    """The Variant `steps` make of `model`, a fresh memory-mapped load of the float32 folder `weights`
    (`auditor.artifacts.models.float32_weights_dir`), in place: no copy of the dense model.

    Streamed (`blocks`), each block is read from the folder as its turn comes. Otherwise a first
    step that changes the weights gets them read into ordinary memory first (pruning the file's
    mapping would keep its pages resident); one that only reads them (a GGUF export) reads the
    folder itself when it holds every weight in float32.
    """
    if blocks is None and steps and steps[0].modifies_model:
        read_weights_privately(model, weights)
    return build_variant(steps, model, calibration=calibration, seed=seed, workdir=workdir, copy_model=False,
                         blocks=blocks, weights_dir=weights if holds_only_float32(weights) else None)


def can_stream(steps: Sequence) -> bool:
    """Whether the chain is one compressor that builds block by block (`Compressor.streams_blocks`):
    a second step would need the first one's float32 result."""
    return len(steps) == 1 and steps[0].streams_blocks
