"""Writing a variant in each storage format it has: safetensors directory, GGUF file, sparse layouts.

`auditor export` writes one; `auditor measure` writes every applicable one and measures it.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from auditor.artifacts.architecture import check_gguf_convertible
from auditor.artifacts.gguf_info import read_gguf_info
from auditor.artifacts.gguf_writer import tokenizer_for_model, write_gguf
from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.artifacts.safetensors_dir import save_hf_dir
from auditor.artifacts.sparse import write_sparse_dir
from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.core.names import split_mask_seed
from compressors.calibration import load_calibration
from compressors.registry import build_variant, parse_chain

log = logging.getLogger(__name__)


FORMATS: tuple[str, ...] = ("safetensors", "gguf", "sparse")


NO_GGUF_NOTE = "bitsandbytes model: no GGUF form (llama.cpp has no bnb types); safetensors only"


#: rtn@BITS -> the registry's real format of the same bits (auditor.view.deployable's docstring).
NEAREST_FORMAT = {"8": "gguf-q8_0", "4": "gguf-q4_k_m", "3": "gguf-q3_k_m"}


def spec_methods(spec: str) -> list[tuple[str, str]]:
    """(method, level text) of each step of a spec ("wanda@0.5+rtn@4:g64" -> [("wanda", "0.5"), ("rtn", "4:g64")])."""
    return [(part.strip().partition("@")[0], part.strip().partition("@")[2]) for part in spec.split("+")]


def nearest_format(variant: str) -> str | None:
    """The nearest real format of a simulated variant (its spec with the RTN step replaced by the llama.cpp
    type of the same bits), or None when the variant has a deployable file: RTN is fake quantization, its
    rounded weights are stored as float32 and no file holds them in B bits (auditor.view.deployable)."""
    steps = spec_methods(split_mask_seed(variant)[0])
    last_rtn = max((i for i, (m, _) in enumerate(steps) if m == "rtn"), default=None)
    if last_rtn is None or any(m.startswith(("gguf-", "bnb-")) for m, _ in steps[last_rtn + 1:]):
        return None
    bits = steps[last_rtn][1].partition(":")[0]
    real = NEAREST_FORMAT.get(bits, NEAREST_FORMAT["4"])  # the registry allows 3, 4 and 8 bits
    parts = [f"{m}@{lvl}" if lvl else m for m, lvl in steps[:last_rtn]] + [real]
    return "+".join(parts)


def check_zstd_level(level: int) -> None:
    if not 1 <= level <= 22:
        raise AuditorError(f"zstd_level {level}: valid levels are 1 (fast) to 22 (smallest)")


def artifact_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def gguf_figures(path: Path) -> tuple[str, float]:
    """(file type, 8 * file bytes / elements) from auditor.artifacts.gguf_info."""
    info = read_gguf_info(path)
    return info.file_type, info.bits_per_weight_file


def is_bnb(model) -> bool:
    """A transformers model quantized at load time (bitsandbytes): it has no float weights to export."""
    return getattr(model.config, "quantization_config", None) is not None or bool(getattr(model, "is_quantized", False))


def export_formats(variant) -> tuple[tuple[str, ...], str]:
    """The formats a variant can be written in, and a note on what it cannot be."""
    if variant.model is None:
        return ("gguf",), "GGUF only (llama.cpp quantized types have no safetensors form)"
    if is_bnb(variant.model):
        return ("safetensors",), NO_GGUF_NOTE
    return FORMATS, ""


def export_safetensors(variant, tokenizer, out: Path) -> Path:
    """An HF directory (config, safetensors weights, tokenizer) at `out`."""
    _require(variant, "safetensors")
    return save_hf_dir(variant.model, tokenizer, out)


def export_gguf(variant, gguf_tokenizer, out: Path, outtype: str = "f16") -> Path:
    """A GGUF file at `out`: float variants as F16 (or F32), gguf-* variants copied in their own type."""
    _require(variant, "gguf")
    if variant.model is None:
        if Path(variant.gguf_path).resolve() != Path(out).resolve():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(variant.gguf_path, out)
        return out

    # An unmodified dense model is converted from its float32 folder (Variant.weights_dir), as a study's
    # export is: saving it first would read every page of the folder's mapping into this process (7.1 GB
    # at 1.5B parameters) and write the same weights again.
    return write_gguf(variant.model, out, tokenizer=gguf_tokenizer, outtype=outtype, name=variant.spec,
                      weights_dir=variant.weights_dir).path


def export_sparse(variant, tokenizer, out: Path, *, zstd_level: int, hf_dir: Path | None = None):
    """The sparse directory (bitmask and CSR layouts, zstd of the dense file) at `out`; from `hf_dir`
    when the variant's safetensors directory already exists, else via a temporary one."""
    _require(variant, "sparse")
    if hf_dir is not None:
        return write_sparse_dir(hf_dir, out, zstd_level=zstd_level)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sparse-src-", dir=out.parent) as tmp:
        return write_sparse_dir(export_safetensors(variant, tokenizer, Path(tmp) / "hf"), out, zstd_level=zstd_level)


def _require(variant, fmt: str) -> None:
    formats, note = export_formats(variant)
    if fmt not in formats:
        raise AuditorError(f"{variant.spec}: cannot be exported as {fmt}: {note}")


def torch_layout(model) -> str:
    """float32 / bfloat16 for float models; "bitsandbytes int8" / "bitsandbytes nf4" for bnb ones."""
    quant = getattr(model.config, "quantization_config", None)
    if quant is None:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    get = quant.get if isinstance(quant, dict) else lambda k, d=None: getattr(quant, k, d)
    if get("load_in_8bit", False):
        kind = "int8"
    elif get("load_in_4bit", False):
        kind = get("bnb_4bit_quant_type", "4bit")
    else:
        kind = ""
    method = get("quant_method", "quantized")
    return f"{getattr(method, 'value', method)} {kind}".strip()  # QuantizationMethod is an str Enum


def load_dense(model: str | None):
    """(source, tokenizer, dense model) through auditor.artifacts.models."""
    source = resolve_model(model)
    return source, load_tokenizer(source), load_model(source)


def export_variant(spec: str, fmt: str, out: Path, *, model: str | None = None, outtype: str | None = None,
                   calib: str | None = None, zstd_level: int = 3, seed: int = 0) -> dict:
    """Build `spec` from the dense model and write it in `fmt` at `out`; return what was written.

    safetensors: an HF directory; gguf: one file (F16 by default for float variants,
    F32 with outtype "f32"; gguf-* variants in their own type); sparse: a directory with
    the bitmask and CSR layouts and the zstd'd dense file (see auditor.artifacts.sparse).
    """
    if fmt not in FORMATS:
        raise AuditorError(f"format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if outtype is not None and (fmt != "gguf" or outtype not in ("f16", "f32")):
        raise AuditorError(f"outtype {outtype!r}: applies to the gguf format only, as f16 or f32")
    check_zstd_level(zstd_level)
    steps = parse_chain(spec)
    if fmt == "gguf" or any(s.method.startswith("gguf-") for s in steps):
        check_gguf_convertible(resolve_model(model))  # before the model is loaded
    source, tokenizer, dense = load_dense(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        calibration = (load_calibration(tokenizer, calib, seed=seed)
                       if any(s.needs_calibration for s in steps) else None)
        variant = build_variant(steps, dense, calibration=calibration, seed=seed, workdir=Path(tmp) / "compress")
        record: dict[str, Any] = {"spec": spec, "format": fmt, "model": source.describe()}
        if fmt == "safetensors":
            path = export_safetensors(variant, tokenizer, out)
            record["layout"] = torch_layout(variant.model)
        elif fmt == "gguf":
            if variant.model is None and outtype is not None:
                raise AuditorError(f"{spec}: already quantized by llama.cpp; --outtype applies to float variants")

            gguf_tok = tokenizer_for_model(dense) if variant.model is not None else None
            path = export_gguf(variant, gguf_tok, out, outtype or "f16")
            record["layout"], record["bits_per_weight"] = gguf_figures(path)
        else:
            export = export_sparse(variant, tokenizer, out, zstd_level=zstd_level)
            path = export.out_dir
            record["layouts"] = {f.layout: {"file": f.path.name, "size_bytes": export.size_bytes(f.layout),
                                            "matrices_encoded": f.n_encoded} for f in export.files}
            record["layouts"][f"zstd-{zstd_level}"] = {"file": export.zstd_files[0].name,
                                                       "size_bytes": export.size_bytes("zstd")}
            record["dense_size_bytes"] = export.dense_weights_bytes + export.other_bytes
    record.update(path=str(path), size_bytes=artifact_size(path))
    return json_safe(record)
