"""Wanda pruning (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs").

Score S_ij = |W_ij| * ||X_j||_2, compared within each output row (or within each
group of M consecutive inputs of a row for N:M), lowest scores pruned. The
lifecycle follows the reference implementation (github locuslab/wanda,
lib/prune.py `prune_wanda`):

1. run the model's forward on the calibration windows with every block stood in
   for by a recorder, and capture the hidden states entering block 0 and, for
   every block, the arguments the model's own forward passes to it (its
   attention mask, with the sliding window of a local layer, and its own rotary
   position embeddings: Gemma 3's global layers use another RoPE base than its
   local ones);
2. block by block: hook every Linear of the block to accumulate the squared L2
   norm of each input feature over all calibration tokens, run the (still
   dense) block, prune it from those norms, then recompute the block's outputs
   with the PRUNED block and feed them to the next block.

`wanda-dense` is the reference studies' variant: norms from the dense model only
(every block sees the dense model's hidden states; the same as collecting all
norms in one dense pass before pruning) and o_proj / down_proj left unpruned.
The maths (`wanda_scores`, the masks) are pure functions in `compressors.masks`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from auditor.core.errors import SpecError
from compressors.base import CalibrationData, Compressor, StepReport, Variant, chain_spec
from compressors.masks import lowest_score_mask, nm_mask, wanda_scores
from compressors.pruning import BLOCK_SCOPE, prune_, pruned_report, require_torch_model
from compressors.scope import decoder_layers, each_block, linears_of

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8  # calibration windows per forward: bounds activation memory
DENSE_SKIPPED = ("o_proj", "down_proj")  # left dense by the reference studies' Wanda


class _StopForward(Exception):
    """Raised by the capture stand-in of the last block once every block's arguments are known."""


@dataclass
class LayerInputs:
    """What the model's own forward passed to each block, per batch of calibration windows.

    `hidden[b]` enters block 0; `calls[i][b]` = (positional arguments after the
    hidden states, keyword arguments) of block i: its own attention mask (causal
    or sliding-window), position embeddings (per-layer-type RoPE) and position ids.
    """

    hidden: list[torch.Tensor]
    calls: list[list[tuple[tuple, dict]]]

    def batches(self, i: int, hidden: list[torch.Tensor]) -> list[tuple[torch.Tensor, tuple, dict]]:
        return [(h, *self.calls[i][b]) for b, h in enumerate(hidden)]


def capture_layer_inputs(model, input_ids: torch.Tensor, batch_size: int) -> LayerInputs:
    """Run the model's forward on the calibration windows with every block's `forward` replaced by a
    stand-in that records the block's own arguments (never block 0's reused for all: Gemma 3's
    sliding and global layers get different masks and rotary embeddings) and returns its hidden
    states unchanged. The masks and rotary embeddings are computed before the block loop, so no
    block computes anything here: the capture costs the embedding lookup, not a forward pass."""
    layers = decoder_layers(model)
    captured = LayerInputs([], [[] for _ in layers])

    def stand_in(i: int):
        def forward(*args, **kwargs):
            hidden, rest = (args[0], tuple(args[1:])) if args else (kwargs.pop("hidden_states"), ())
            if i == 0:
                captured.hidden.append(hidden.detach())
            captured.calls[i].append((rest, kwargs))
            if i == len(layers) - 1:
                raise _StopForward
            return hidden
        return forward

    device = next(model.parameters()).device
    # An instance attribute: nn.Module.__call__ runs it, hooks included. A forward already set on the
    # instance (accelerate's device hooks) is put back afterwards.
    own = [layer.__dict__.get("forward") for layer in layers]
    for i, layer in enumerate(layers):
        layer.forward = stand_in(i)
    try:
        for batch in input_ids.split(batch_size):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        for layer, forward in zip(layers, own):
            if forward is None:
                del layer.forward  # the class's forward again
            else:
                layer.forward = forward
    return captured


def _run_block(layer, batches: list[tuple[torch.Tensor, tuple, dict]]) -> list[torch.Tensor]:
    outputs = []
    for hidden, rest, kwargs in batches:
        out = layer(hidden, *rest, **kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs


def _block_input_sq_norms(layer, linears: dict[str, torch.nn.Linear],
                          batches: list[tuple[torch.Tensor, tuple, dict]]):
    """Run the block over all batches; return its outputs and, per Linear, sum_t x_tj^2 over all
    calibration tokens t (float64 accumulation, so batching does not change the sums' order much)."""
    sq_norms = {name: torch.zeros(linear.in_features, dtype=torch.float64, device=linear.weight.device)
                for name, linear in linears.items()}

    def make_hook(name: str):
        def hook(module, args, output):
            x = args[0].reshape(-1, module.in_features).float()
            sq_norms[name] += (x * x).sum(dim=0).double()
        return hook

    handles = [linear.register_forward_hook(make_hook(name)) for name, linear in linears.items()]
    try:
        outputs = _run_block(layer, batches)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, sq_norms


def wanda_mask(weight: torch.Tensor, sq_norms: torch.Tensor, sparsity: float,
               n: int | None = None, m: int | None = None) -> torch.Tensor:
    """The Wanda mask of one Linear: per-row lowest scores, or N lowest of every M inputs."""
    scores = wanda_scores(weight, sq_norms)
    if n is not None and m is not None:
        return nm_mask(scores, n, m)
    return lowest_score_mask(scores, sparsity, "row")


def wanda_prune(model, input_ids: torch.Tensor, *, sparsity: float, n: int | None = None, m: int | None = None,
                sequential: bool = True, skip: tuple[str, ...] = (),
                batch_size: int = DEFAULT_BATCH_SIZE, blocks=None) -> dict[str, int]:
    """Prune the block Linears of `model` in place; return {qualified name: comparison group size}
    of the pruned layers. Linears whose leaf name is in `skip` stay dense. With `blocks` (a
    `BlockWeights`) each block is fetched in float32 when its turn comes and cast once its
    outputs for the next block are computed."""
    layers = decoder_layers(model)
    group_sizes: dict[str, int] = {}
    with torch.no_grad():
        inputs = capture_layer_inputs(model, input_ids, batch_size)
        hidden = inputs.hidden
        for i, layer in each_block(model, blocks):
            linears = {name: module for name, module in linears_of(layer) if name.rsplit(".", 1)[-1] not in skip}
            batches = inputs.batches(i, hidden)
            outputs, sq_norms = _block_input_sq_norms(layer, linears, batches)
            for name, linear in linears.items():
                prune_(linear, wanda_mask(linear.weight.data, sq_norms[name], sparsity, n, m))
                group_sizes[f"model.layers.{i}.{name}"] = m if m is not None else linear.in_features
            if sequential and i + 1 < len(layers):
                outputs = _run_block(layer, batches)  # the next block sees this block pruned
            hidden = outputs
            log.info("wanda: block %d/%d pruned", i + 1, len(layers))
    return group_sizes


class WandaPruner(Compressor):
    """Wanda on every block Linear, block inputs propagated through the already-pruned blocks."""

    method = "wanda"
    family = "prune"
    needs_calibration = True
    # wanda_prune: the capture runs no block; then each block runs twice (its input norms, then its
    # pruned outputs for the next block); without propagation the second run is not needed.
    calibration_passes = 2
    sequential = True
    skip: tuple[str, ...] = ()
    streams_blocks = True  # block i is pruned and its outputs computed before block i+1 is touched

    def __init__(self, level: float | None, params: dict[str, Any] | None = None) -> None:
        super().__init__(level, params)
        self.params.setdefault("batch_size", DEFAULT_BATCH_SIZE)

    def _level_text(self) -> str:
        if "n" in self.params and "m" in self.params:
            return f"{self.params['n']}:{self.params['m']}"
        return super()._level_text()

    def _check_nm(self, model) -> None:
        m = self.params.get("m")
        if m is None:
            return
        for i, layer in enumerate(decoder_layers(model)):
            for name, module in layer.named_modules():
                if (isinstance(module, torch.nn.Linear) and module.in_features % m
                        and name.rsplit(".", 1)[-1] not in self.skip):
                    raise SpecError(f"{self.spec}: model.layers.{i}.{name} has {module.in_features} inputs, "
                                    f"not a multiple of M={m}")

    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None, blocks=None) -> Variant:
        require_torch_model(variant, self.spec)
        if calibration is None:
            raise SpecError(f"{self.spec}: Wanda needs calibration text (see compressors.calibration)")
        if calibration.input_ids.dim() != 2:
            raise SpecError(f"{self.spec}: calibration token ids must be (n_samples, seq_len), "
                            f"got shape {tuple(calibration.input_ids.shape)}")
        self._check_nm(variant.model)
        start = time.perf_counter()
        n, m = self.params.get("n"), self.params.get("m")
        group_sizes = wanda_prune(variant.model, calibration.input_ids, sparsity=self.level, n=n, m=m,
                                  sequential=self.sequential, skip=self.skip,
                                  batch_size=self.params["batch_size"], blocks=blocks)
        wall_s = time.perf_counter() - start
        n_samples, seq_len = calibration.input_ids.shape
        params = {**self.params, "sparsity": self.level, "seed": seed,
                  "comparison_group": "row" if m is None else f"{n}:{m}", "calibration": calibration.origin,
                  "calibration_samples": n_samples,
                  "calibration_seq_len": seq_len,
                  "block_inputs": "through the pruned earlier blocks" if self.sequential else "dense model",
                  "skipped": list(self.skip),
                  "scope": BLOCK_SCOPE + (f"; {', '.join(self.skip)} left dense" if self.skip else "")}
        report = StepReport(self.spec, self.family, params, wall_s,
                            pruned_report(variant.model, self.level, group_sizes))
        return Variant(chain_spec(variant.spec, self.spec), variant.model, None, [*variant.steps, report])


class WandaDensePruner(WandaPruner):
    """The reference studies' Wanda: dense-model norms only; o_proj and down_proj left dense."""

    method = "wanda-dense"
    sequential = False
    calibration_passes = 1
    skip = DENSE_SKIPPED
