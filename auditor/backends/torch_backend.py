"""Torch backend: HF causal LMs (float, pruned, bitsandbytes) scored in batches."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from auditor.backends.base import ScoringBackend
from auditor.progress import progress
from auditor.prompts import PromptGroup

log = logging.getLogger(__name__)


class TorchBackend(ScoringBackend):
    """Left-padded batches sorted by length; only the last position's logits are computed."""

    name = "torch"

    def __init__(self, model, *, batch_size: int = 16, pad_id: int = 0) -> None:
        self.model = model
        self.batch_size = batch_size
        self.pad_id = pad_id

    @property
    def device(self):
        return next(self.model.parameters()).device

    def letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        import torch

        seqs = [(g, s, group.full_ids(s)) for g, group in enumerate(groups) for s in range(len(group.suffix_ids))]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][2]))
        out = [np.empty((len(g.suffix_ids), len(letter_ids))) for g in groups]
        letters = torch.tensor(list(letter_ids), device=self.device)
        with torch.inference_mode(), progress(len(seqs), "prompts") as bar:
            for start in range(0, len(order), self.batch_size):
                batch = [seqs[i] for i in order[start:start + self.batch_size]]
                logp = self._last_logprobs([ids for _, _, ids in batch])
                picked = logp[:, letters].float().cpu().numpy()
                for (g, s, _), row in zip(batch, picked):
                    out[g][s] = row
                bar.update(len(batch))
        return out

    def _last_logprobs(self, batch: list[tuple[int, ...]]):
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            mask[r, width - len(ids):] = 1
        # Left padding shifts positions; derive them from the mask so padded and
        # unpadded prompts see the same rotary positions.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=position_ids.to(self.device), logits_to_keep=1, use_cache=False,
        )
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
