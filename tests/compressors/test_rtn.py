"""rtn@BITS[:gGROUP] on a tiny random Llama: bound per group, scope, bits per weight, zeros kept."""
from __future__ import annotations

import copy

import pytest
import torch

from compressors.base import Variant
from compressors.registry import apply_chain, parse_one
from compressors.scope import block_linears


@pytest.mark.parametrize("spec,bits,group", [("rtn@8", 8, 128), ("rtn@4:g32", 4, 32), ("rtn@3:g64", 3, 64),
                                             ("rtn@3:g48", 3, 48)])
def test_each_group_within_half_its_range_step(tiny_llama, spec, bits, group):
    dense = copy.deepcopy(tiny_llama)
    variant = parse_one(spec).apply(Variant("dense", model=tiny_llama))
    assert variant.spec == spec
    original = dict(block_linears(dense))
    for name, linear in block_linears(variant.model):
        w0, w = original[name].weight.double(), linear.weight.double()
        for start in range(0, w0.shape[1], group):
            g0, g = w0[:, start:start + group], w[:, start:start + group]
            span = g0.amax(dim=1).clamp(min=0) - g0.amin(dim=1).clamp(max=0)
            step = span / (2 ** bits - 1)  # fp16 storage rounds the step up by at most 2^-10
            assert ((g - g0).abs() <= step[:, None] * (0.5 + 2 ** -10) + 1e-9).all(), (name, start)
            # at most 2^b distinct values per group row
            assert max(len(torch.unique(row)) for row in g) <= 2 ** bits
    assert variant.steps[-1].measured["error_max_over_bound"] <= 1 + 1e-5


def test_only_block_linears_change(tiny_llama):
    dense = copy.deepcopy(tiny_llama)
    variant = parse_one("rtn@3:g64").apply(Variant("dense", model=tiny_llama))
    quantized = {f"{n}.weight" for n, _ in block_linears(dense)}
    for (name, p), (_, p0) in zip(variant.model.named_parameters(), dense.named_parameters()):
        assert torch.equal(p, p0) == (name not in quantized), name


def test_bits_per_weight_hand_computed(tiny_llama):
    # Every block Linear has 64 or 128 inputs; with groups of 32, every row holds whole groups:
    # 4 bits per weight + (16-bit scale + 16-bit zero) / 32 weights = 5.0 bits.
    n_params = sum(p.numel() for p in tiny_llama.parameters())
    n_quant = sum(lin.weight.numel() for _, lin in block_linears(tiny_llama))
    measured = parse_one("rtn@4:g32").apply(Variant("dense", model=tiny_llama)).steps[-1].measured
    assert measured["bits_per_weight"] == 5.0
    assert measured["quantized_weights"] == n_quant
    assert measured["bits_per_weight_model"] == pytest.approx((5.0 * n_quant + 32 * (n_params - n_quant)) / n_params)


def test_default_group_larger_than_row_is_one_group_per_row(tiny_llama):
    # group 128: rows of 64 inputs are one group of 64 (4 + 32/64 bits), rows of 128 one of 128.
    linears = dict(block_linears(tiny_llama))
    expected_bits = sum(lin.weight.numel() * 4 + lin.out_features * 32 for lin in linears.values())
    n = sum(lin.weight.numel() for lin in linears.values())
    measured = parse_one("rtn@4").apply(Variant("dense", model=tiny_llama)).steps[-1].measured
    assert measured["bits_per_weight"] == pytest.approx(expected_bits / n)


def test_prune_then_quantize_keeps_pruned_zeros(tiny_llama):
    variant = apply_chain("magnitude@0.5+rtn@3:g32", tiny_llama)
    prune_step, rtn_step = variant.steps
    assert variant.spec == "magnitude@0.5+rtn@3:g32"
    assert rtn_step.measured["zeros_preserved"] is True
    assert rtn_step.measured["zeros_before"] == round(0.5 * rtn_step.measured["quantized_weights"])
    for name, linear in block_linears(variant.model):
        assert (linear.weight == 0).sum() >= prune_step.measured["sparsity_per_layer"][name] * linear.weight.numel()


def test_rtn_is_deterministic(tiny_llama):
    a = parse_one("rtn@4:g32").apply(Variant("dense", model=copy.deepcopy(tiny_llama))).model.state_dict()
    b = parse_one("rtn@4:g32").apply(Variant("dense", model=copy.deepcopy(tiny_llama))).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
