"""HF model directories with safetensors weights, written atomically.

`save_hf_dir` writes config, weights (safetensors only, never pickles) and the
tokenizer into a temporary sibling directory and renames it into place when
complete, so a reader never sees a half-written model.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.core.files import atomic_path

log = logging.getLogger(__name__)


def save_hf_dir(model, tokenizer, out_dir: Path) -> Path:
    """Write `model` (and `tokenizer`, when given) as an HF directory at `out_dir`; return it.

    An existing empty directory, or a previous model directory (one with a config.json), is
    replaced; any other existing path is refused rather than overwritten.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not _replaceable(out_dir):
        raise AuditorError(f"{out_dir}: exists and is not an empty or HF model directory; not overwriting it")
    try:
        with atomic_path(out_dir, directory=True) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
    except OSError as exc:
        raise AuditorError(f"{out_dir}: cannot write model directory ({exc.strerror or exc})") from None
    log.info("wrote %s", out_dir)
    return out_dir


#: What `linked_hf_dir` takes from a weights folder: the config and the weights with their index.
_MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json")


def linked_hf_dir(weights_dir: Path, tokenizer, out_dir: Path) -> Path:
    """An HF directory at `out_dir` (new) whose config and safetensors are symbolic links into
    `weights_dir` and whose tokenizer is saved from `tokenizer`: a reader sees the same directory
    `save_hf_dir` would write for the model those files hold, without a copy of its weights."""
    weights_dir, out_dir = Path(weights_dir).resolve(), Path(out_dir)
    try:
        out_dir.mkdir(parents=True)
        for pattern in _MODEL_FILES:
            for f in sorted(weights_dir.glob(pattern)):
                (out_dir / f.name).symlink_to(f)
        tokenizer.save_pretrained(out_dir)
    except OSError as exc:
        raise AuditorError(f"{out_dir}: cannot link the weights of {weights_dir} ({exc.strerror or exc})") from None
    return out_dir


def holds_only_float32(directory: Path) -> bool:
    """Whether every tensor of the folder's safetensors is float32 (a quantized HF source is not)."""
    tensors = stored_tensors(directory)
    return bool(tensors) and all(t.dtype == "F32" for t in tensors.values())


def _replaceable(path: Path) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or (path / "config.json").is_file())


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as stored in a safetensors file: dtype name, shape and bytes of data."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def stored_tensors(directory: Path) -> dict[str, StoredTensor]:
    """Every tensor of the *.safetensors files in `directory`, read from their headers (no data loaded).

    The safetensors header is an 8-byte little-endian length followed by JSON mapping each name to
    {dtype, shape, data_offsets}; bytes = end - start.
    """
    tensors: dict[str, StoredTensor] = {}
    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise AuditorError(f"{directory}: no .safetensors files")
    for path in files:
        with path.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            tensors[name] = StoredTensor(info["dtype"], tuple(info["shape"]), end - start)
    return tensors
