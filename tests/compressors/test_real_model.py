"""End to end on the embedded SmolLM2-135M (slow): Wanda from the fixture text, exact per-row counts."""
from __future__ import annotations

import copy

import pytest
import torch

from compressors.calibration import load_calibration
from compressors.registry import apply_chain
from compressors.scope import block_linears
from tests.conftest import FIXTURE_CORPUS


@pytest.mark.slow
def test_wanda_on_smollm2(smollm2_model, smollm2_tokenizer):
    dense = dict(block_linears(smollm2_model))
    model = copy.deepcopy(smollm2_model)
    variant = apply_chain("wanda@0.5", model, tokenizer=smollm2_tokenizer, calib=str(FIXTURE_CORPUS),
                          calib_samples=4, calib_seq_len=64)
    assert len(dense) == 30 * 7
    for name, linear in block_linears(variant.model):
        w0, w = dense[name].weight, linear.weight
        newly_pruned = (w == 0) & (w0 != 0)
        zeros_per_row = (w == 0).sum(dim=1)
        k = round(0.5 * w.shape[1])
        # exactly k masked per row; a weight that was already an exact zero may be kept (and still count)
        assert (zeros_per_row >= k).all() and (newly_pruned.sum(dim=1) <= k).all(), name
        kept = w != 0
        assert torch.equal(w[kept], w0[kept]), name
    measured = variant.steps[-1].measured
    assert abs(measured["sparsity_overall"] - 0.5) < 1e-3
    assert variant.steps[-1].params["calibration"] == load_calibration(
        smollm2_tokenizer, FIXTURE_CORPUS, n_samples=4, seq_len=64).origin
