"""Choose and build the scoring backend for a variant; runtimes are imported only when used.

torch scores variants that hold a torch model. llama.cpp scores GGUF files: a
gguf-* variant's own file, or a torch variant exported to GGUF F16 in its work
folder (dense and pruned weights go to GGUF as F16). A bitsandbytes model has no
GGUF form and a GGUF-only variant has no torch model: asking for either is an
AuditorError naming the variant.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from auditor.artifacts.gguf_writer import write_gguf
from auditor.artifacts.precision import FLOAT32, cast_for_scoring
from auditor.core.errors import AuditorError
from auditor.core.names import LLAMA_CPP, TORCH
from auditor.scoring.backends.base import ScoringBackend
from auditor.scoring.backends.llama_backend import LlamaCppBackend
from auditor.scoring.backends.torch_backend import TorchBackend

log = logging.getLogger(__name__)

_MODULES = {TORCH: ("auditor.scoring.backends.torch_backend",),
            LLAMA_CPP: ("auditor.scoring.backends.llama_backend", "auditor.artifacts.gguf_writer", "llama_cpp")}


def available(backend: str) -> bool:
    """Whether the modules a backend needs are importable (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in _MODULES[backend])


def make_backend(variant, backend: str, *, tokenizer, batch_size: int, pad_id: int, workdir: Path,
                 n_threads: int | None = None, dtype: str = FLOAT32, in_place: bool = False) -> ScoringBackend:
    """The backend `backend` ("torch" | "llama.cpp") serving `variant` (a compressors.base.Variant).

    torch computes in `dtype`: a cast copy of the float32 variant, or with `in_place` the
    variant's own model cast tensor by tensor (no second copy; its float32 weights are gone
    after, so only a caller that needs them no more passes it); bitsandbytes keeps its own
    path. llama.cpp computes in the GGUF's own types whatever `dtype` says.
    """
    if backend == TORCH:
        if variant.model is None:
            raise AuditorError(f"{variant.spec}: exists only as GGUF ({variant.gguf_path}); "
                               "it can be scored by llama.cpp only")

        model = cast_for_scoring(variant.model, dtype, in_place=in_place)
        return TorchBackend(model, batch_size=batch_size, pad_id=pad_id)
    if backend == LLAMA_CPP:
        if not available(LLAMA_CPP):
            raise AuditorError(f"{variant.spec}: the llama.cpp backend needs llama-cpp-python and the "
                               "auditor's GGUF modules, which are not importable here")
        path = variant.gguf_path
        if path is None:
            path = export_f16(variant, tokenizer, Path(workdir))

        kwargs = {"n_threads": n_threads} if n_threads else {}
        return LlamaCppBackend(Path(path), **kwargs)
    raise AuditorError(f"unknown backend {backend!r}; valid: {TORCH}, {LLAMA_CPP}")


def export_f16(variant, tokenizer, workdir: Path) -> Path:
    """Write a torch variant to `workdir`/model-f16.gguf (reused when already there)."""
    path = workdir / "model-f16.gguf"
    if not path.is_file():
        exported = write_gguf(variant.model, path, tokenizer=tokenizer, outtype="f16", name=variant.spec,
                              weights_dir=variant.weights_dir)
        log.info("exported %s to %s (%d bytes)", variant.spec, exported.path, exported.size_bytes)
    return path
