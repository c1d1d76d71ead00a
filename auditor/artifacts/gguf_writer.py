"""A torch causal LM + its HF tokenizer -> GGUF (F32 or F16), through llama.cpp's own converter.

The model and tokenizer are saved as an HF safetensors directory in a temporary
folder beside the output, and `convert_hf_to_gguf.py` of the runtime's own
llama.cpp commit converts it (`auditor.artifacts.llama_converter`). Every
architecture that converter supports can be exported; the project no longer has
a converter of its own (its former Llama-only writer added nothing the upstream
converter lacks: upstream also permutes q/k rows, drops tied heads and writes the
tokenizer, pre-tokenizer and chat template).

A model loaded from a GGUF gets its tokenizer through transformers' GGUF
tokenizer conversion; the tests check that llama.cpp tokenizes the exported
file exactly as that HF tokenizer does.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from auditor.artifacts.gguf_conversions import gguf_tokenizer
from auditor.artifacts.llama_converter import Converter, check_convertible, convert_hf_dir, find_converter
from auditor.artifacts.safetensors_dir import linked_hf_dir, save_hf_dir
from auditor.core.errors import ModelError

log = logging.getLogger(__name__)

OutType = Literal["f32", "f16"]
OUTTYPES: tuple[str, ...] = ("f32", "f16")


@dataclass(frozen=True)
class GGUFExport:
    """A written GGUF file and what went into it."""

    path: Path
    outtype: str
    size_bytes: int
    converter: str  # which converter wrote it (llama.cpp release), for provenance
    tokenizer_origin: str


def model_architecture(model) -> str:
    """The HF architecture name of a loaded model (what config.json `architectures[0]` will say)."""
    arches = getattr(model.config, "architectures", None) or [type(model).__name__]
    return str(arches[0])


def write_gguf(model, path: Path, *, tokenizer: Any, outtype: OutType = "f16", name: str | None = None,
               converter: Converter | None = None, weights_dir: Path | None = None) -> GGUFExport:
    """Write `model` (float weights) with its HF `tokenizer` to `path` as GGUF F32 or F16.

    With `weights_dir` (a float32 safetensors folder holding exactly the model's weights,
    see `Variant.weights_dir`) the converter reads that folder, linked beside the saved
    tokenizer, instead of a copy saved from the model: the weights are neither read into
    this process nor written again (for an 8B model, 32 GB of either).
    Refused before anything is written when the model is quantized in torch or
    when llama.cpp's converter has no class for its architecture. The GGUF
    appears under its final name only when the converter succeeded.
    """
    if outtype not in OUTTYPES:
        raise ModelError(f"outtype {outtype!r}: valid GGUF output types are {', '.join(OUTTYPES)}")
    if getattr(model.config, "quantization_config", None) is not None or getattr(model, "is_quantized", False):
        raise ModelError("a quantized torch model (e.g. bitsandbytes) has no GGUF form; export the float model")
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        raise ModelError("GGUF export needs the model's HF tokenizer (see tokenizer_for_model)")
    converter = converter or find_converter()
    check_convertible(model_architecture(model), converter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".hf-for-gguf-", dir=path.parent) as tmp:
        if weights_dir is not None:
            hf_dir = linked_hf_dir(weights_dir, tokenizer, Path(tmp) / "model")
        else:
            hf_dir = save_hf_dir(model, tokenizer, Path(tmp) / "model")
        convert_hf_dir(hf_dir, path, outtype=outtype, converter=converter, name=name)
    origin = f"HF tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}"
    log.info("wrote %s (%s) with %s", path, outtype, converter.describe())
    return GGUFExport(path, outtype, path.stat().st_size, converter.describe(), origin)


def tokenizer_for_model(model):
    """The HF tokenizer of a model loaded by `auditor.artifacts.models.load_model`, found from its name_or_path.

    An HF directory with a tokenizer gives its tokenizer; a GGUF file, or a
    directory holding exactly one GGUF (the layout of a GGUF load), gives the
    tokenizer transformers builds from that GGUF. Anything else is a ModelError
    asking the caller to pass the tokenizer explicitly.
    """
    from transformers import AutoTokenizer

    where = Path(str(getattr(model.config, "_name_or_path", "") or ""))
    if where.is_file() and where.suffix == ".gguf":
        return gguf_tokenizer(where)
    if where.is_dir():
        if (where / "tokenizer.json").is_file() or (where / "tokenizer.model").is_file():
            return AutoTokenizer.from_pretrained(str(where))
        ggufs = sorted(where.glob("*.gguf"))
        if len(ggufs) == 1:
            return gguf_tokenizer(ggufs[0])
    raise ModelError(f"cannot find the tokenizer of the model loaded from {str(where) or '<unknown>'!r}; "
                     "pass it explicitly (tokenizer=...)")
