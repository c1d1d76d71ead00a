"""Torch backend: HF causal LMs (float, pruned, bitsandbytes) scored in batches, with KV reuse.

KV reuse across answer orders is done with *tree attention* inside one forward
pass (as in SpecInfer, Miao et al. 2024, and Medusa, Cai et al. 2024): the
token sequences of one item under all its option orders are merged into a
prefix tree (trie), each distinct tree node is one token of the packed row,
its position id is its depth, and it attends only to its ancestors. So the
shared part (system prompt, context, question and any shared start of the
option list) is computed once and its keys/values are read by every order's
tokens; an order that repeats another (seeds can draw the same permutation)
costs nothing extra. With one order the tree is a chain and the mask is the
ordinary causal mask.

Within a row nodes may be placed in any order (positions and masks carry the
structure), so the nodes whose logits we need (the last token of each order)
are placed last and `logits_to_keep` computes the full-vocabulary head only
there. Rows are left-padded; a pad token attends only to itself so no softmax
row is empty, and no real token attends to a pad.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from auditor.backends.base import ScoringBackend
from auditor.progress import progress
from auditor.prompts import PromptGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptTree:
    """One item's prompts merged into a trie, nodes in packing order (answer nodes last).

    token_ids[i], positions[i] (= depth, 0-based) and parents[i] (-1 for a root)
    describe node i; ends[s] is the node holding the last token of sequence s.
    """

    token_ids: np.ndarray
    positions: np.ndarray
    parents: np.ndarray
    ends: tuple[int, ...]

    @property
    def n_nodes(self) -> int:
        return len(self.token_ids)

    @property
    def n_answer_nodes(self) -> int:
        return len(set(self.ends))


def prompt_tree(seqs: Sequence[Sequence[int]]) -> PromptTree:
    """Merge token sequences into a trie; identical sequences share every node.

    Nodes are numbered parents-first, then reordered so that the distinct end
    nodes come last (in order of first use), which `logits_to_keep` needs.
    """
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("prompt_tree needs at least one non-empty sequence")
    children: list[dict[int, int]] = [{}]  # node 0 is a virtual root, dropped below
    tokens, parents, depth = [-1], [-1], [-1]
    ends = []
    for seq in seqs:
        node = 0
        for tok in seq:
            nxt = children[node].get(tok)
            if nxt is None:
                nxt = len(tokens)
                children[node][tok] = nxt
                children.append({})
                tokens.append(int(tok))
                parents.append(node)
                depth.append(depth[node] + 1)
            node = nxt
        ends.append(node)
    answer_nodes = list(dict.fromkeys(ends))
    is_answer = set(answer_nodes)
    order = [n for n in range(1, len(tokens)) if n not in is_answer] + answer_nodes
    new_index = {old: new for new, old in enumerate(order)}
    new_index[0] = -1
    return PromptTree(
        token_ids=np.array([tokens[n] for n in order], dtype=np.int64),
        positions=np.array([depth[n] for n in order], dtype=np.int64),
        parents=np.array([new_index[parents[n]] for n in order], dtype=np.int64),
        ends=tuple(new_index[e] for e in ends),
    )


def ancestor_mask(parents: np.ndarray) -> np.ndarray:
    """Boolean (n, n): [i, j] is True when node j is node i or one of its ancestors.

    This is the tree-attention mask; for a chain (parents[i] = i - 1) it is the
    lower-triangular causal mask. Parents may come after children in the
    packing order, so rows are filled by walking up from each node.
    """
    n = len(parents)
    mask = np.zeros((n, n), dtype=bool)
    done = np.zeros(n, dtype=bool)

    def fill(i: int) -> None:
        # Iterative walk: collect the unfilled chain up to a filled node (or a root).
        chain = []
        while i >= 0 and not done[i]:
            chain.append(i)
            i = int(parents[i])
        for node in reversed(chain):
            p = int(parents[node])
            if p >= 0:
                mask[node] = mask[p]
            mask[node, node] = True
            done[node] = True

    for i in range(n):
        if not done[i]:
            fill(i)
    return mask


@dataclass(frozen=True)
class PackedBatch:
    """Left-padded rows of prompt trees, ready for one forward pass (numpy, backend-neutral)."""

    input_ids: np.ndarray  # (B, W) int64
    position_ids: np.ndarray  # (B, W) int64
    allowed: np.ndarray  # (B, W, W) bool: query i may attend key j
    n_keep: int  # answer nodes of every row lie in the last n_keep columns


def pack_trees(trees: Sequence[PromptTree], pad_id: int) -> PackedBatch:
    width = max(t.n_nodes for t in trees)
    batch = len(trees)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    position_ids = np.zeros((batch, width), dtype=np.int64)
    # Pads attend to themselves only, so no softmax row is empty (an empty row gives NaN).
    allowed = np.broadcast_to(np.eye(width, dtype=bool), (batch, width, width)).copy()
    for r, tree in enumerate(trees):
        off = width - tree.n_nodes
        input_ids[r, off:] = tree.token_ids
        position_ids[r, off:] = tree.positions
        allowed[r, off:, off:] = ancestor_mask(tree.parents)
    return PackedBatch(input_ids, position_ids, allowed, max(t.n_answer_nodes for t in trees))


class TorchBackend(ScoringBackend):
    """Prompt trees (shared prefixes computed once) in batches of similar size; head only at answer nodes.

    `batch_size` is the number of items (prompt groups) per forward pass; each
    item contributes all its option orders.
    """

    name = "torch"

    def __init__(self, model, *, batch_size: int = 16, pad_id: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.pad_id = pad_id

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def _float_dtype(self):
        # Parameters of a bitsandbytes model may be int8; the embeddings carry the compute dtype.
        return self.model.get_input_embeddings().weight.dtype

    def letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        import torch

        trees = [prompt_tree([g.full_ids(s) for s in range(len(g.suffix_ids))]) for g in groups]
        order = sorted(range(len(trees)), key=lambda i: trees[i].n_nodes)
        out = [np.empty((len(g.suffix_ids), len(letter_ids))) for g in groups]
        letters = torch.tensor(list(letter_ids), device=self.device)
        n_prompts = sum(len(g.suffix_ids) for g in groups)
        with torch.inference_mode(), progress(n_prompts, "prompts") as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = [trees[i] for i in idx]
                logp = self._answer_logprobs(pack_trees(batch, self.pad_id))  # (B, n_keep, V)
                picked = logp[:, :, letters].float().cpu().numpy()
                width_keep = picked.shape[1]
                for r, (i, tree) in enumerate(zip(idx, batch)):
                    # Answer nodes are the last n_answer_nodes nodes of the row, right-aligned.
                    first = tree.n_nodes - tree.n_answer_nodes
                    for s, end in enumerate(tree.ends):
                        out[i][s] = picked[r, width_keep - tree.n_answer_nodes + (end - first)]
                bar.update(sum(len(trees[i].ends) for i in idx))
        return out

    def _answer_logprobs(self, packed: PackedBatch):
        """Log-softmax over the full vocabulary at the last n_keep columns: (B, n_keep, V)."""
        import torch

        dev = self.device
        allowed = torch.from_numpy(packed.allowed).to(dev)
        # An additive float mask works with both the eager and the SDPA attention paths.
        dtype = self._float_dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        out = self.model(
            input_ids=torch.from_numpy(packed.input_ids).to(dev),
            attention_mask=mask[:, None, :, :],
            position_ids=torch.from_numpy(packed.position_ids).to(dev),
            logits_to_keep=packed.n_keep, use_cache=False,
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
