"""The machine's GEMM bound for scoring prompts: FLOPs per prompt and measured matmul FLOP/s.

FLOPs of one prompt of T tokens through a Llama-family decoder (a multiply-add
counts 2 FLOPs), as in Kaplan et al. 2020 (Scaling laws, sec. 2.1) but with
the attention term for a causal prompt:

    linear    = 2 * P_block * T            P_block = L * (q + k + v + o + gate + up + down weights)
    attention = L * 2 * 2 * (H * d_head) * T * (T + 1) / 2   (QK^T and AV over the causal pairs)
    head      = 2 * hidden * vocab         (logits at the last position only)

The bound counts the causal half of the score matrix only (an ideal kernel
skips the masked half), so it is the higher, stricter bound. Norms, rotary
embeddings, activations and softmax are not counted: they are memory-bound
extras a real forward pays on top.

For prompts planned into trees (auditor.scoring.backends.trees) the same terms are
counted over what the plan computes: its distinct tokens, the (query, key)
pairs its mask allows, and one head row per answer node (forward_flops).

The FLOP/s rate is measured with the exact matmuls a forward runs: activations
(tokens x in) times the transposed weight (in x out), as nn.Linear does, at
the token count of an engine batch, weighted by how often each shape runs per
forward (the head only at one row per prompt). prompts/s bound = rate / FLOPs
per prompt.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelDims:
    """The sizes of a Llama-family decoder that decide its FLOPs."""

    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> "ModelDims":
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return cls(
            n_layers=config.num_hidden_layers, hidden=config.hidden_size,
            intermediate=config.intermediate_size, n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim, vocab=config.vocab_size,
        )

    def block_linears(self) -> tuple[tuple[str, int, int], ...]:
        """(name, in_features, out_features) of the linear layers of one decoder block."""
        h, q, kv, i = self.hidden, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.intermediate
        return (("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h))

    @property
    def block_params(self) -> int:
        """Weights of all decoder blocks' linear layers (embeddings and norms excluded)."""
        return self.n_layers * sum(a * b for _, a, b in self.block_linears())


def forward_flops(dims: ModelDims, n_tokens: int, n_attended_pairs: float, n_head_rows: int) -> float:
    """FLOPs of a forward that computes n_tokens, with n_attended_pairs (query, key) pairs per layer
    and the head at n_head_rows rows: linear + attention + head, as in the module docstring."""
    linear = 2.0 * dims.block_params * n_tokens
    attention = dims.n_layers * 4.0 * dims.n_heads * dims.head_dim * n_attended_pairs
    head = 2.0 * dims.hidden * dims.vocab * n_head_rows
    return linear + attention + head


def prompt_flops(dims: ModelDims, n_tokens: int) -> float:
    """FLOPs to score one prompt of n_tokens on its own: causal pairs T(T+1)/2, head at the last position."""
    return forward_flops(dims, n_tokens, n_tokens * (n_tokens + 1) / 2, 1)


@dataclass(frozen=True)
class GemmMeasurement:
    """Sustained matmul rate at a forward's shapes in one dtype; per-shape GFLOP/s for the record."""

    flops_per_s: float
    tokens: int  # rows of the block matmuls (one engine batch)
    head_rows: int  # rows of the head matmul (one per prompt)
    threads: int
    repeats: int
    per_shape_gflops: dict[str, float]
    dtype: str = "float32"


def measure_gemm(dims: ModelDims, tokens: int, head_rows: int, *, repeats: int = 5,
                 min_time_s: float = 0.05, dtype: str = "float32") -> GemmMeasurement:
    """Time x @ W.T for each shape of one forward (best of `repeats`) and return the weighted rate.

    `dtype` ("float32", "bfloat16", "float16") is the type of x and W: the rate is the peak of
    the precision the model computes in, so each precision is judged against its own peak.
    "int8" times 8-bit integer products summed in int32 (`torch._int_mm`): the arithmetic of
    quantized kernels (llama.cpp quantizes the activations to 8 bits), counted as 2 ops a product.

    Best-of timing gives the machine's sustained rate without interference,
    which makes the bound the higher (stricter) one.
    """
    import torch

    if tokens < 1 or head_rows < 1:
        raise ValueError("tokens and head_rows must be >= 1")
    shapes = [(name, tokens, a, b, dims.n_layers) for name, a, b in dims.block_linears()]
    shapes.append(("lm_head", head_rows, dims.hidden, dims.vocab, 1))
    total_flops = total_s = 0.0
    per_shape: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, m, k, n, count in shapes:
            if dtype == "int8":
                x = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen)
                w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
                mm = torch._int_mm
            else:
                x = torch.randn(m, k, generator=gen).to(getattr(torch, dtype))
                w = torch.randn(n, k, generator=gen).to(getattr(torch, dtype))
                mm = torch.matmul
            mm(x, w.t())  # warm-up: thread pool, packing buffers
            inner = 1
            while True:  # enough calls per sample to outlast timer noise
                t0 = time.perf_counter()
                for _ in range(inner):
                    mm(x, w.t())
                if time.perf_counter() - t0 >= min_time_s or inner >= 1024:
                    break
                inner *= 2
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(inner):
                    mm(x, w.t())
                best = min(best, (time.perf_counter() - t0) / inner)
            flops = 2.0 * m * k * n
            per_shape[name] = flops / best / 1e9
            total_flops += count * flops
            total_s += count * best
    rate = total_flops / total_s
    log.info("GEMM %.1f GFLOP/s in %s at %d tokens (%d threads)", rate / 1e9, dtype, tokens, torch.get_num_threads())
    return GemmMeasurement(rate, tokens, head_rows, torch.get_num_threads(), repeats, per_shape, dtype)


def gemm_bound_prompts_per_s(flops_per_s: float, dims: ModelDims, prompt_tokens: Sequence[int]) -> float:
    """prompts/s if every FLOP ran at `flops_per_s`: n / sum_i(prompt_flops(T_i)) * rate. NaN when empty."""
    if not prompt_tokens:
        return float("nan")
    total = sum(prompt_flops(dims, t) for t in prompt_tokens)
    return len(prompt_tokens) * flops_per_s / total
