"""Names shared by every layer: the reference variant, the runtimes, ids and path-safe names.

One source of truth, so that a run directory written by the study and read by the
view, the report and the gate agree on every name.
"""
from __future__ import annotations

import hashlib
import re

from auditor.core.errors import AuditorError

#: The uncompressed reference variant.
DENSE = "dense"

#: Runtimes (the `backend` column of every record): torch serves safetensors, llama.cpp serves GGUF.
TORCH = "torch"
LLAMA_CPP = "llama.cpp"
RUNTIMES = (TORCH, LLAMA_CPP)
RUNTIME_FORMAT = {TORCH: "safetensors", LLAMA_CPP: "gguf"}

#: A variant compressed under its own mask seed ([compression] mask_seeds) is named SPEC#seedS.
MASK_SEED_MARK = "#seed"


def with_mask_seed(spec: str, seed: int) -> str:
    """The variant name of `spec` compressed with mask seed `seed`: "random@0.5#seed1"."""
    return f"{spec}{MASK_SEED_MARK}{seed}"


def split_mask_seed(variant: str) -> tuple[str, int | None]:
    """(compressor spec, mask seed) of a variant name; seed None when the name carries none."""
    spec, mark, seed = variant.rpartition(MASK_SEED_MARK)
    if not mark or not seed.isdigit():
        return variant, None
    return spec, int(seed)


def normalize_spec(spec: str) -> str:
    """A compressor spec without whitespace, the one spelling that is parsed, stored and hashed.

    Whitespace means nothing in a spec ("magnitude@0.5 + wanda@0.5" is "magnitude@0.5+wanda@0.5"),
    so it is removed before anything sees the spec.
    """
    return "".join(spec.split())


def variant_id(spec: str) -> str:
    """A short, path-safe id: the spec's readable part plus a hash of the normalised spec."""
    spec = normalize_spec(spec)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in spec)[:48]
    return f"{safe}-{digest}"


def unit_name(variant_spec: str, backend: str) -> str:
    """`<variant_id>__<backend>`: the file stem of an unsharded variant's records and descriptors."""
    return f"{variant_id(variant_spec)}__{backend}"


def safe_name(name: str) -> str:
    """A run or variant name fit to be a path component (no separators, no dot-dot)."""
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "_", name).strip("._")
    if not cleaned:
        raise AuditorError(f"run name {name!r} has no usable characters")
    return cleaned[:100]
