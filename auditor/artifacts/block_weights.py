"""A compressed variant built block by block, straight into its scoring dtype.

Compressors compute from the float32 weights (masks, Wanda's scores), and before
this module a variant scored in bfloat16 was compressed whole in float32 and cast
afterwards: its build held 2 x W16 of weights, the scoring unit started from that.
A `BlockWeights` hands a compressor one transformer block at a time instead: the
block's float32 weights are read from the dense float32 safetensors folder into
ordinary memory (`read_weights_privately`), the compressor works on them exactly
as before, and the block is then cast to the scoring dtype (`Module.to`, each
float32 storage freed as its cast is made). At the end the parameters outside the
blocks (embeddings, norms, an untied head) are cast straight from the file. The
build's peak is the finished blocks in the scoring dtype plus one float32 block,
and the values are those of the old path: the same float32 maths on the same
bytes, then the same rounding (`Module.to`) per tensor.

Until a block is fetched its parameters stay the memory-mapped load's, untouched:
Wanda's capture reads only the embedding rows of its calibration tokens.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.artifacts.models import read_weights_privately, return_freed_memory

log = logging.getLogger(__name__)


@dataclass
class BlockWeights:
    """Where a streamed build reads float32 blocks from (`folder`) and the dtype it leaves them in."""

    folder: Path
    dtype: Any  # a torch floating dtype other than float32

    def fetch(self, index: int, block) -> None:
        """Block `index`'s float32 weights, read from the folder into ordinary memory."""
        read_weights_privately(block, self.folder, prefix=f"model.layers.{index}.")

    def done(self, index: int, block) -> None:
        """Block `index` is compressed: cast it, freeing its float32 weights."""
        block.to(self.dtype)
        return_freed_memory(collect=False)  # only tensors were dropped: no cycles to collect

    def finish(self, model) -> None:
        """Every block is done: the rest of the model cast straight from the file."""
        read_weights_privately(model, self.folder, dtype=self.dtype)
        return_freed_memory(collect=False)
        log.info("streamed build finished in %s", str(self.dtype).removeprefix("torch."))
