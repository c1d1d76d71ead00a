"""Wanda on a tiny random Llama, checked against an independent brute-force computation.

The brute force runs the WHOLE model forward (the model's own masks and rotary
embeddings), captures each Linear's inputs with hooks, computes ||X_j||_2 in
float64 with torch.linalg.vector_norm and ranks each row with Python's sorted().
For sequential Wanda, block i must see the outputs of the already-pruned blocks
0..i-1 and its own dense weights: a hybrid model with exactly that is built.
"""
from __future__ import annotations

import copy

import pytest
import torch

from auditor.core.errors import SpecError
from compressors.base import CalibrationData, Variant
from compressors.registry import parse_one
from compressors.scope import block_linears, decoder_layers


def _captured_inputs(model, ids: torch.Tensor, layer_index: int) -> dict[str, torch.Tensor]:
    """Every input row (token) seen by each Linear of block `layer_index`, in float64."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in decoder_layers(model)[layer_index].named_modules():
        if isinstance(module, torch.nn.Linear):
            def hook(mod, args, out, name=name):
                seen.setdefault(name, []).append(args[0].reshape(-1, mod.in_features).double())
            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return {name: torch.cat(rows) for name, rows in seen.items()}


def _brute_force_mask(weight: torch.Tensor, inputs: torch.Tensor, sparsity: float):
    """(mask, scores, per-row threshold) from S_ij = |W_ij| * ||X_j||_2, k = round(s * cols)."""
    norms = torch.linalg.vector_norm(inputs, ord=2, dim=0)
    scores = weight.double().abs() * norms[None, :]
    rows, cols = scores.shape
    k = round(sparsity * cols)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    thresholds = torch.zeros(rows, dtype=torch.float64)
    for r in range(rows):
        order = sorted(range(cols), key=lambda j: (scores[r, j].item(), j))
        mask[r, order[:k]] = True
        thresholds[r] = (scores[r, order[k - 1]] + scores[r, order[k]]) / 2
    return mask, scores, thresholds


def _assert_masks_agree(name, pruned_w, dense_w, expected, scores, thresholds):
    got = pruned_w == 0
    # Float32 vs float64 arithmetic may only disagree on a score within 1e-5 of its row's threshold.
    ambiguous = (scores - thresholds[:, None]).abs() <= 1e-5 * thresholds[:, None]
    assert torch.equal(got[~ambiguous], expected[~ambiguous]), name
    assert int(ambiguous.sum()) <= 2, name  # near-ties are rare; many would mean a wrong score
    assert torch.equal(pruned_w[~got], dense_w[~got]), name  # survivors bit-identical


def test_sequential_wanda_equals_brute_force(tiny_llama, calibration):
    dense = copy.deepcopy(tiny_llama)
    variant = parse_one("wanda@0.5").apply(Variant("dense", model=tiny_llama), calibration=calibration)
    pruned = variant.model
    for i in range(len(decoder_layers(dense))):
        hybrid = copy.deepcopy(dense)
        for j in range(i):  # blocks before i pruned, block i and later dense
            decoder_layers(hybrid)[j].load_state_dict(decoder_layers(pruned)[j].state_dict())
        inputs = _captured_inputs(hybrid, calibration.input_ids, i)
        dense_linears = dict(decoder_layers(dense)[i].named_modules())
        for name, module in decoder_layers(pruned)[i].named_modules():
            if isinstance(module, torch.nn.Linear):
                w0 = dense_linears[name].weight
                expected, scores, thr = _brute_force_mask(w0, inputs[name], 0.5)
                _assert_masks_agree(f"layers.{i}.{name}", module.weight, w0, expected, scores, thr)
    measured = variant.steps[-1].measured
    assert measured["sparsity_overall"] == 0.5
    assert all(v == 0.5 for v in measured["sparsity_per_layer"].values())


def test_propagation_matters(tiny_llama, calibration):
    """Block 1's mask from pruned-block-0 inputs differs from the dense-input mask somewhere,
    so the sequential test above is not passing by accident."""
    seq = parse_one("wanda@0.5").apply(Variant("dense", model=copy.deepcopy(tiny_llama)), calibration=calibration)
    dense_norms = parse_one("wanda@0.5")
    dense_norms.sequential = False
    den = dense_norms.apply(Variant("dense", model=copy.deepcopy(tiny_llama)), calibration=calibration)
    a = dict(block_linears(seq.model))
    b = dict(block_linears(den.model))
    assert all(torch.equal(a[n].weight, b[n].weight) for n in a if n.startswith("model.layers.0."))
    assert not all(torch.equal(a[n].weight, b[n].weight) for n in a if n.startswith("model.layers.1."))


def test_wanda_dense_uses_dense_inputs_and_skips_o_and_down(tiny_llama, calibration):
    dense = copy.deepcopy(tiny_llama)
    variant = parse_one("wanda-dense@0.5").apply(Variant("dense", model=tiny_llama), calibration=calibration)
    for i in range(len(decoder_layers(dense))):
        inputs = _captured_inputs(dense, calibration.input_ids, i)  # dense model only
        dense_linears = dict(decoder_layers(dense)[i].named_modules())
        for name, module in decoder_layers(variant.model)[i].named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            w0 = dense_linears[name].weight
            if name.endswith(("o_proj", "down_proj")):
                assert torch.equal(module.weight, w0), name
                continue
            expected, scores, thr = _brute_force_mask(w0, inputs[name], 0.5)
            _assert_masks_agree(f"layers.{i}.{name}", module.weight, w0, expected, scores, thr)
    step = variant.steps[-1]
    assert step.params["skipped"] == ["o_proj", "down_proj"] and step.params["block_inputs"] == "dense model"
    assert step.measured["sparsity_pruned_layers"] == 0.5
    assert step.measured["sparsity_overall"] < 0.5


@pytest.mark.parametrize("spec,n,m", [("wanda@2:4", 2, 4), ("wanda@1:4", 1, 4), ("wanda-dense@4:8", 4, 8)])
def test_nm_masks_have_exactly_n_zeros_in_every_group(tiny_llama, calibration, spec, n, m):
    variant = parse_one(spec).apply(Variant("dense", model=tiny_llama), calibration=calibration)
    assert variant.spec == spec
    skipped = variant.steps[-1].params["skipped"]
    for name, linear in block_linears(variant.model):
        zeros = (linear.weight == 0).reshape(linear.out_features, -1, m).sum(dim=-1)
        if name.rsplit(".", 1)[-1] in skipped:
            assert int(zeros.sum()) == 0
        else:
            assert (zeros == n).all(), name


def test_nm_pattern_must_divide_the_inputs(calibration):
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama(hidden_size=68, intermediate_size=136, num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(SpecError, match="not a multiple of M=8"):
        parse_one("wanda@2:8").apply(Variant("dense", model=model), calibration=calibration)


def test_same_calibration_gives_identical_model(tiny_llama, calibration):
    a = parse_one("wanda@0.7").apply(Variant("dense", model=copy.deepcopy(tiny_llama)), calibration=calibration)
    b = parse_one("wanda@0.7").apply(Variant("dense", model=copy.deepcopy(tiny_llama)), calibration=calibration)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    step = a.steps[-1]
    assert step.params["calibration_samples"] == 6 and step.params["calibration_seq_len"] == 24
    assert step.measured["sparsity_max_deviation_weights_per_group"] <= 0.5  # k = round(0.7 * 64) = 45


def test_batching_does_not_change_the_mask(tiny_llama, calibration):
    one = parse_one("wanda@0.5")
    one.params["batch_size"] = 1
    a = one.apply(Variant("dense", model=copy.deepcopy(tiny_llama)), calibration=calibration)
    b = parse_one("wanda@0.5").apply(Variant("dense", model=copy.deepcopy(tiny_llama)), calibration=calibration)
    za = {n: l.weight == 0 for n, l in block_linears(a.model)}
    zb = {n: l.weight == 0 for n, l in block_linears(b.model)}
    differing = sum(int((za[n] != zb[n]).sum()) for n in za)
    assert differing <= 4  # at most a near-tie or two may flip with float summation order


def test_wanda_needs_calibration(tiny_llama):
    with pytest.raises(SpecError, match="calibration"):
        parse_one("wanda@0.5").apply(Variant("dense", model=tiny_llama))


def test_calibration_must_be_windows(tiny_llama):
    """Calibration windows are (n_samples, seq_len) token ids; a 1-D tensor is refused, not reshaped."""
    bad = CalibrationData(torch.arange(10), "1-D")
    with pytest.raises(SpecError, match=r"\(n_samples, seq_len\)"):
        parse_one("wanda@0.5").apply(Variant("dense", model=tiny_llama), calibration=bad)


@pytest.mark.parametrize("spec", ["wanda@0.5", "wanda-dense@0.5"])
def test_calibration_passes_count_the_block_forwards_plan_pays_for(calibration, spec):
    """`auditor run --plan` prices a Wanda build as calibration_passes forwards over the calibration tokens:
    that must be what wanda_prune computes (block forwards per block, counted by a block's first Linear,
    which runs only when the block really computes; rounded up: the last block's pruned outputs are never
    needed). The capture of the blocks' arguments computes no block."""
    from tests.conftest import make_tiny_llama

    n_layers = 6
    model = make_tiny_llama(num_hidden_layers=n_layers)
    calls = [0]
    handles = [layer.self_attn.q_proj.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
               for layer in decoder_layers(model)]
    step = parse_one(spec)
    step.params["batch_size"] = len(calibration.input_ids)  # one batch: a call is one pass over the tokens
    step.apply(Variant("dense", model, None, []), calibration=calibration)
    for h in handles:
        h.remove()
    assert step.calibration_passes == -(-calls[0] // n_layers)
