"""A GGUF file's metadata values (not its arrays) and its tensor table, read once per file and process.

Resolving a GGUF source, checking llama.cpp can convert it and reading its chat
template each need one metadata value (general.file_type, general.architecture,
tokenizer.chat_template); measuring a quantized file needs its tensor table
(auditor.artifacts.gguf_info). gguf's `GGUFReader` parses every field, the
vocabulary's arrays included, into numpy views: 15-35 s per read for a 152k-token
vocabulary on these CPUs, paid three times by `auditor run --plan` before any work
and once more after every GGUF quantization. This reader walks the key-value
section with plain reads, keeps scalar and string values, and seeks past arrays (a
string array by its lengths), so it reads a few MB at most; the result is kept per
(path, size, mtime) for the process. It also reads the tensor table and checks every
tensor's data lies within the file, so a truncated or corrupt GGUF is refused here,
when the source is resolved, as GGUFReader did.

Layout (GGUF v2/v3, little-endian, ggml-org/ggml docs/gguf.md): magic "GGUF",
uint32 version, uint64 tensor count, uint64 key-value count, then per key a
string key (uint64 length + UTF-8 bytes), a uint32 value type and the value; then
per tensor its name, uint32 n_dims, uint64 dims, uint32 ggml type and uint64 offset
into the data section, which starts at the next multiple of general.alignment (32).
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from auditor.core.errors import ModelError

# GGUF value types (gguf.GGUFValueType) -> struct format of one element; STRING (8) and ARRAY (9) are variable.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as stored: GGML type name, shape in GGUF order (ne[0] = row width), size."""

    name: str
    type_name: str  # gguf.GGMLQuantizationType's name: "Q4_K", "F32", ...
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int

    @property
    def is_block_matrix(self) -> bool:
        return self.name.startswith("blk.") and self.name.endswith(".weight") and len(self.shape) >= 2


class GGUFHeader(NamedTuple):
    metadata: dict[str, object]  # scalar and string values; arrays left out
    tensors: tuple[TensorInfo, ...]


def unreadable_gguf(path: Path, exc: Exception) -> ModelError:
    """The error for a GGUF the reader cannot parse. The reader's own message is a numpy or struct detail ("not
    enough values to unpack"); what it means for the user is a truncated or corrupt file, so that comes first."""
    try:
        size = f"{Path(path).stat().st_size:,} bytes"
    except OSError as err:
        size = err.strerror or "unreadable"
    return ModelError(f"{path}: unreadable GGUF: its header or tensor table is truncated or corrupt ({size}; "
                      f"the reader said: {exc})")


def gguf_header(path: Path | str) -> GGUFHeader:
    """The metadata and tensor table of the GGUF at `path`; a ModelError naming it when it is unreadable."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the GGUF ({exc.strerror or exc})") from None
    try:
        return _read(str(path), stat.st_size, stat.st_mtime_ns)
    except (ValueError, OSError, struct.error) as exc:
        raise unreadable_gguf(path, exc) from None


def gguf_metadata(path: Path | str) -> dict[str, object]:
    """The scalar and string metadata of the GGUF at `path` (arrays left out), e.g. {"general.architecture": "qwen2"}."""
    return dict(gguf_header(path).metadata)


@functools.lru_cache(maxsize=8)
def _read(path: str, size: int, mtime_ns: int) -> GGUFHeader:  # size and mtime: a changed file is read again
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError("no GGUF magic at byte 0")
        version, n_tensors, n_kv = struct.unpack("<IQQ", _exact(fh, 20))
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported (2 or later)")
        out: dict[str, object] = {}
        for _ in range(n_kv):
            key = _string(fh)
            (kind,) = struct.unpack("<I", _exact(fh, 4))
            value = _value(fh, kind)
            if value is not _SKIPPED:
                out[key] = value
        tensors = _tensor_table(fh, n_tensors, int(out.get("general.alignment", 32)), size)
        return GGUFHeader(out, tensors)


def _tensor_table(fh: BinaryIO, n_tensors: int, alignment: int, size: int) -> tuple[TensorInfo, ...]:
    """Read the tensor table and check the data of every tensor ends within the file's `size` bytes."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    tensors = []
    end = 0
    for _ in range(n_tensors):
        name = _string(fh)
        (n_dims,) = struct.unpack("<I", _exact(fh, 4))
        dims = struct.unpack(f"<{n_dims}Q", _exact(fh, 8 * n_dims))
        kind, offset = struct.unpack("<IQ", _exact(fh, 12))
        try:
            ggml_type = GGMLQuantizationType(kind)
            block, type_size = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {name}: unknown ggml type {kind}") from None
        n = 1
        for d in dims:
            n *= d
        tensors.append(TensorInfo(name, ggml_type.name, tuple(dims), n, n // block * type_size))
        end = max(end, offset + tensors[-1].n_bytes)
    start = -(-fh.tell() // alignment) * alignment
    if start + end > size:
        raise ValueError(f"the tensor data needs {start + end:,} bytes, the file has {size:,}")
    return tuple(tensors)


_SKIPPED = object()


def _exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError(f"the header ends at byte {fh.tell():,}, inside a {n}-byte field")
    return data


def _string(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _exact(fh, 8))
    return _exact(fh, n).decode("utf-8", errors="replace")


def _value(fh: BinaryIO, kind: int):
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _exact(fh, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        (item, count) = struct.unpack("<IQ", _exact(fh, 12))
        if item in _SCALARS:
            fh.seek(count * struct.calcsize(_SCALARS[item]), 1)
        else:  # strings (a vocabulary) or nested arrays: walked element by element
            for _ in range(count):
                _value(fh, item)
        return _SKIPPED
    raise ValueError(f"unknown GGUF value type {kind} at byte {fh.tell() - 4:,}")
