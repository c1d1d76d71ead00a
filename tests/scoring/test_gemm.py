"""FLOP counts of the GEMM bound, against hand-computed values on made-up dimensions."""
from __future__ import annotations

from auditor.scoring.gemm import ModelDims, forward_flops, gemm_bound_prompts_per_s, prompt_flops

DIMS = ModelDims(n_layers=2, hidden=4, intermediate=8, n_heads=2, n_kv_heads=1, head_dim=2, vocab=10)


def test_block_params_by_hand() -> None:
    # q 4x4, k 4x2, v 4x2, o 4x4, gate/up 4x8, down 8x4 = 16+8+8+16+32+32+32 = 144 per layer.
    assert DIMS.block_params == 2 * 144


def test_prompt_flops_by_hand() -> None:
    # T = 3: linear 2*288*3 = 1728; attention 2 layers * 4 * 2 heads * 2 dims * 6 pairs = 192; head 2*4*10 = 80.
    assert prompt_flops(DIMS, 3) == 1728 + 192 + 80
    assert forward_flops(DIMS, 3, 6, 1) == prompt_flops(DIMS, 3)


def test_bound_is_rate_over_mean_flops() -> None:
    rate = 1e6
    assert gemm_bound_prompts_per_s(rate, DIMS, [3, 3]) == 2 * rate / (2 * prompt_flops(DIMS, 3))
    assert gemm_bound_prompts_per_s(rate, DIMS, []) != gemm_bound_prompts_per_s(rate, DIMS, [])  # NaN


def test_int8_peak_times_integer_products() -> None:
    """dtype "int8" times 8-bit integer matmuls (the quantized kernels' arithmetic) at every shape of a forward."""
    from auditor.scoring.gemm import measure_gemm

    m = measure_gemm(DIMS, tokens=3, head_rows=1, repeats=1, min_time_s=0.0, dtype="int8")
    assert m.dtype == "int8" and m.flops_per_s > 0
    assert set(m.per_shape_gflops) == {name for name, _, _ in DIMS.block_linears()} | {"lm_head"}
