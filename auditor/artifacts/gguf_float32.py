"""A GGUF file dequantized into a float32 safetensors folder one tensor at a time.

The dense reference of a GGUF source is its float32 dequantization as transformers
computes it (`AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`). Loading that
way holds every dequantized tensor at once, then the model (W32, plus transformers'
own copy at load): for Qwen2.5-Coder-1.5B 7.1 GB of float32, for an 8B GGUF 32 GB,
more than the machine. Here the same transformers pieces do the same work per tensor:
the GGUF reader's `dequantize`, the architecture's `TensorProcessor` (reverse q/k
permutations, Gemma's norm offsets) and the GGUF -> HF name map built from a model
skeleton on the meta device; each tensor goes straight into a safetensors shard, so
the peak is one shard (`SHARD_BYTES`) and the file's memory map, plus the dequantization's own temporaries of the largest tensor
(the embedding; transformers' processors work on numpy copies). The values are
the ones `load_model` gives (tested tensor for tensor against it).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from auditor.artifacts.gguf_conversions import gguf_config
from auditor.core.errors import ModelError

log = logging.getLogger(__name__)

SHARD_BYTES = 500_000_000  # float32 bytes per safetensors shard: what is held before it is written


def gguf_to_float32_folder(path: Path, folder: Path) -> int:
    """Write the float32 weights of the GGUF at `path` into `folder` (config, generation config,
    sharded safetensors with an index); return the number of tensors written."""
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map, load_gguf_checkpoint, read_field)

    path = Path(path)
    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
        config = gguf_config(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot load model ({exc})") from None
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reader = GGUFReader(str(path))
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(skeleton, processor)
    parsed["tensors"] = {}  # where a processor puts tensors it assembles itself (mixture-of-experts)

    folder.mkdir(parents=True, exist_ok=True)
    shards = _ShardWriter(folder)
    for tensor in reader.tensors:
        result = processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name,
                                   tensor_key_mapping=names, parsed_parameters=parsed)
        if result.name in names:
            weights = result.weights  # a read-only view of the file's map for F32/F16 tensors: copied then
            shards.add(names[result.name],
                       torch.from_numpy(weights if weights.flags.writeable else np.copy(weights)).to(torch.float32))
    for name, value in parsed["tensors"].items():
        shards.add(name, value.to(torch.float32))
    count = shards.close()
    # config.json and generation_config.json exactly as save_pretrained writes them for this model
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        skeleton.save_pretrained(tmp, state_dict={})
        for f in Path(tmp).glob("*.json"):
            f.replace(folder / f.name)
    log.info("%s: %d tensors dequantized into %s", path.name, count, folder)
    return count


class _ShardWriter:
    """Consecutive tensors into model-0000k.safetensors files of at most SHARD_BYTES, then the index."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pending: dict = {}
        self.pending_bytes = 0
        self.files: list[list[str]] = []
        self.total_bytes = 0
        self._tmp_names: list[Path] = []

    def add(self, name: str, value) -> None:
        nbytes = value.numel() * value.element_size()
        if self.pending and self.pending_bytes + nbytes > SHARD_BYTES:
            self._flush()
        self.pending[name] = value.contiguous()
        self.pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        tmp = self.folder / f".shard-{len(self.files) + 1:05d}.safetensors"
        save_file(self.pending, str(tmp), metadata={"format": "pt"})
        self._tmp_names.append(tmp)
        self.files.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> int:
        if self.pending:
            self._flush()
        n = len(self.files)
        weight_map = {}
        for k, (tmp, names) in enumerate(zip(self._tmp_names, self.files), 1):
            final = f"model-{k:05d}-of-{n:05d}.safetensors"
            tmp.replace(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        (self.folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}, indent=2),
            encoding="utf-8")
        return len(weight_map)
