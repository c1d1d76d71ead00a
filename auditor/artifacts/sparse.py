"""Sparse-aware storage: what a format that knows about zeros saves, and exact loaders.

Two layouts in a safetensors file, plus zstd over the dense file:

- bitmask: per weight matrix a packed bitmask (`<name>.bitmask`, uint8 from
  np.packbits over the row-major flattened matrix, 1 = stored) and the stored
  values in row-major order (`<name>.values`, original dtype).
  Size ~ numel/8 + nnz * itemsize bytes: break-even at sparsity 1/(8*itemsize)
  (1/32 for float32).
- CSR: `<name>.indptr` (n_rows + 1 offsets), `<name>.indices` (column of each
  stored value) in the smallest unsigned dtype that holds them, `<name>.values`.

"Zero" means an all-zero bit pattern, so -0.0 is kept as a value and every
restored tensor is bit-identical to the original. A 2-D floating tensor is
encoded only when its layout is smaller than storing it dense; everything
else (norms, biases, unpruned matrices such as the embeddings) is stored as it
is under its own name. Tensors sharing storage (tied embeddings) are stored
once and restored as aliases. Shapes, dtypes and layouts live in the file's
metadata under the key `auditor_sparse`.

(The compressed-tensors sparse formats were removed upstream, so this layout is
the project's own; it is a storage measurement, not a runtime format: loading
decodes to dense tensors.)
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from auditor.core.errors import DataError
from auditor.core.files import atomic_path

log = logging.getLogger(__name__)

Layout = Literal["bitmask", "csr"]
LAYOUTS: tuple[Layout, ...] = ("bitmask", "csr")
META_KEY = "auditor_sparse"
FORMAT_VERSION = 1
LAYOUT_FILES: dict[str, str] = {"bitmask": "model.bitmask.safetensors", "csr": "model.csr.safetensors"}
ZSTD_SUFFIX = ".zst"
DEFAULT_ZSTD_LEVEL = 3


# ---------------------------------------------------------------- pure tensor functions

def nonzero_mask(t):
    """Bool tensor: True where the element's bit pattern is not all zeros (so -0.0 counts as stored)."""
    import torch

    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(as_int) != 0


def bitmask_encode(t) -> dict:
    """{"bitmask": uint8 packed row-major mask, "values": stored elements in row-major order}."""
    import torch

    mask = nonzero_mask(t).reshape(-1)
    packed = np.packbits(mask.numpy())
    return {"bitmask": torch.from_numpy(packed), "values": t.contiguous().reshape(-1)[mask].clone()}


def bitmask_decode(bitmask, values, shape: tuple[int, ...], dtype):
    """Inverse of bitmask_encode: zeros (bit pattern 0) everywhere the mask is 0."""
    import torch

    numel = int(np.prod(shape)) if shape else 1
    mask = torch.from_numpy(np.unpackbits(bitmask.numpy(), count=numel).astype(bool))
    if int(mask.sum()) != values.numel():
        raise ValueError(f"bitmask has {int(mask.sum())} set bits but {values.numel()} values are stored")
    out = torch.zeros(numel, dtype=dtype)
    out[mask] = values.to(dtype)
    return out.reshape(shape)


def index_dtype(max_value: int):
    """The smallest unsigned integer dtype holding 0..max_value (uint8, uint16, uint32, then int64)."""
    import torch

    for dtype, limit in ((torch.uint8, 2**8), (torch.uint16, 2**16), (torch.uint32, 2**32)):
        if max_value < limit:
            return dtype
    return torch.int64


def csr_encode(t) -> dict:
    """{"indptr", "indices", "values"} of a 2-D tensor in compressed sparse row form."""
    import torch

    if t.dim() != 2:
        raise ValueError(f"CSR needs a 2-D tensor, got shape {tuple(t.shape)}")
    mask = nonzero_mask(t)
    rows, cols = t.shape
    counts = mask.sum(dim=1, dtype=torch.int64)
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = mask.nonzero()[:, 1]  # row-major order, as the values
    return {
        "indptr": indptr.to(index_dtype(nnz)),
        "indices": indices.to(index_dtype(max(cols - 1, 0))),
        "values": t.contiguous()[mask].clone(),
    }


def csr_decode(indptr, indices, values, shape: tuple[int, int], dtype):
    """Inverse of csr_encode."""
    import torch

    rows, cols = shape
    ptr = indptr.to(torch.int64)
    if ptr.numel() != rows + 1 or int(ptr[-1]) != values.numel() or indices.numel() != values.numel():
        raise ValueError(f"inconsistent CSR arrays for shape {shape}: indptr {ptr.numel()}, "
                         f"indices {indices.numel()}, values {values.numel()}")
    row_of = torch.repeat_interleave(torch.arange(rows), ptr[1:] - ptr[:-1])
    out = torch.zeros(rows * cols, dtype=dtype)
    out[row_of * cols + indices.to(torch.int64)] = values.to(dtype)
    return out.reshape(rows, cols)


def encoded_nbytes(parts: Mapping) -> int:
    return sum(p.numel() * p.element_size() for p in parts.values())


def encode(t, layout: Layout) -> dict | None:
    """The layout's arrays for `t`, or None when it is not a 2-D floating tensor or would not shrink."""
    if t.dim() != 2 or not t.is_floating_point():
        return None
    parts = bitmask_encode(t) if layout == "bitmask" else csr_encode(t)
    return parts if encoded_nbytes(parts) < t.numel() * t.element_size() else None


# ---------------------------------------------------------------- files

@dataclass(frozen=True)
class SparseFile:
    """One written sparse-layout file and what it holds."""

    path: Path
    layout: str
    size_bytes: int
    dense_tensor_bytes: int  # the same tensors stored dense (aliases once)
    n_encoded: int  # matrices stored in the layout
    n_dense: int  # tensors stored as they are


def _storage_key(t) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def save_sparse(tensors: Mapping, path: Path, layout: Layout, *, shared_storage: bool = True) -> SparseFile:
    """Write `tensors` (name -> torch.Tensor) in `layout` to a safetensors file, atomically.

    `shared_storage`: tensors may share storage (a model's state dict with tied embeddings) and are
    then stored once. A mapping that reads each tensor when asked (`SafetensorsDir`) passes False:
    a safetensors file holds no shared storage, and a freed tensor's address can be reused by the
    next one, which the storage key would take for a tie."""
    import torch
    from safetensors.torch import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"unknown sparse layout {layout!r} (valid: {', '.join(LAYOUTS)})")
    out: dict[str, torch.Tensor] = {}
    info: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    dense_bytes = n_encoded = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        key = _storage_key(t)
        if shared_storage and key in seen:  # tied weights: store once
            aliases[name] = seen[key]
            continue
        seen[key] = name
        dense_bytes += t.numel() * t.element_size()
        parts = encode(t, layout)
        if parts is None:
            out[name] = t.contiguous()
            info[name] = {"layout": "dense"}
        else:
            out.update({f"{name}.{part}": v for part, v in parts.items()})
            info[name] = {"layout": layout, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            n_encoded += 1
    meta = {"version": FORMAT_VERSION, "layout": layout, "tensors": info, "aliases": aliases}
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt", META_KEY: json.dumps(meta)})
    log.info("%s: %d matrices in %s layout, %d tensors dense", path, n_encoded, layout, len(info) - n_encoded)
    return SparseFile(path, layout, path.stat().st_size, dense_bytes, n_encoded, len(info) - n_encoded)


def load_sparse(path: Path) -> dict:
    """Restore every tensor (aliases included) of a file written by save_sparse, bit-identical."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such sparse safetensors file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get(META_KEY)
            if raw_meta is None:
                raise DataError(path, f"not a sparse-layout file (no {META_KEY!r} metadata)")
            meta = json.loads(raw_meta)
            stored = {k: fh.get_tensor(k) for k in fh.keys()}
    except (OSError, ValueError, SafetensorError) as exc:
        raise DataError(path, f"unreadable safetensors file ({exc})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(path, f"sparse format version {meta.get('version')!r}; this loader reads {FORMAT_VERSION}")
    result: dict[str, torch.Tensor] = {}
    for name, entry in meta["tensors"].items():
        try:
            if entry["layout"] == "dense":
                result[name] = stored[name]
                continue
            shape, dtype = tuple(entry["shape"]), getattr(torch, entry["dtype"])
            if entry["layout"] == "bitmask":
                result[name] = bitmask_decode(stored[f"{name}.bitmask"], stored[f"{name}.values"], shape, dtype)
            elif entry["layout"] == "csr":
                result[name] = csr_decode(stored[f"{name}.indptr"], stored[f"{name}.indices"],
                                          stored[f"{name}.values"], shape, dtype)  # type: ignore[arg-type]
            else:
                raise DataError(path, f"tensor {name!r}: unknown layout {entry['layout']!r}")
        except KeyError as exc:
            raise DataError(path, f"tensor {name!r}: missing array {exc}") from None
        except ValueError as exc:
            raise DataError(path, f"tensor {name!r}: {exc}") from None
    for alias, target in meta.get("aliases", {}).items():
        result[alias] = result[target]
    return result


def load_bitmask(path: Path) -> dict:
    """Restore the exact weights of a bitmask-layout file (see load_sparse)."""
    return load_sparse(path)


class SafetensorsDir(Mapping):
    """The tensors of an HF directory's *.safetensors files (pickled .bin files are never read), each
    read from disk when asked: encoding a 1.5B model's layouts then holds one float32 matrix at a
    time instead of all 7 GB of them (docs/measurement.md, "Memory and disk at 1.5B parameters")."""

    def __init__(self, hf_dir: Path) -> None:
        from safetensors import safe_open

        self.files = sorted(Path(hf_dir).glob("*.safetensors"))
        if not self.files:
            raise DataError(hf_dir, "no .safetensors files in this directory")
        self._where: dict[str, Path] = {}
        for f in self.files:
            with safe_open(str(f), framework="pt") as fh:
                self._where.update(dict.fromkeys(fh.keys(), f))

    def __getitem__(self, name: str):
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as fh:
            return fh.get_tensor(name)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def zstd_compress(src: Path, dst: Path, level: int = DEFAULT_ZSTD_LEVEL, threads: int = 0) -> int:
    """zstd-compress `src` into `dst` (streaming, atomic); return the compressed size in bytes."""
    import zstandard

    with atomic_path(dst) as tmp, src.open("rb") as fin, tmp.open("wb") as fout:
        zstandard.ZstdCompressor(level=level, threads=threads).copy_stream(fin, fout)
    return dst.stat().st_size


def zstd_decompress(src: Path, dst: Path) -> Path:
    """Restore the original bytes of a zstd_compress output."""
    import zstandard

    with src.open("rb") as fin, dst.open("wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout)
    return dst


# ---------------------------------------------------------------- directories

@dataclass(frozen=True)
class SparseExport:
    """A sparse export directory: config and tokenizer, each layout's file, the zstd'd dense files."""

    out_dir: Path
    files: tuple[SparseFile, ...]
    zstd_files: tuple[Path, ...]
    zstd_level: int
    dense_weights_bytes: int  # the source *.safetensors files
    other_bytes: int  # config, tokenizer: needed by every layout

    def size_bytes(self, layout: str) -> int:
        """Bytes a user needs on disk for `layout` ("bitmask", "csr" or "zstd"), config and tokenizer included."""
        if layout == "zstd":
            return self.other_bytes + sum(p.stat().st_size for p in self.zstd_files)
        return self.other_bytes + next(f.size_bytes for f in self.files if f.layout == layout)


def write_sparse_dir(hf_dir: Path, out_dir: Path, *, layouts: tuple[Layout, ...] = LAYOUTS,
                     zstd_level: int = DEFAULT_ZSTD_LEVEL) -> SparseExport:
    """From an HF safetensors directory, write `out_dir` with the non-weight files, one file per
    layout (LAYOUT_FILES) and `<file>.safetensors.zst` for each dense weight file."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    tensors = SafetensorsDir(hf_dir)
    weights = tensors.files
    out_dir.mkdir(parents=True, exist_ok=True)
    other = 0
    for f in sorted(hf_dir.iterdir()):
        if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".safetensors.index.json"):
            shutil.copy2(f, out_dir / f.name)
            other += f.stat().st_size
    files = tuple(save_sparse(tensors, out_dir / LAYOUT_FILES[layout], layout, shared_storage=False)
                  for layout in layouts)
    zstd_files = []
    for f in weights:
        dst = out_dir / (f.name + ZSTD_SUFFIX)
        zstd_compress(f, dst, zstd_level)
        zstd_files.append(dst)
    return SparseExport(out_dir, files, tuple(zstd_files), zstd_level,
                        sum(f.stat().st_size for f in weights), other)


def load_sparse_model(sparse_dir: Path, layout: Layout = "bitmask"):
    """A float causal LM built from the directory's config.json with weights from the layout file.

    Parameters the file does not hold must be tied to ones it does (tied embeddings);
    anything else missing or unexpected is an error naming the file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    sparse_dir = Path(sparse_dir)
    path = sparse_dir / LAYOUT_FILES[layout]
    state = load_sparse(path)
    config = AutoConfig.from_pretrained(str(sparse_dir))
    dtype = next(iter(state.values())).dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[n].data_ptr() for n in state if n in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise DataError(path, f"weights do not match the config: missing {untied}, unexpected {list(unexpected)}")
    return model.eval()
