"""Prompt-tree planning: the common prefix is split off once, items sharing a start are merged."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.data.prompts import PromptGroup
from auditor.scoring.backends.trees import pack_trees, plan_trees, prompt_tree


def group(item: str, prefix: tuple[int, ...], *suffixes: tuple[int, ...]) -> PromptGroup:
    return PromptGroup(item, tuple((0, 1, 2) for _ in suffixes), prefix, suffixes)


SYSTEM = (1, 2, 3)
CONTEXT = tuple(range(100, 110))  # 10 tokens, above the 8-token merge threshold


def test_plan_splits_off_the_common_prefix_and_merges_shared_contexts() -> None:
    groups = [
        group("a", SYSTEM + CONTEXT + (50,), (7,), (8,)),
        group("b", SYSTEM + (200, 201, 202), (9,)),
        group("c", SYSTEM + CONTEXT + (51,), (7,)),
    ]
    plan = plan_trees(groups, max_items_per_tree=4)
    assert plan.prefix_ids == SYSTEM
    assert len(plan.trees) == 2  # a and c share the context; b stands alone
    merged = next(t for t, m in enumerate(plan.members) if len(m) == 3)
    assert sorted(plan.members[merged]) == [(0, 0), (0, 1), (2, 0)]
    assert plan.n_items(merged) == 2
    # The context is stored once: 10 context nodes + 2 question nodes + 3 distinct answer nodes.
    assert plan.trees[merged].n_nodes == 10 + 2 + 3
    seen = sorted(m for members in plan.members for m in members)
    assert seen == [(0, 0), (0, 1), (1, 0), (2, 0)]  # every prompt exactly once
    assert plan.n_nodes == 3 + 15 + 4


def test_plan_respects_threshold_and_cap() -> None:
    short = tuple(range(100, 105))  # 5 shared tokens: below the threshold
    groups = [group("a", SYSTEM + short + (1,), (7,)), group("b", SYSTEM + short + (2,), (7,))]
    assert len(plan_trees(groups, max_items_per_tree=4).trees) == 2
    other = group("z", SYSTEM + (999,), (7,))  # keeps the common prefix at the system part
    groups = [group(f"i{k}", SYSTEM + CONTEXT + (k,), (7,)) for k in range(5)] + [other]
    plan = plan_trees(groups, max_items_per_tree=2)
    assert plan.prefix_ids == SYSTEM
    assert [plan.n_items(t) for t in range(len(plan.trees))] == [2, 2, 1, 1]
    assert len(plan_trees(groups, max_items_per_tree=1).trees) == 6
    with pytest.raises(ValueError, match="max_items_per_tree"):
        plan_trees(groups, max_items_per_tree=0)


def test_plan_bounds_a_merged_tree_by_its_nodes() -> None:
    other = group("z", SYSTEM + (999,), (7,))
    groups = [group(f"i{k}", SYSTEM + CONTEXT + (k,), (7,), (8,)) for k in range(4)] + [other]
    # Each item alone: 10 context + 1 question + 2 answers = 13 nodes; each one merged adds 3.
    assert [t.n_nodes for t in plan_trees(groups, max_tree_nodes=1000).trees] == [22, 2]
    plan = plan_trees(groups, max_tree_nodes=16)
    assert [plan.n_items(t) for t in range(len(plan.trees))] == [2, 2, 1]
    assert all(t.n_nodes <= 16 for t in plan.trees)
    # An item wider than the bound stays alone, and every prompt is still planned once.
    plan = plan_trees(groups, max_tree_nodes=5)
    assert len(plan.trees) == 5
    assert sorted(m for members in plan.members for m in members) == sorted(
        (g, s) for g in range(4) for s in range(2)) + [(4, 0)]
    with pytest.raises(ValueError, match="max_tree_nodes"):
        plan_trees(groups, max_tree_nodes=0)


def test_plan_of_one_group_keeps_its_answer_position() -> None:
    plan = plan_trees([group("a", (5, 6, 7), (8,), (9,))], max_items_per_tree=4)
    assert plan.prefix_ids == (5, 6, 7)
    assert plan.trees[0].n_nodes == 2 and plan.trees[0].n_answer_nodes == 2
    assert plan_trees([], max_items_per_tree=4).trees == ()


def test_pack_trees_after_a_cached_prefix() -> None:
    small, big = prompt_tree([(1, 2)]), prompt_tree([(1, 2, 3)])
    packed = pack_trees([small, big], pad_id=0, prefix_len=2)
    assert packed.allowed.shape == (2, 3, 5)
    assert packed.position_ids.tolist() == [[2, 2, 3], [2, 3, 4]]
    assert packed.allowed[0, 0].tolist() == [False, False, True, False, False]  # a pad sees only itself
    assert packed.allowed[0, 2].tolist() == [True, True, False, True, True]  # prefix + ancestors, no pad
    np.testing.assert_array_equal(packed.allowed[1, :, 2:], np.tril(np.ones((3, 3), dtype=bool)))


def test_attended_pairs_of_a_chain_are_causal() -> None:
    # One prompt of 6 tokens: prefix (5 tokens) + one answer token = the causal 6 * 7 / 2 pairs.
    plan = plan_trees([group("a", (1, 2, 3, 4, 5), (6,))], max_items_per_tree=4)
    assert plan.n_nodes == 6 and plan.n_attended_pairs == 21 and plan.n_answer_nodes == 1
    # Two orders branching after the prefix: 15 prefix pairs + 6 keys for each answer node.
    plan = plan_trees([group("a", (1, 2, 3, 4, 5), (6,), (7,))], max_items_per_tree=4)
    assert plan.n_attended_pairs == 15 + 6 + 6
