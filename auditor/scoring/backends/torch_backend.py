"""Torch backend: HF causal LMs (float, pruned, bitsandbytes) scored in batches, with KV reuse.

Prompts are planned by auditor.scoring.backends.trees: the prefix common to every
prompt is run once and its keys/values are handed to every batch as a cache;
the rest is packed as prompt trees (one item's answer orders, and items that
share a context) and scored with tree attention through a 4-D attention mask.

Within a row nodes may be placed in any order (positions and masks carry the
structure), so the nodes whose logits we need (the last token of each prompt)
are placed last and `logits_to_keep` computes the full-vocabulary head only
there. Rows are left-padded; a pad token attends only to itself so no softmax
row is empty, and no real token attends to a pad.

The head is computed in float32 at every scored position, whatever the model's
dtype: while scoring, the output head's forward is replaced (`float32_head`) by
hidden.float() @ W.float().T (+ bias), W cast HEAD_CHUNK_ROWS rows at a time into
one reused buffer so no float32 copy of the whole head exists, and the model's
own post-head steps (Gemma's final-logit soft-capping, a logit scale) then run
on float32 logits. In bfloat16 the logits themselves would be rounded to 8
significant bits: on a 1.5B model 19% of ambiguous prompts had exactly equal
top-two letter log-probs (steps of 0.125), and argmax broke those ties by index.
The price is a float32 instead of a bf16 matmul at the kept positions only (a
few % of the CPU time on SmolLM2, docs/engine.md). A quantized head
(bitsandbytes Linear8bitLt / Linear4bit) keeps its own kernel; its logits are
cast to float32 and the backend logs why at construction.

Sliding-window attention (Gemma 2/3 local layers, Mistral): the tree mask is
passed to every layer as it is, so it equals the model's own sliding mask only
while no prompt is longer than the smallest window (every ancestor is then
inside the window). A call with a longer prompt takes the exact path instead:
each prompt alone, in a plain forward with the model's own per-layer masks
(no shared prefix cache, no trees), so the answer is never silently wrong.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from auditor.artifacts.precision import model_compute_dtype
from auditor.core.progress import progress
from auditor.data.prompts import PromptGroup
from auditor.scoring.backends.base import ScoringBackend
from auditor.scoring.backends.trees import (MAX_ITEMS_PER_TREE, MAX_TREE_NODES, PackedBatch, TreePlan, pack_trees,
                                            plan_trees)

log = logging.getLogger(__name__)

# Rows of the output head cast to float32 at a time: 4,096 x hidden 2,560 x 4 bytes = 40 MiB beside
# the model, where a whole float32 head (262k x 2,560 for Gemma 3 4B) would be 2.7 GB.
HEAD_CHUNK_ROWS = 4096


class TorchBackend(ScoringBackend):
    """Planned prompt trees in batches of similar size; head only at answer nodes.

    `batch_size` is the number of items (prompt groups) per forward pass; each
    item contributes all its option orders. `max_items_per_tree` and
    `max_tree_nodes` cap how many items that share a context are merged into one
    row and how wide it may grow (`plan_trees`; 1 item: none are merged).
    """

    name = "torch"

    def __init__(self, model, *, batch_size: int = 16, pad_id: int = 0, max_items_per_tree: int = MAX_ITEMS_PER_TREE,
                 max_tree_nodes: int = MAX_TREE_NODES, tree_attention: str = "auto") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_items_per_tree < 1 or max_tree_nodes < 1:
            raise ValueError(f"max_items_per_tree and max_tree_nodes must be >= 1, got {max_items_per_tree}, "
                             f"{max_tree_nodes}")
        if tree_attention not in ("auto", "model"):
            raise ValueError(f"tree_attention must be 'auto' or 'model', got {tree_attention!r}")
        self.model = model
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.max_items_per_tree = max_items_per_tree
        self.max_tree_nodes = max_tree_nodes
        self.tree_attention = tree_attention  # auto: eager for tree batches on CPU (_tree_attention)
        self._computed = 0  # tokens through the model's forward, pads included (tokens_computed)
        if (reason := float32_head_problem(model)) is not None:
            log.warning("letter log-probs from the model's own logits cast to float32, not a float32 head: %s "
                        "(exact ties between letters stay possible in %s)", reason, self.compute_dtype)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def compute_dtype(self) -> str:
        """The dtype the forward computes in ("float32", "bfloat16", ...), recorded with every unit."""
        return model_compute_dtype(self.model)

    @property
    def _float_dtype(self):
        # Parameters of a bitsandbytes model may be int8; the embeddings carry the compute dtype.
        return self.model.get_input_embeddings().weight.dtype

    @property
    def tokens_computed(self) -> int:
        return self._computed

    def planned_tokens(self, groups: Sequence[PromptGroup]) -> int:
        """The tree plan's tokens (`TreePlan.n_nodes`), or every full prompt on the plain path."""
        if self._plain_path(groups):
            return sum(len(g.full_ids(s)) for g in groups for s in range(len(g.suffix_ids)))
        return plan_trees(groups, max_items_per_tree=self.max_items_per_tree,
                          max_tree_nodes=self.max_tree_nodes).n_nodes

    def _plain_path(self, groups: Sequence[PromptGroup]) -> bool:
        """Whether a prompt is longer than the smallest sliding window (module docstring)."""
        window = smallest_sliding_window(self.model.config)
        longest = max((len(g.prefix_ids) + max(map(len, g.suffix_ids)) for g in groups), default=0)
        return window is not None and longest > window

    def letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        import torch

        window = smallest_sliding_window(self.model.config)
        longest = max((len(g.prefix_ids) + max(map(len, g.suffix_ids)) for g in groups), default=0)
        if self._plain_path(groups):
            log.warning("a prompt of %d tokens exceeds the %d-token sliding window: scoring every prompt "
                        "with a plain forward (exact, slower)", longest, window)
            return self._plain_letter_logprobs(groups, letter_ids)
        plan = plan_trees(groups, max_items_per_tree=self.max_items_per_tree, max_tree_nodes=self.max_tree_nodes)
        out = [np.empty((len(g.suffix_ids), len(letter_ids))) for g in groups]
        letters = torch.tensor(list(letter_ids), device=self.device)
        n_prompts = sum(len(g.suffix_ids) for g in groups)
        with torch.inference_mode(), progress(n_prompts, "prompts") as bar, float32_head(self.model), \
                _tree_attention(self.model, self.tree_attention == "auto"):
            prefix_kv = self._prefix_kv(plan.prefix_ids)
            for idx in tree_batches(plan, self.batch_size):
                batch = [plan.trees[t] for t in idx]
                packed = pack_trees(batch, self.pad_id, prefix_len=len(plan.prefix_ids))
                picked = self._answer_logprobs(packed, prefix_kv)[:, :, letters].float().cpu().numpy()
                width_keep = picked.shape[1]
                for r, (t, tree) in enumerate(zip(idx, batch)):
                    # Answer nodes are the last n_answer_nodes nodes of the row, right-aligned.
                    first = tree.n_nodes - tree.n_answer_nodes
                    for (g, s), end in zip(plan.members[t], tree.ends):
                        out[g][s] = picked[r, width_keep - tree.n_answer_nodes + (end - first)]
                bar.update(sum(len(plan.members[t]) for t in idx))
        return out

    def _plain_letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        """The exact path: each full prompt in its own forward pass, the model's own masks and positions."""
        import torch

        out = [np.empty((len(g.suffix_ids), len(letter_ids))) for g in groups]
        letters = torch.tensor(list(letter_ids), device=self.device)
        with torch.inference_mode(), progress(sum(len(g.suffix_ids) for g in groups), "prompts") as bar, \
                float32_head(self.model):
            for g, group in enumerate(groups):
                for s in range(len(group.suffix_ids)):
                    x = torch.tensor([list(group.full_ids(s))], dtype=torch.long, device=self.device)
                    self._computed += x.shape[1]
                    logits = self.model(input_ids=x, use_cache=False, logits_to_keep=1).logits[0, -1].float()
                    out[g][s] = torch.log_softmax(logits, dim=-1)[letters].cpu().numpy()
                    bar.update(1)
        return out

    def _prefix_kv(self, prefix_ids: Sequence[int]):
        """Per-layer (keys, values) of the common prefix, batch 1; None when there is none."""
        import torch

        if not prefix_ids:
            return None
        x = torch.tensor([list(prefix_ids)], dtype=torch.long, device=self.device)
        cache = self.model(input_ids=x, use_cache=True).past_key_values
        self._computed += len(prefix_ids)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _answer_logprobs(self, packed: PackedBatch, prefix_kv):
        """Log-softmax over the full vocabulary at the last n_keep columns: (B, n_keep, V), float32."""
        import torch
        from transformers import DynamicCache

        dev = self.device
        allowed = torch.from_numpy(packed.allowed).to(dev)
        # An additive float mask works with both the eager and the SDPA attention paths.
        dtype = self._float_dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        self._computed += packed.input_ids.size
        cache = None
        if prefix_kv is not None:
            rows = packed.input_ids.shape[0]
            # A fresh cache per batch: the forward appends this batch's keys to it.
            cache = DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix_kv])
        out = self.model(
            input_ids=torch.from_numpy(packed.input_ids).to(dev),
            attention_mask=mask[:, None, :, :],
            position_ids=torch.from_numpy(packed.position_ids).to(dev),
            past_key_values=cache, use_cache=cache is not None,
            logits_to_keep=packed.n_keep,
        )
        return torch.log_softmax(out.logits.float(), dim=-1)

    def token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for i = 1..len(ids)-1, one causal forward pass (float64 array)."""
        import torch

        if len(ids) < 2:
            return np.empty(0, dtype=np.float64)
        x = torch.tensor(list(ids), dtype=torch.long, device=self.device)[None, :]
        with torch.inference_mode():
            logits = self.model(input_ids=x, use_cache=False).logits[0, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])[:, 0]
        return logp.double().cpu().numpy()


    def continuation_logprobs(self, context_ids: Sequence[int],
                              continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """Summed log-likelihood of each continuation after the context: one right-padded forward pass.

        The context runs once and its keys/values are shared by every continuation row;
        the head runs in float32 (`float32_head`), as for the letters.
        """
        import torch
        from transformers import DynamicCache

        if not context_ids:
            raise ValueError("a continuation needs a context of at least one token")
        if not continuations:
            return np.empty(0)
        width = max(len(c) for c in continuations)
        rows = np.full((len(continuations), width), self.pad_id, dtype=np.int64)
        keep = np.zeros((len(continuations), width), dtype=bool)
        for r, cont in enumerate(continuations):
            rows[r, :len(cont)], keep[r, :len(cont)] = cont, True
        dev = self.device
        with torch.inference_mode(), float32_head(self.model):
            ctx = torch.tensor([list(context_ids)], dtype=torch.long, device=dev)
            out = self.model(input_ids=ctx, use_cache=True, logits_to_keep=1)
            last = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
            n = len(continuations)
            cache = DynamicCache([(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1))
                                  for layer in out.past_key_values.layers])
            x = torch.from_numpy(rows).to(dev)
            # Padding sits after every real token of a row, so causal attention never lets a real token see it.
            logits = self.model(input_ids=x, past_key_values=cache, use_cache=True).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            first = last[x[:, 0]]
            rest = logp[:, :-1].gather(2, x[:, 1:, None])[:, :, 0] if width > 1 else logp[:, :0, 0]
            per_token = torch.cat([first[:, None], rest], dim=1).double().cpu().numpy()
        return np.where(keep, per_token, 0.0).sum(axis=1)


def float32_head_logits(hidden, weight, bias=None, chunk_rows: int = HEAD_CHUNK_ROWS):
    """hidden @ weight.T + bias in float32: (..., V).

    A weight in another dtype is cast `chunk_rows` rows at a time into one reused float32
    buffer, so memory beyond the model is that buffer plus the float32 logits of `hidden`'s
    positions (a fresh float32 copy per chunk would cost an allocation and its page faults
    every time, several times the cast itself on a CPU).
    """
    import torch

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    h = hidden.float()
    n_rows = weight.shape[0]
    out = h.new_empty(*h.shape[:-1], n_rows)
    buf = None if weight.dtype == torch.float32 else h.new_empty(min(chunk_rows, n_rows), weight.shape[1])
    for start in range(0, n_rows, chunk_rows):
        w = weight[start:start + chunk_rows]
        rows = slice(start, start + w.shape[0])
        if buf is not None:
            w = buf[:w.shape[0]].copy_(w)
        out[..., rows] = torch.nn.functional.linear(h, w, None if bias is None else bias[rows].float())
    return out


def float32_head_problem(model) -> str | None:
    """Why the model's output head cannot be recomputed in float32, or None when it can.

    It can when it is a plain nn.Linear with floating-point weights (any dtype). A
    bitsandbytes head (Linear8bitLt, Linear4bit: subclasses of nn.Linear holding
    int8 or packed 4-bit weights) runs its own kernel and is left alone.
    """
    import torch

    head = model.get_output_embeddings()
    if head is None:
        return "the model has no output embeddings"
    kind = f"{type(head).__module__}.{type(head).__qualname__}"
    if type(head) is not torch.nn.Linear:
        return f"its output head is a {kind}, not a plain torch.nn.Linear"
    if not head.weight.is_floating_point():
        return f"its output head holds {head.weight.dtype} weights"
    return None


@contextmanager
def float32_head(model):
    """Inside the block the model's output head computes float32 logits (`float32_head_logits`).

    The head's forward is replaced, not the model's, so the architecture's own steps
    after the head (Gemma 2/3 `final_logit_softcapping`, Cohere's `logit_scale`,
    Granite's `logits_scaling`) run unchanged, on float32 logits. A head that
    `float32_head_problem` rejects is left as it is. Yields whether the head was replaced.
    """
    if float32_head_problem(model) is not None:
        yield False
        return
    head = model.get_output_embeddings()
    own = head.__dict__.get("forward")  # an instance-level forward (an accelerate hook) is put back after

    def forward(hidden):
        return float32_head_logits(hidden, head.weight, head.bias)

    head.forward = forward
    try:
        yield True
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


@contextmanager
def _tree_attention(model, enabled: bool):
    """Eager attention for tree batches on CPU, the model's own implementation restored after.

    A tree row's 4-D mask is arbitrary, so SDPA cannot skip masked blocks and torch's CPU
    flash kernel ran these masked (rows, heads, width, width) products at about 115 GFLOP/s
    in bfloat16, where eager's plain matmuls reach the GEMM rate: on SmolLM2 in bfloat16
    eager scored 8-16% more items/s, and float32 was unchanged (docs/engine.md). On a
    GPU SDPA's kernels keep their advantage, so the model is left alone there.
    """
    current = getattr(model.config, "_attn_implementation", None)
    switch = enabled and current == "sdpa" and next(model.parameters()).device.type == "cpu"
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(current)


def smallest_sliding_window(config) -> int | None:
    """The smallest attention window of any layer (tokens), or None when every layer attends to all.

    `layer_types` (transformers 5) says which layers slide; without it a set
    `sliding_window` is taken to apply (conservative: at worst the exact path runs).
    """
    config = getattr(config, "text_config", None) or config
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


def tree_batches(plan: TreePlan, batch_size: int) -> list[list[int]]:
    """Tree indices in forward passes of about `batch_size` items, trees of similar size together (the
    passes `letter_logprobs` makes, which `auditor run --plan` samples to time)."""
    order = sorted(range(len(plan.trees)), key=lambda t: plan.trees[t].n_nodes)
    batches: list[list[int]] = []
    items = 0
    for t in order:
        if not batches or items >= batch_size:
            batches.append([])
            items = 0
        batches[-1].append(t)
        items += plan.n_items(t)
    return batches
