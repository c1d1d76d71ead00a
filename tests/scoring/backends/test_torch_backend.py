"""Torch backend: prompt trees (KV reuse across answer orders) score exactly like one prompt at a time."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.data.prompts import PromptGroup
from auditor.scoring.backends.torch_backend import TorchBackend
from auditor.scoring.backends.trees import ancestor_mask, pack_trees, prompt_tree
from tests.conftest import make_tiny_llama

LETTERS = (330, 331, 332)  # any three ids; the check is the equality of the two paths


def no_reuse_logprobs(model, groups, letter_ids):
    """Reference: each (item, order) as its own full sequence, batch 1, full logits."""
    import torch

    out = []
    with torch.inference_mode():
        for g in groups:
            rows = []
            for s in range(len(g.suffix_ids)):
                x = torch.tensor([g.full_ids(s)])
                logp = torch.log_softmax(model(input_ids=x).logits[0, -1].float(), dim=-1)
                rows.append(logp[list(letter_ids)].numpy())
            out.append(np.array(rows))
    return out


def random_groups(n: int, seed: int = 0, vocab: int = 49152) -> list[PromptGroup]:
    """Groups with prefixes and suffixes of varied lengths, repeated orders and shared suffix starts."""
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(n):
        prefix = tuple(int(t) for t in rng.integers(3, vocab, rng.integers(3, 30)))
        a = tuple(int(t) for t in rng.integers(3, vocab, rng.integers(1, 9)))
        b = a[:1] + tuple(int(t) for t in rng.integers(3, vocab, rng.integers(1, 6)))  # shares a's first token
        c = tuple(int(t) for t in rng.integers(3, vocab, rng.integers(1, 12)))
        suffixes = [(a, b, a, c, b), (a,), (c, b)][g % 3]  # repeats as seeds can draw the same order
        groups.append(PromptGroup(f"g{g}", tuple((0, 1, 2) for _ in suffixes), prefix, suffixes))
    return groups


def shared_context_groups(n: int, seed: int = 0, vocab: int = 49152) -> list[PromptGroup]:
    """BBQ-shaped groups: one system prefix for all, contexts shared by pairs, an ambiguous context
    that starts its disambiguated one, and several answer orders per item."""
    rng = np.random.default_rng(seed)

    def toks(k: int) -> tuple[int, ...]:
        return tuple(int(t) for t in rng.integers(3, vocab, k))

    system = toks(10)
    groups = []
    for g in range(n):
        if g % 4 == 0:
            context = toks(int(rng.integers(9, 20)))
        elif g % 4 == 2:
            context = context + toks(int(rng.integers(2, 6)))  # the disambiguated context extends it
        question = toks(int(rng.integers(2, 8)))
        orders = [toks(int(rng.integers(1, 5))) for _ in range(1 + g % 3)]
        groups.append(PromptGroup(f"g{g}", tuple((0, 1, 2) for _ in orders), system + context + question,
                                  tuple(orders)))
    return groups


# "model": the tree masks go through the model's own attention (SDPA's masked path, what a GPU runs);
# "auto": an SDPA model is switched to eager for tree batches on CPU.
@pytest.mark.parametrize("attn,tree_attention", [("sdpa", "model"), ("sdpa", "auto"), ("eager", "auto")])
def test_shared_context_scores_equal_no_reuse_scores(attn: str, tree_attention: str) -> None:
    model = make_tiny_llama(attn_implementation=attn)
    groups = shared_context_groups(11)
    ref = no_reuse_logprobs(model, groups, LETTERS)
    for per_tree, nodes in ((1, 256), (4, 256), (4, 12)):
        backend = TorchBackend(model, batch_size=3, max_items_per_tree=per_tree, max_tree_nodes=nodes,
                               tree_attention=tree_attention)
        got = backend.letter_logprobs(groups, LETTERS)
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r, atol=1e-4, rtol=0)
    assert model.config._attn_implementation == attn  # restored after the tree batches


def test_tree_attention_switches_to_eager_only_inside_the_call(monkeypatch) -> None:
    model = make_tiny_llama(attn_implementation="sdpa")
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: seen.append(model.config._attn_implementation) or forward(*a, **k))
    TorchBackend(model, batch_size=4).letter_logprobs(shared_context_groups(4), LETTERS)
    assert seen and set(seen) == {"eager"} and model.config._attn_implementation == "sdpa"
    seen.clear()
    TorchBackend(model, batch_size=4, tree_attention="model").letter_logprobs(shared_context_groups(4), LETTERS)
    assert set(seen) == {"sdpa"}
    with pytest.raises(ValueError, match="tree_attention"):
        TorchBackend(model, tree_attention="flash")


def test_prompt_tree_shares_prefix_and_repeats() -> None:
    tree = prompt_tree([(5, 6, 7), (5, 6, 8), (5, 6, 7)])
    assert tree.n_nodes == 4  # 5, 6 shared; 7 and 8 are the two distinct answer nodes
    assert tree.n_answer_nodes == 2
    assert tree.ends[0] == tree.ends[2] != tree.ends[1]
    assert sorted(tree.ends) == [2, 2, 3]  # answer nodes packed last
    assert tree.token_ids[tree.ends[0]] == 7 and tree.token_ids[tree.ends[1]] == 8
    assert list(tree.positions) == [0, 1, 2, 2]
    assert list(tree.parents) == [-1, 0, 1, 1]


def test_ancestor_mask_of_a_chain_is_causal() -> None:
    assert (ancestor_mask(np.array([-1, 0, 1, 2])) == np.tril(np.ones((4, 4), dtype=bool))).all()


def test_ancestor_mask_branches_do_not_see_each_other() -> None:
    tree = prompt_tree([(1, 2, 3), (1, 4)])
    mask = ancestor_mask(tree.parents)
    end3, end4 = tree.ends
    assert not mask[end3, end4] and not mask[end4, end3]
    assert mask[end3].sum() == 3 and mask[end4].sum() == 2


def test_answer_node_that_is_an_ancestor_of_another() -> None:
    # One order's prompt a strict prefix of another's: its answer node is also an inner node.
    tree = prompt_tree([(1, 2), (1, 2, 3)])
    mask = ancestor_mask(tree.parents)
    assert mask[tree.ends[1], tree.ends[0]]
    assert list(tree.positions[list(tree.ends)]) == [1, 2]


def test_pack_trees_left_pads_and_isolates_pads() -> None:
    small, big = prompt_tree([(1, 2)]), prompt_tree([(1, 2, 3, 4)])
    packed = pack_trees([small, big], pad_id=0)
    assert packed.input_ids.tolist() == [[0, 0, 1, 2], [1, 2, 3, 4]]
    assert packed.position_ids.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert packed.allowed[0, 0].tolist() == [True, False, False, False]  # a pad sees only itself
    assert packed.allowed[0, 3].tolist() == [False, False, True, True]  # real tokens never see pads
    assert packed.n_keep == 1


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tree_scores_equal_no_reuse_scores(attn: str) -> None:
    model = make_tiny_llama(attn_implementation=attn)
    groups = random_groups(7)
    ref = no_reuse_logprobs(model, groups, LETTERS)
    got = TorchBackend(model, batch_size=3).letter_logprobs(groups, LETTERS)
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=0)


def test_batch_size_does_not_change_scores(tiny_llama) -> None:
    groups = random_groups(5, seed=1)
    one = TorchBackend(tiny_llama, batch_size=1).letter_logprobs(groups, LETTERS)
    many = TorchBackend(tiny_llama, batch_size=16).letter_logprobs(groups, LETTERS)
    for a, b in zip(one, many):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_token_logprobs_match_a_full_forward(tiny_llama) -> None:
    import torch

    ids = [5, 900, 17, 48000, 3, 3, 250]
    got = TorchBackend(tiny_llama).token_logprobs(ids)
    with torch.inference_mode():
        logp = torch.log_softmax(tiny_llama(input_ids=torch.tensor([ids])).logits[0], dim=-1)
    want = [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert TorchBackend(tiny_llama).token_logprobs([5]).shape == (0,)


def test_batch_size_must_be_positive(tiny_llama) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TorchBackend(tiny_llama, batch_size=0)
    with pytest.raises(ValueError, match="max_items_per_tree"):
        TorchBackend(tiny_llama, max_items_per_tree=0)


@pytest.mark.slow
def test_smollm2_kv_reuse_equals_no_reuse(smollm2_model, smollm2_tokenizer) -> None:
    """Spot check on the real model and real prompts: 5 answer orders of 4 fixture items."""
    from auditor.data.bbq import select_items
    from auditor.data.sources import SAMPLE_BBQ
    from auditor.scoring.engine import PromptSet

    items = select_items([SAMPLE_BBQ], n=4, seed=3).items
    prompts = PromptSet.build(smollm2_tokenizer, items, (0, 1, 2, 3, 4))
    got = TorchBackend(smollm2_model, batch_size=4).letter_logprobs(prompts.groups, prompts.letter_ids)
    ref = no_reuse_logprobs(smollm2_model, prompts.groups, prompts.letter_ids)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=0)


def test_planned_and_computed_tokens(tiny_llama) -> None:
    from auditor.scoring.backends.trees import plan_trees

    groups = shared_context_groups(8, seed=4) + random_groups(6, seed=4)
    alone = TorchBackend(tiny_llama, batch_size=1, max_items_per_tree=1)  # one tree per row: no pads
    padded = TorchBackend(tiny_llama, batch_size=16)
    for backend in (alone, padded):
        backend.letter_logprobs(groups, LETTERS)
    assert alone.planned_tokens(groups) == alone.tokens_computed == plan_trees(groups, max_items_per_tree=1).n_nodes
    # Trees of different widths share a batch: the narrower rows are left-padded.
    assert padded.planned_tokens(groups) == plan_trees(groups).n_nodes < padded.tokens_computed
