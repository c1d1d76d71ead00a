"""Pruning masks as pure tensor functions: tensor in, boolean mask out (True = prune).

The comparison group is a named parameter: "layer" ranks all entries of a
weight matrix together (one threshold per matrix), "row" ranks each output row
separately (Wanda's choice). Counts are exact: k = round(sparsity * group size)
entries are pruned in every group, ties broken by position.
"""
from __future__ import annotations

from typing import Literal

import torch

Group = Literal["layer", "row"]


def _lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k lowest entries along the last dim (stable: earlier index first on ties)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k <= 0:
        return mask
    idx = torch.argsort(scores, dim=-1, stable=True)[..., :k]
    return mask.scatter_(-1, idx, True)


def lowest_score_mask(scores: torch.Tensor, sparsity: float, group: Group) -> torch.Tensor:
    """Prune the `sparsity` share of lowest scores in each comparison group."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if group == "layer":
        flat = scores.reshape(1, -1)
        return _lowest_k(flat, round(sparsity * flat.shape[1])).reshape(scores.shape)
    if group == "row":
        return _lowest_k(scores, round(sparsity * scores.shape[-1]))
    raise ValueError(f"unknown comparison group {group!r}; use 'layer' or 'row'")


def magnitude_mask(weight: torch.Tensor, sparsity: float, group: Group = "layer") -> torch.Tensor:
    """Prune the smallest |W| (Han et al. 2015); one threshold per matrix by default."""
    return lowest_score_mask(weight.abs().float(), sparsity, group)


def random_mask(weight: torch.Tensor, sparsity: float, generator: torch.Generator,
                group: Group = "layer") -> torch.Tensor:
    """A seeded uniform mask: random scores ranked like any other score."""
    scores = torch.rand(weight.shape, generator=generator)
    return lowest_score_mask(scores, sparsity, group)


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda importance S_ij = |W_ij| * ||X_j||_2 (Sun et al. 2023, eq. 1).

    `input_sq_norms[j]` is the sum over all calibration tokens of x_j^2 (so ||X_j||_2 is its
    square root); W is (out, in). Ranked per output row, so only the column factor matters.
    """
    if input_sq_norms.shape != weight.shape[1:]:
        raise ValueError(f"{tuple(input_sq_norms.shape)} input norms for a weight of shape {tuple(weight.shape)}")
    return weight.abs().float() * torch.sqrt(input_sq_norms.float())[None, :]


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M sparsity: in every group of M consecutive inputs of a row, prune the N lowest scores."""
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} input columns are not a multiple of M={m}")
    groups = scores.reshape(rows, cols // m, m)
    return _lowest_k(groups, n).reshape(rows, cols)
