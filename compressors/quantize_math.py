"""Group-wise affine round-to-nearest (RTN) quantization as pure tensor functions.

A weight matrix (rows = outputs, columns = inputs) is cut into groups of
`group_size` consecutive input weights within each row; the last group of a
row is shorter when the row length is not a multiple of `group_size`. Per group
(the min-max affine scheme of GPTQ's `Quantizer`, Frantar et al. 2023):

    lo = min(min(w), 0),  hi = max(max(w), 0)
    scale = (hi - lo) / (2^b - 1)          stored as fp16, rounded up
    zero  = round(-lo / scale)              an integer in [0, 2^b - 1], stored as fp16
    q     = clamp(round(w / scale) + zero, 0, 2^b - 1)
    dq(q) = (q - zero) * scale

Widening the range to include 0 changes nothing for groups that straddle zero
(nearly all weight groups) and guarantees that 0 is representable exactly, so
pruned zeros stay exactly zero after quantization and the zero-point fits in b
bits. The scale is rounded UP to the next fp16 value so that the stored scale
still covers the whole range; hence the per-group error bound
|w - dq(q(w))| <= scale / 2 (plus float32 rounding) holds for the STORED scale.
A group of all zeros gets scale 1 (any scale reproduces it exactly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_DTYPE = torch.float16  # scale and zero-point storage (16 bits each per group)


@dataclass(frozen=True)
class AffineQuantized:
    """Integer codes (rows, cols) and per-group fp16 scale/zero (rows, n_groups)."""

    codes: torch.Tensor  # uint8 (bits <= 8), one code per weight
    scale: torch.Tensor  # float16, rows x n_groups
    zero: torch.Tensor  # float16, rows x n_groups (integers in [0, 2^bits - 1])
    bits: int
    group_size: int

    @property
    def n_weights(self) -> int:
        return self.codes.numel()

    @property
    def storage_bits(self) -> int:
        """Bits to store this tensor: b per code plus 16 per scale and per zero-point."""
        element_bits = torch.finfo(SCALE_DTYPE).bits
        return self.bits * self.codes.numel() + element_bits * (self.scale.numel() + self.zero.numel())


def n_groups(cols: int, group_size: int) -> int:
    """Groups per row: ceil(cols / group_size)."""
    return -(-cols // group_size)


def _grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """(rows, n_groups, group_size) view; a short last group is padded by repeating its last
    weight, which leaves that group's min and max unchanged."""
    rows, cols = weight.shape
    pad = n_groups(cols, group_size) * group_size - cols
    if pad:
        weight = torch.cat([weight, weight[:, -1:].expand(rows, pad)], dim=1)
    return weight.reshape(rows, -1, group_size)


def _round_up_fp16(scale: torch.Tensor) -> torch.Tensor:
    """The smallest fp16 value >= scale (elementwise)."""
    half = scale.to(SCALE_DTYPE)
    low = half.float() < scale
    if low.any():
        half[low] = torch.nextafter(half[low], torch.full_like(half[low], float("inf")))
    return half


def quantize_affine(weight: torch.Tensor, bits: int, group_size: int) -> AffineQuantized:
    """Asymmetric min-max RTN codes for a 2-D weight; see the module docstring for the formulas."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    rows, cols = weight.shape
    w = weight.detach().float()
    grouped = _grouped(w, group_size)
    qmax = 2 ** bits - 1
    lo = grouped.amin(dim=-1).clamp(max=0.0)
    hi = grouped.amax(dim=-1).clamp(min=0.0)
    span = hi - lo
    scale = _round_up_fp16(torch.where(span > 0, span / qmax, torch.ones_like(span)))
    if not torch.isfinite(scale).all():
        raise ValueError("a group's range exceeds what an fp16 scale can hold")
    scale32 = scale.float()
    zero = torch.round(-lo / scale32)
    codes = torch.clamp(torch.round(grouped / scale32[..., None]) + zero[..., None], 0, qmax)
    codes = codes.reshape(rows, -1)[:, :cols].to(torch.uint8)
    return AffineQuantized(codes, scale, zero.to(SCALE_DTYPE), bits, group_size)


def dequantize_affine(qt: AffineQuantized) -> torch.Tensor:
    """float32 weights (q - zero) * scale, group by group."""
    rows, cols = qt.codes.shape
    codes = _grouped(qt.codes.float(), qt.group_size)
    dq = (codes - qt.zero.float()[..., None]) * qt.scale.float()[..., None]
    return dq.reshape(rows, -1)[:, :cols]


def group_error_bound(qt: AffineQuantized) -> torch.Tensor:
    """Per-weight bound scale/2 of its group, shape (rows, cols): the RTN rounding bound."""
    rows, cols = qt.codes.shape
    half = (qt.scale.float() / 2).repeat_interleave(qt.group_size, dim=1)
    return half[:, :cols]
