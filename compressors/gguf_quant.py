"""GGUF quantization through llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`).

The incoming torch variant (dense or pruned) is written to an F32 GGUF by
llama.cpp's own converter (`auditor.artifacts.gguf_writer`), the
faithful source: llama.cpp quantizes from float32 anyway and converts F16
inputs to float32 first, so an F16 source would only add one more rounding.
The F32 file is deleted after quantizing unless `keep_source` is set.

The variant's measured bits per weight and tensor types come from the
quantized file itself (`auditor.artifacts.gguf_info`); when llama.cpp replaced K-quant
types (rows not a multiple of 256, e.g. SmolLM2's 576), the StepReport's
`fallback` says so and the variant is not called by its nominal bit width.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator

from auditor.artifacts.gguf_info import detect_fallback, read_gguf_info
from auditor.artifacts.gguf_writer import tokenizer_for_model, write_gguf
from auditor.core.errors import ModelError, SpecError
from auditor.core.files import atomic_path
from auditor.core.names import variant_id
from compressors.base import CalibrationData, Compressor, StepReport, Variant, chain_spec

log = logging.getLogger(__name__)

#: spec -> llama.cpp file type, spelled as llama.cpp spells it (LLAMA_FTYPE_MOSTLY_<name>).
FTYPES: dict[str, str] = {
    "gguf-q8_0": "Q8_0",
    "gguf-q4_k_m": "Q4_K_M",
    "gguf-q3_k_m": "Q3_K_M",
}


def quantize_gguf(src: Path, dst: Path, ftype: str, *, n_threads: int = 0) -> list[str]:
    """Run llama.cpp's quantizer: `src` (F32/F16 GGUF) -> `dst` in file type `ftype` (e.g. "Q4_K_M").

    Written under a temporary name and renamed on success. n_threads <= 0 lets
    llama.cpp use every hardware thread. llama.cpp reports one line per tensor;
    that output is captured and logged at DEBUG, and its warning lines are
    returned (e.g. "... 180 of 272 tensor(s) required fallback quantization").
    """
    import llama_cpp

    code = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}", None)
    if code is None:
        raise SpecError(f"llama.cpp has no file type {ftype!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = code
    params.nthread = n_threads
    with atomic_path(dst) as tmp:
        with _captured_output() as captured:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        text = captured.getvalue()  # complete only once the block has exited
        log.debug("llama.cpp quantizer output:\n%s", text)
        if rc != 0 or not tmp.is_file():
            raise ModelError(f"{src}: llama.cpp could not quantize to {ftype} (return code {rc}): {text[-500:]}")
    return [line.strip() for line in text.splitlines() if "WARNING" in line]


@contextlib.contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    """Collect llama.cpp's output for the block: C-level writes to fds 1/2 and its Python log callback.

    llama-cpp-python forwards llama.cpp's log lines to `sys.stderr` when its
    "llama-cpp-python" logger allows the level, so that logger is opened to
    DEBUG and sys.stdout/stderr point at a buffer; text the C library writes to
    the file descriptors directly goes to a temp file. Both end up in the
    yielded buffer when the block exits.
    """
    from llama_cpp._logger import logger as llama_logger  # importing it installs the Python log callback

    sys.stdout.flush()
    sys.stderr.flush()
    collected = io.StringIO()
    old_level = llama_logger.level
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            llama_logger.setLevel(logging.DEBUG)
            with contextlib.redirect_stdout(collected), contextlib.redirect_stderr(collected):
                yield collected
        finally:
            llama_logger.setLevel(old_level)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            collected.write(sink.read())
            collected.seek(0)


class GGUFQuantizer(Compressor):
    """gguf-q8_0 / gguf-q4_k_m / gguf-q3_k_m: a torch variant -> a GGUF file served by llama.cpp.

    params (optional): "tokenizer" (the model's HF tokenizer; by default found
    from the model's name_or_path, see
    `auditor.artifacts.gguf_writer.tokenizer_for_model`), "n_threads" (int),
    "keep_source" (bool: keep the intermediate F32 GGUF).
    """

    method: ClassVar[str] = "gguf-q4_k_m"  # set per spec by the registry
    family: ClassVar[str] = "quantize"  # type: ignore[assignment]
    modifies_model: ClassVar[bool] = False  # reads the torch weights (or their folder) to export them

    @property
    def ftype(self) -> str:
        try:
            return FTYPES[self.method]
        except KeyError:
            raise SpecError(f"{self.method!r}: not a GGUF quantization spec; valid: {', '.join(FTYPES)}") from None

    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None) -> Variant:
        ftype = self.ftype
        if variant.model is None:
            raise SpecError(f"{self.spec}: needs a torch model; {variant.spec!r} is already a GGUF "
                            "(one GGUF quantization per chain, after any pruning)")
        start = time.perf_counter()
        spec = chain_spec(variant.spec, self.spec)
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="auditor-gguf-"))
            log.warning("%s: no workdir given; writing the GGUF under %s", spec, workdir)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        tokenizer = self.params.get("tokenizer")
        if tokenizer is None:
            tokenizer = tokenizer_for_model(variant.model)
        stem = variant_id(spec)
        source = workdir / f"{stem}.source-f32.gguf"
        out = workdir / f"{stem}.gguf"
        exported = write_gguf(variant.model, source, tokenizer=tokenizer, outtype="f32", name=spec,
                              weights_dir=variant.weights_dir)
        try:
            warnings = quantize_gguf(source, out, ftype, n_threads=int(self.params.get("n_threads", 0)))
        finally:
            if not self.params.get("keep_source"):
                source.unlink(missing_ok=True)
        info = read_gguf_info(out)
        fallback = detect_fallback(info, ftype)
        if fallback is not None:
            log.warning("%s: %s", spec, fallback.describe())
        measured: dict[str, Any] = {
            **info.summary(),
            "requested_type": ftype,
            "source_outtype": "f32",
            "tokenizer_origin": exported.tokenizer_origin,
            "converter": exported.converter,
            # Matrices outside the blocks keep llama.cpp's own choice of type (e.g. token_embd).
            "non_block_tensor_types": {t.name: t.type_name for t in info.tensors
                                       if not t.is_block_matrix and len(t.shape) >= 2},
            "llama_cpp_warnings": warnings,
            "fallback": None if fallback is None else {
                "note": fallback.describe(), "types": fallback.types, "row_widths": list(fallback.row_widths),
                "n_tensors": len(fallback.tensors), "share_of_weights": fallback.share_of_weights,
            },
        }
        params = {k: v for k, v in self.params.items() if k != "tokenizer"}
        report = StepReport(self.spec, self.family, {**params, "ftype": ftype}, time.perf_counter() - start, measured)
        # The torch model is not carried on: this variant is served by llama.cpp from `out`.
        return Variant(spec, model=None, gguf_path=out, steps=[*variant.steps, report])
