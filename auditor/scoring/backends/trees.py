"""Prompt trees: every prompt of a scoring call merged so shared tokens are computed once.

A backend-neutral plan (numpy only). Two levels of sharing, both exact:

- the prefix common to *every* prompt (the chat template's system turn) is
  computed once per call and its keys/values are reused by every row;
- the prompts of one item under all its answer orders, and of items whose
  prompts start alike (BBQ pairs every context with a negative and a
  non-negative question, and an ambiguous context is the start of its
  disambiguated one), are merged into a prefix tree (trie) and scored with
  tree attention, as in SpecInfer (Miao et al. 2024) and Medusa (Cai et al.
  2024): each distinct node is one token of a packed row, its position id is
  its depth, and it attends only to its ancestors (and the common prefix).

Identical prompts (the same order listed twice, or items that share a prompt) cost
nothing extra. With one prompt a tree is a chain and its mask the ordinary
causal mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from auditor.data.prompts import PromptGroup, common_prefix_len

# Items are merged into one tree only when their prompts share at least this many tokens
# beyond the common prefix: a context, not a chance first word, is worth a wider row.
MIN_SHARED_TOKENS = 8
# Bounds on a merged tree (one packed row). Attention over a row costs width^2 whatever the mask
# allows, so a merge that saves a shared context can cost more than it saves: on SmolLM2 in
# bfloat16 (100 ambiguous Age items, 5 answer orders, each item's own tree about 180 nodes)
# merging up to 4 items saved 5% of the tokens and took 40% longer (docs/engine.md). A tree
# grows only while it stays within MAX_TREE_NODES; with one or two orders items still merge.
MAX_ITEMS_PER_TREE = 4
MAX_TREE_NODES = 256


@dataclass(frozen=True)
class PromptTree:
    """Token sequences merged into a trie, nodes in packing order (answer nodes last).

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
    allowed: np.ndarray  # (B, W, P + W) bool: query i may attend key j (P cached prefix keys first)
    n_keep: int  # answer nodes of every row lie in the last n_keep columns


def pack_trees(trees: Sequence[PromptTree], pad_id: int, prefix_len: int = 0) -> PackedBatch:
    """Left-pad trees into rows that follow a cached common prefix of `prefix_len` tokens.

    Keys are [prefix | row]: every real node sees the whole prefix and its own
    ancestors, positions continue after the prefix.
    """
    width = max(t.n_nodes for t in trees)
    batch = len(trees)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    position_ids = np.full((batch, width), prefix_len, dtype=np.int64)
    allowed = np.zeros((batch, width, prefix_len + width), dtype=bool)
    # Pads attend to themselves only, so no softmax row is empty (an empty row gives NaN).
    allowed[:, np.arange(width), prefix_len + np.arange(width)] = True
    for r, tree in enumerate(trees):
        off = width - tree.n_nodes
        input_ids[r, off:] = tree.token_ids
        position_ids[r, off:] = prefix_len + tree.positions
        allowed[r, off:, :prefix_len] = True
        allowed[r, off:, prefix_len + off:] = ancestor_mask(tree.parents)
    return PackedBatch(input_ids, position_ids, allowed, max(t.n_answer_nodes for t in trees))


@dataclass(frozen=True)
class TreePlan:
    """All prompts of a call: the common prefix, then trees of the remainders.

    members[t][k] = (group index, order index) of sequence k of trees[t], whose
    answer node is trees[t].ends[k]; every (group, order) appears exactly once.
    """

    prefix_ids: tuple[int, ...]
    trees: tuple[PromptTree, ...]
    members: tuple[tuple[tuple[int, int], ...], ...]

    def n_items(self, t: int) -> int:
        return len({g for g, _ in self.members[t]})

    @property
    def n_nodes(self) -> int:
        """Tokens a forward computes for the whole call (prefix once, every tree's nodes)."""
        return len(self.prefix_ids) + sum(t.n_nodes for t in self.trees)

    @property
    def n_answer_nodes(self) -> int:
        return sum(t.n_answer_nodes for t in self.trees)

    @property
    def n_attended_pairs(self) -> int:
        """(query, key) pairs the attention needs per layer: the causal prefix, then each node's
        prefix and ancestors (its position + 1 keys). Pads and masked pairs are not counted."""
        p = len(self.prefix_ids)
        return p * (p + 1) // 2 + sum(int((t.positions + p + 1).sum()) for t in self.trees)


def plan_trees(groups: Sequence[PromptGroup], *, max_items_per_tree: int = MAX_ITEMS_PER_TREE,
               max_tree_nodes: int = MAX_TREE_NODES, min_shared_tokens: int = MIN_SHARED_TOKENS) -> TreePlan:
    """Split off the prefix common to all prompts, then merge items whose prompts start alike.

    Items are sorted by their token ids so that items sharing a start are
    neighbours; a neighbour joins the current tree when it shares at least
    `min_shared_tokens` tokens with the previous item beyond the common prefix,
    the tree holds fewer than `max_items_per_tree` items, and the merged tree
    would have at most `max_tree_nodes` nodes (both bound a row's width; the
    node count is an upper bound that counts only the shared item prefixes).
    An item whose own tree is wider than the bound stays alone. The common prefix is
    never a whole prompt: each group's prefix_ids already leave one token for its
    answer position.
    """
    if not groups:
        return TreePlan((), (), ())
    if max_items_per_tree < 1 or max_tree_nodes < 1:
        raise ValueError(f"max_items_per_tree and max_tree_nodes must be >= 1, got {max_items_per_tree}, "
                         f"{max_tree_nodes}")
    n_common = common_prefix_len([g.prefix_ids for g in groups])

    def remainders(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, ...]]:
        return [groups[g].full_ids(s)[n_common:] for g, s in pairs]

    def item_pairs(g: int) -> list[tuple[int, int]]:
        return [(g, s) for s in range(len(groups[g].suffix_ids))]

    # Each item's own tree, built once: its width decides merges, and it is the row when the item stays alone.
    alone = [prompt_tree(remainders(item_pairs(g))) for g in range(len(groups))]
    order = sorted(range(len(groups)), key=lambda i: groups[i].prefix_ids)
    clusters: list[list[int]] = [[order[0]]]
    width = alone[order[0]].n_nodes
    for prev, i in zip(order, order[1:]):
        shared = common_prefix_len([groups[prev].prefix_ids, groups[i].prefix_ids]) - n_common
        own = alone[i].n_nodes
        # Sorted neighbours: the new item shares with the tree at most what it shares with `prev`.
        if (shared >= min_shared_tokens and len(clusters[-1]) < max_items_per_tree
                and width + own - shared <= max_tree_nodes):
            clusters[-1].append(i)
            width += own - shared
        else:
            clusters.append([i])
            width = own
    trees, members = [], []
    for cluster in clusters:
        pairs = [p for g in cluster for p in item_pairs(g)]
        trees.append(alone[cluster[0]] if len(cluster) == 1 else prompt_tree(remainders(pairs)))
        members.append(tuple(pairs))
    return TreePlan(tuple(groups[0].prefix_ids[:n_common]), tuple(trees), tuple(members))
