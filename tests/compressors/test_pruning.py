"""random / magnitude pruning on a tiny random Llama: scope, exact sparsity, bit-identical survivors."""
from __future__ import annotations

import copy

import pytest
import torch

from auditor.core.errors import SpecError
from compressors.base import Variant
from compressors.pruning import sparsity_report
from compressors.registry import parse_one
from compressors.scope import block_linears

BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _apply(spec: str, model, seed: int = 0) -> Variant:
    return parse_one(spec).apply(Variant("dense", model=model), seed=seed)


def test_scope_is_every_block_linear_and_nothing_else(tiny_llama):
    names = [name for name, _ in block_linears(tiny_llama)]
    assert len(names) == 2 * len(BLOCK_LINEARS)
    assert {n.rsplit(".", 1)[-1] for n in names} == set(BLOCK_LINEARS)


@pytest.mark.parametrize("spec", ["magnitude@0.5", "random@0.3", "magnitude@0.7", "random@0.0"])
def test_exact_sparsity_zeros_and_untouched_rest(tiny_llama, spec):
    dense = copy.deepcopy(tiny_llama)
    variant = _apply(spec, tiny_llama)
    level = variant.steps[-1].params["sparsity"]
    measured = variant.steps[-1].measured
    block = dict(block_linears(dense))
    for name, linear in block_linears(variant.model):
        w, w0 = linear.weight, block[name].weight
        k = round(level * w0.numel())  # comparison group "layer": one count per matrix
        assert int((w == 0).sum()) == k
        assert measured["sparsity_per_layer"][name] == k / w0.numel()
        kept = w != 0
        assert torch.equal(w[kept], w0[kept])  # survivors bit-identical
    assert measured["sparsity_max_deviation_weights_per_group"] <= 0.5
    # embeddings, norms (and the tied lm_head) untouched
    pruned_names = {f"{n}.weight" for n in block}
    for (name, p), (_, p0) in zip(variant.model.named_parameters(), dense.named_parameters()):
        if name not in pruned_names:
            assert torch.equal(p, p0), name


def test_magnitude_prunes_the_smallest_weights_of_each_matrix(tiny_llama):
    dense = copy.deepcopy(tiny_llama)
    variant = _apply("magnitude@0.5", tiny_llama)
    for (name, linear), (_, linear0) in zip(block_linears(variant.model), block_linears(dense)):
        a = linear0.weight.abs().flatten()
        pruned = (linear.weight == 0).flatten()
        assert a[pruned].max() <= a[~pruned].min(), name


def test_same_seed_same_model_other_seed_other_mask(tiny_llama):
    a = _apply("random@0.5", copy.deepcopy(tiny_llama), seed=7).model.state_dict()
    b = _apply("random@0.5", copy.deepcopy(tiny_llama), seed=7).model.state_dict()
    c = _apply("random@0.5", copy.deepcopy(tiny_llama), seed=8).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_step_report_records_parameters_and_time(tiny_llama):
    variant = _apply("random@0.3", tiny_llama, seed=3)
    (step,) = variant.steps
    assert variant.spec == "random@0.3" and step.spec == "random@0.3"
    assert step.params["seed"] == 3 and step.params["sparsity"] == 0.3 and step.params["group"] == "layer"
    assert step.wall_s > 0
    assert step.measured["sparsity_overall"] == pytest.approx(0.3, abs=1e-4)
    assert variant.describe()["steps"][0]["measured"]["sparsity_requested"] == 0.3


def test_sparsity_report_counts_exact_zeros(tiny_llama):
    linears = dict(block_linears(tiny_llama))
    with torch.no_grad():
        linears["model.layers.0.self_attn.q_proj"].weight[:2] = 0  # 2 of 64 rows
    report = sparsity_report(tiny_llama)
    assert report["sparsity_per_layer"]["model.layers.0.self_attn.q_proj"] == 2 / 64
    total = sum(lin.weight.numel() for lin in linears.values())
    assert report["sparsity_overall"] == 128 / total


def test_pruning_needs_a_torch_model():
    with pytest.raises(SpecError, match="torch model"):
        parse_one("magnitude@0.5").apply(Variant("gguf-q8_0", model=None))
