"""Full-vocabulary rows out of perplexity windows: the chunked head's rows equal the whole window's log-softmax."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.scoring.perplexity import ChunkedHeadScorer, perplexity, scored_positions, sliding_windows
from tests.conftest import make_tiny_llama


def _ids(n: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(3, 49152, n)]


def _full_logp(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1).numpy()


def test_rows_across_head_slices_equal_the_unchunked_log_softmax():
    model = make_tiny_llama(seed=2)
    ids = _ids(40)
    rows = [0, 6, 7, 13, 38]  # slices of 7 positions: first, last of a slice, first of the next, the end
    scorer = ChunkedHeadScorer(model, chunk_bytes=7 * 4 * 49152)
    logp, full = scorer.token_logprobs_rows(ids, rows)
    ref = _full_logp(model, ids)
    assert full.shape == (5, 49152) and full.dtype == np.float32
    np.testing.assert_allclose(full, ref[rows], atol=1e-5)
    np.testing.assert_allclose(logp, ref[np.arange(39), ids[1:]], atol=1e-5)
    assert scorer.token_logprobs_rows(ids, [])[1].shape == (0, 49152)


def test_perplexity_hands_each_wanted_position_once_with_its_token(tmp_path):
    from auditor.scoring.backends.torch_backend import TorchBackend

    model = make_tiny_llama(seed=2)
    ids = _ids(90, seed=1)
    scored = scored_positions(len(ids), 32, 12, bos=True)
    assert len(scored) == len(ids) == len(set(scored.tolist()))  # with BOS every token is scored once
    wanted = scored[::7]
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    plain = perplexity(TorchBackend(model), ids, 32, 12, bos_id=1)
    res = perplexity(TorchBackend(model), ids, 32, 12, bos_id=1, rows_at=wanted,
                     on_rows=lambda p, t, r: seen.append((p, t, r)))
    assert res.nll_sum == pytest.approx(plain.nll_sum, abs=1e-6 * plain.n_tokens)
    positions = np.concatenate([s[0] for s in seen])
    assert positions.tolist() == wanted.tolist()
    assert np.concatenate([s[1] for s in seen]).tolist() == [ids[p] for p in wanted]
    # each row is the distribution its scoring window gives the token: BOS + the window's tokens before it
    windows = sliding_windows(len(ids), 32, 12, bos=True)
    for pos, _, rows in seen:
        for p, row in zip(pos, rows):
            w = next(w for w in windows if w.first_scored <= p < w.end)
            window = [1] + ids[w.begin:w.end]
            np.testing.assert_allclose(row, _full_logp(model, window)[p - w.begin], atol=1e-5)
