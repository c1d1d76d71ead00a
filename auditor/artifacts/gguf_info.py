"""What a GGUF file really holds: tensor types, effective bits per weight, quantization fallbacks.

Bits per weight are measured from the artifact, never taken from the type's
name: bpw = 8 * sum(tensor bytes) / sum(tensor elements) over a set of tensors.
Three sets are reported:

- `bits_per_weight`: the weight matrices of the transformer blocks
  (`blk.N.*.weight` with 2+ dims), the part a quantization type is about;
- `bits_per_weight_model`: every tensor (adds embeddings, output, norms);
- `bits_per_weight_file`: 8 * file size / all elements (adds the header,
  tokenizer and alignment padding).

llama.cpp's K-quants pack 256 weights per super-block, so a row whose width
(`ne[0]`) is not a multiple of 256 cannot be stored in a K type; the quantizer
then silently uses another type (for SmolLM2-135M's 576-wide rows, Q3_K_M
becomes mostly Q4_0/Q5_0-class types). `detect_fallback` compares the types
found with those the requested file type may choose and reports the rest.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from auditor.artifacts.gguf_header import TensorInfo, gguf_header

#: Types llama.cpp's quantizer may choose on purpose for each file type (its
#: per-tensor mixes, e.g. Q6_K for some attn_v/ffn_down in *_K_M); any other
#: type on a 2-D weight is a fallback. F16/F32 sources and Q8_0 are uniform.
EXPECTED_TYPES: dict[str, frozenset[str]] = {
    "F32": frozenset({"F32"}),
    "F16": frozenset({"F16"}),
    "Q8_0": frozenset({"Q8_0"}),
    "Q4_K_M": frozenset({"Q4_K", "Q5_K", "Q6_K"}),
    "Q3_K_M": frozenset({"Q3_K", "Q4_K", "Q5_K", "Q6_K"}),
}
#: Weights per block of the K-quant types: rows must be a multiple of this.
QK_K = 256


@dataclass(frozen=True)
class Fallback:
    """Weight matrices stored in a type the requested file type would not choose."""

    requested: str
    tensors: tuple[str, ...]
    types: dict[str, int]  # fallback type -> number of matrices
    row_widths: tuple[int, ...]  # distinct ne[0] of the fallback matrices
    share_of_weights: float  # elements in fallback matrices / elements in all block matrices

    def describe(self) -> str:
        types = ", ".join(f"{t} x{n}" for t, n in sorted(self.types.items()))
        widths = ", ".join(map(str, self.row_widths))
        cause = (f" (row widths {widths} are not multiples of {QK_K}, which K-quants need)"
                 if any(w % QK_K for w in self.row_widths) and "_K" in self.requested else "")
        return (f"requested {self.requested}, but {len(self.tensors)} block weight matrices "
                f"({100 * self.share_of_weights:.1f}% of their weights) are stored as {types}{cause}")


@dataclass(frozen=True)
class GGUFInfo:
    """A GGUF's tensors and the figures measured from them."""

    path: Path
    file_type: str  # general.file_type as llama.cpp names it (Q4_K_M, F16, ...)
    size_bytes: int
    tensors: tuple[TensorInfo, ...]

    @property
    def type_histogram(self) -> dict[str, int]:
        """Number of tensors per GGML type, over all tensors."""
        return dict(sorted(Counter(t.type_name for t in self.tensors).items()))

    @property
    def block_type_histogram(self) -> dict[str, int]:
        """Number of block weight matrices per GGML type."""
        return dict(sorted(Counter(t.type_name for t in self.tensors if t.is_block_matrix).items()))

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Block weight matrices only; NaN when there are none."""
        return bits_per_weight(t for t in self.tensors if t.is_block_matrix)

    @property
    def bits_per_weight_model(self) -> float:
        return bits_per_weight(self.tensors)

    @property
    def bits_per_weight_file(self) -> float:
        n = self.n_elements
        return 8 * self.size_bytes / n if n else math.nan

    def summary(self) -> dict:
        """JSON-ready figures (unit-carrying names)."""
        return {
            "file_type": self.file_type,
            "size_bytes": self.size_bytes,
            "n_tensors": len(self.tensors),
            "n_elements": self.n_elements,
            "bits_per_weight": self.bits_per_weight,
            "bits_per_weight_model": self.bits_per_weight_model,
            "bits_per_weight_file": self.bits_per_weight_file,
            "tensor_types": self.type_histogram,
            "block_tensor_types": self.block_type_histogram,
        }


def bits_per_weight(tensors: Iterable[TensorInfo]) -> float:
    """8 * sum(bytes) / sum(elements) over `tensors`; NaN on an empty set."""
    n_bytes = n_elements = 0
    for t in tensors:
        n_bytes += t.n_bytes
        n_elements += t.n_elements
    return 8 * n_bytes / n_elements if n_elements else math.nan


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read tensor types and sizes from a GGUF's header (auditor.artifacts.gguf_header: the tensor data and the
    vocabulary's arrays are not read); a ModelError naming the file when it is truncated or not a GGUF."""
    from gguf import LlamaFileType

    path = Path(path)
    header = gguf_header(path)
    value = header.metadata.get("general.file_type")
    if value is None:
        file_type = "unknown"
    else:
        try:
            file_type = LlamaFileType(int(value)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            file_type = f"file_type {value}"
    return GGUFInfo(path, file_type, path.stat().st_size, header.tensors)


def detect_fallback(info: GGUFInfo, requested: str) -> Fallback | None:
    """Block weight matrices whose type is not one `requested` may choose; None when there are none.

    Token embeddings and output are left out: llama.cpp gives them their own
    type by rule (Q8_0 when rows are not a multiple of 256, otherwise Q6_K), so
    the count matches llama.cpp's own "N tensor(s) required fallback" warning.
    """
    expected = EXPECTED_TYPES.get(requested)
    if expected is None:
        raise ValueError(f"no expected types known for {requested!r}; known: {', '.join(EXPECTED_TYPES)}")
    matrices = [t for t in info.tensors if t.is_block_matrix]
    off = [t for t in matrices if t.type_name not in expected]
    if not off:
        return None
    total = sum(t.n_elements for t in matrices)
    return Fallback(
        requested=requested,
        tensors=tuple(t.name for t in off),
        types=dict(sorted(Counter(t.type_name for t in off).items())),
        row_widths=tuple(sorted({t.shape[0] for t in off})),
        share_of_weights=sum(t.n_elements for t in off) / total,
    )
