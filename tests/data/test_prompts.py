"""Prompts: seeded answer orders and a shared token prefix that reproduces the full prompt."""
from __future__ import annotations

from auditor.data.bbq import select_items
from auditor.data.prompts import build_groups, letter_token_ids, permutation, prompt_text
from tests.conftest import SAMPLE_BBQ


def test_seed_zero_is_dataset_order_and_seeds_are_deterministic():
    assert permutation("Age/3", 0) == (0, 1, 2)
    assert permutation("Age/3", 5) == permutation("Age/3", 5)
    orders = {permutation(f"Age/{i}", 1) for i in range(40)}
    assert len(orders) > 1 and all(sorted(o) == [0, 1, 2] for o in orders)


def test_prefix_plus_suffix_is_the_full_tokenisation(smollm2_tokenizer):
    items = select_items([SAMPLE_BBQ], n=10, seed=0).items
    groups = build_groups(smollm2_tokenizer, items, seeds=(0, 1, 2, 3, 4))
    for item, group in zip(items, groups):
        assert len(group.suffix_ids) == 5 and all(len(s) >= 1 for s in group.suffix_ids)
        for i, perm in enumerate(group.perms):
            text = prompt_text(smollm2_tokenizer, item, perm)
            assert list(group.full_ids(i)) == smollm2_tokenizer.encode(text, add_special_tokens=False)
        # The context and question are in the shared prefix: the prefix is most of the prompt.
        assert len(group.prefix_ids) > 0.5 * len(group.full_ids(0))
    assert len(set(letter_token_ids(smollm2_tokenizer))) == 3
