"""Prompts: balanced answer orders and a shared token prefix that reproduces the full prompt."""
from __future__ import annotations

from itertools import permutations

import pytest

from auditor.data.bbq import select_items
from auditor.data.prompts import CYCLIC_SEEDS, answer_order, build_groups, letter_token_ids, prompt_text
from tests.conftest import SAMPLE_BBQ


def test_seeds_0_to_2_are_the_rotations_and_3_to_5_the_reflections():
    assert answer_order(0) == (0, 1, 2)  # the dataset order
    rotations = [answer_order(s) for s in CYCLIC_SEEDS]
    assert rotations == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    # Every option in every position exactly once across the rotations (a Latin square).
    for position in range(3):
        assert sorted(order[position] for order in rotations) == [0, 1, 2]
    reflections = [answer_order(s) for s in (3, 4, 5)]
    assert reflections == [tuple(reversed(r)) for r in rotations]
    # Without replacement: the six seeds are the six orders of three options.
    assert sorted(answer_order(s) for s in range(6)) == sorted(permutations(range(3)))


@pytest.mark.parametrize("seed", [6, 7, -1])
def test_a_seed_outside_0_to_5_is_refused_saying_why(seed):
    with pytest.raises(ValueError, match=r"6 orders, seeds 0-2 \(the cyclic rotations\) and 3-5"):
        answer_order(seed)


def test_prefix_plus_suffix_is_the_full_tokenisation(smollm2_tokenizer):
    items = select_items([SAMPLE_BBQ], n=10, seed=0).items
    groups = build_groups(smollm2_tokenizer, items, seeds=(0, 1, 2, 3, 4))
    for item, group in zip(items, groups):
        assert len(group.suffix_ids) == 5 and all(len(s) >= 1 for s in group.suffix_ids)
        assert group.perms == tuple(answer_order(s) for s in range(5))
        for i, perm in enumerate(group.perms):
            text = prompt_text(smollm2_tokenizer, item, perm)
            assert list(group.full_ids(i)) == smollm2_tokenizer.encode(text, add_special_tokens=False)
        # The context and question are in the shared prefix: the prefix is most of the prompt.
        assert len(group.prefix_ids) > 0.5 * len(group.full_ids(0))
    assert len(set(letter_token_ids(smollm2_tokenizer))) == 3
