"""`auditor bench wanda --compare-dtype`: the mask agreement it prints counts keep/prune decisions exactly."""
from __future__ import annotations

import copy

import pytest

from auditor.benchmarks.wanda import mask_agreement
from tests.conftest import make_tiny_llama


def test_mask_agreement_counts_each_decision():
    a = make_tiny_llama()
    b = copy.deepcopy(a)
    names = ["model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"]
    up_a, up_b = a.get_submodule(names[0]).weight.data, b.get_submodule(names[0]).weight.data
    up_a[0, :10] = 0  # pruned in the first model only
    up_b[1, :6] = 0  # in the second only
    up_a[2, :4] = up_b[2, :4] = 0  # in both: agreement
    total = up_a.numel() + a.get_submodule(names[1]).weight.numel()
    out = mask_agreement(a, b, names)
    assert out["mask_agreement"] == pytest.approx((total - 16) / total)
    assert out["pruned_only_float32"] == pytest.approx(10 / total)
    assert out["pruned_only_other"] == pytest.approx(6 / total)
    assert out["mask_agreement_min_layer_name"] == names[0]
    assert out["mask_agreement_min_layer"] == pytest.approx(1 - 16 / up_a.numel())
