"""Group-wise affine RTN: hand-computed codes, the scale/2 error bound, storage accounting."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressors.quantize_math import dequantize_affine, group_error_bound, n_groups, quantize_affine


def test_hand_computed_two_bit_group():
    # lo = -1, hi = 2, scale = 3 / (2^2 - 1) = 1, zero = round(1) = 1, q = round(w) + 1
    # round(0.5) = 0 (half to even), so 0.5 -> code 1 -> 0.0: error 0.5 = scale / 2 exactly.
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    qt = quantize_affine(w, bits=2, group_size=4)
    assert qt.scale.tolist() == [[1.0]] and qt.zero.tolist() == [[1.0]]
    assert qt.codes.tolist() == [[0, 1, 1, 3]]
    assert dequantize_affine(qt).tolist() == [[-1.0, 0.0, 0.0, 2.0]]


def test_range_includes_zero_for_one_signed_groups():
    # all-positive group: lo is widened to 0, so zero-point 0 and scale = max / 7
    w = torch.tensor([[0.7, 1.4, 0.35, 0.7]])
    qt = quantize_affine(w, bits=3, group_size=4)
    assert qt.zero.tolist() == [[0.0]]
    assert qt.scale.float().item() == pytest.approx(0.2, rel=1e-3)
    assert qt.scale.float().item() >= 1.4 / 7  # rounded up to fp16, never down


def test_short_last_group_and_storage_bits():
    w = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    qt = quantize_affine(w, bits=4, group_size=4)  # groups of 4, 4, 2 per row
    assert n_groups(10, 4) == 3 and qt.scale.shape == (2, 3)
    assert qt.storage_bits == 4 * 20 + 16 * 2 * 6
    # the short group is quantized on its own two weights: its range is theirs
    last = w[:, 8:]
    expected = (last.max(dim=1).values.clamp(min=0) - last.min(dim=1).values.clamp(max=0)) / 15
    assert torch.allclose(qt.scale[:, 2].float(), expected, rtol=1e-3)


def test_all_zero_group_stays_zero():
    qt = quantize_affine(torch.zeros(3, 8), bits=3, group_size=4)
    assert torch.equal(dequantize_affine(qt), torch.zeros(3, 8))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 70), bits=st.sampled_from([3, 4, 8]),
       group_size=st.sampled_from([1, 7, 16, 32, 64, 128]), sparsity=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 10_000), scale=st.sampled_from([1e-3, 0.05, 3.0]))
def test_error_within_half_scale_and_zeros_kept(rows, cols, bits, group_size, sparsity, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * scale + torch.randn(rows, 1, generator=gen) * scale
    w[torch.rand(rows, cols, generator=gen) < sparsity] = 0
    qt = quantize_affine(w, bits, group_size)
    dq = dequantize_affine(qt)
    bound = group_error_bound(qt)
    assert ((w - dq).abs() <= bound * (1 + 1e-5) + 1e-12).all()
    assert int(qt.codes.max()) <= 2 ** bits - 1
    assert (dq[w == 0] == 0).all()
    # the independent bound from the group's own range (before fp16 rounding of the scale)
    g = n_groups(cols, group_size)
    padded = torch.cat([w, w[:, -1:].expand(rows, g * group_size - cols)], dim=1).reshape(rows, g, group_size)
    span = padded.amax(-1).clamp(min=0) - padded.amin(-1).clamp(max=0)
    independent = (span / (2 ** bits - 1)).repeat_interleave(group_size, 1)[:, :cols] / 2
    ok = (w - dq).abs() <= independent * (1 + 2 ** -9) + 1e-7
    assert ok.all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        quantize_affine(torch.zeros(4), 4, 4)
    with pytest.raises(ValueError, match="bits"):
        quantize_affine(torch.zeros(2, 2), 9, 4)
    with pytest.raises(ValueError, match="group_size"):
        quantize_affine(torch.zeros(2, 2), 4, 0)
