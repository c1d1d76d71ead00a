"""Pure mask functions: exact counts per comparison group, N:M patterns, Wanda scores."""
from __future__ import annotations

import pytest
import torch

from compressors.masks import lowest_score_mask, magnitude_mask, nm_mask, random_mask, wanda_scores


def test_row_group_prunes_round_k_lowest_in_every_row():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 5.0],
                           [0.5, 0.4, 0.3, 0.2, 0.1]])
    mask = lowest_score_mask(scores, 0.5, "row")  # k = round(2.5) = 2 (half to even)
    assert mask.tolist() == [[False, True, False, True, False],
                             [False, False, False, True, True]]


def test_layer_group_uses_one_threshold_per_matrix():
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 6.0]])
    mask = lowest_score_mask(scores, 0.5, "layer")  # 3 lowest of 6: 0.5, 1, 2
    assert mask.tolist() == [[True, True], [False, False], [True, False]]


def test_ties_are_broken_by_position():
    mask = lowest_score_mask(torch.ones(1, 4), 0.5, "row")
    assert mask.tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.3, 0.5, 0.7, 0.99])
def test_counts_are_exact(sparsity):
    scores = torch.rand(16, 40, generator=torch.Generator().manual_seed(1))
    rows = lowest_score_mask(scores, sparsity, "row")
    assert (rows.sum(dim=1) == round(sparsity * 40)).all()
    assert int(lowest_score_mask(scores, sparsity, "layer").sum()) == round(sparsity * 640)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        lowest_score_mask(torch.rand(2, 2), bad, "row")


def test_unknown_group_is_refused():
    with pytest.raises(ValueError, match="layer"):
        lowest_score_mask(torch.rand(2, 2), 0.5, "column")  # type: ignore[arg-type]


def test_magnitude_mask_prunes_smallest_absolute_values():
    w = torch.tensor([[-3.0, 0.1, 2.0, -0.2]])
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, False, True]]


def test_random_mask_is_seeded():
    w = torch.zeros(8, 8)
    a = random_mask(w, 0.5, torch.Generator().manual_seed(0))
    b = random_mask(w, 0.5, torch.Generator().manual_seed(0))
    c = random_mask(w, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c) and int(a.sum()) == 32


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 4), (4, 8)])
def test_nm_mask_prunes_exactly_n_of_every_m(n, m):
    scores = torch.rand(12, 32, generator=torch.Generator().manual_seed(2))
    groups = nm_mask(scores, n, m).reshape(12, 32 // m, m)
    assert (groups.sum(dim=-1) == n).all()
    # and they are the N lowest of their group
    kept_min = torch.where(groups, torch.inf, scores.reshape(12, -1, m)).amin(dim=-1)
    pruned_max = torch.where(groups, scores.reshape(12, -1, m), -torch.inf).amax(dim=-1)
    assert (pruned_max <= kept_min).all()


def test_nm_mask_refuses_bad_shapes_and_patterns():
    with pytest.raises(ValueError, match="multiple of M=4"):
        nm_mask(torch.rand(2, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < N < M"):
        nm_mask(torch.rand(2, 8), 4, 4)


def test_wanda_scores_multiply_weight_magnitude_by_input_norm():
    w = torch.tensor([[1.0, -2.0], [-3.0, 0.5]])
    sq = torch.tensor([4.0, 9.0])  # column norms 2 and 3
    assert wanda_scores(w, sq).tolist() == [[2.0, 6.0], [6.0, 1.5]]
    with pytest.raises(ValueError, match="input norms"):
        wanda_scores(w, torch.ones(3))
