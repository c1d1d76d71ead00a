"""The chunked LM head of perplexity: the same log-probabilities and figures as the full-vocabulary path."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.scoring.perplexity import ChunkedHeadScorer, perplexity
from tests.conftest import make_tiny_llama


def _ids(n: int, vocab: int = 49152, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(3, vocab, n)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_equals_full_vocabulary_path(dtype) -> None:
    """Old path (TorchBackend.token_logprobs, whole-window logits) vs new (slices of 7 positions)."""
    from auditor.artifacts.precision import cast_for_scoring
    from auditor.scoring.backends.torch_backend import TorchBackend

    backend = TorchBackend(cast_for_scoring(make_tiny_llama(), dtype))
    ids = _ids(90)
    chunked = ChunkedHeadScorer(backend.model, chunk_bytes=7 * 4 * 49152)
    assert chunked.chunked and chunked.positions_per_chunk(49152) == 7
    np.testing.assert_allclose(chunked.token_logprobs(ids), backend.token_logprobs(ids), rtol=0, atol=1e-4)
    old = perplexity(backend, ids, 40, 15, chunked_head=False)
    new = perplexity(backend, ids, 40, 15)
    assert (new.n_tokens, new.n_windows) == (old.n_tokens, old.n_windows)
    assert new.nll_sum == pytest.approx(old.nll_sum, abs=1e-4 * old.n_tokens)
    assert new.ppl == pytest.approx(old.ppl, rel=1e-4)


def test_chunked_with_bos_and_a_single_scored_token() -> None:
    from auditor.scoring.backends.torch_backend import TorchBackend

    backend = TorchBackend(make_tiny_llama(seed=3))
    ids = _ids(33, seed=1)
    old = perplexity(backend, ids, 16, 16, bos_id=1, chunked_head=False)
    new = perplexity(backend, ids, 16, 16, bos_id=1)
    assert new.n_tokens == old.n_tokens == len(ids)
    assert new.nll_sum == pytest.approx(old.nll_sum, abs=1e-4 * old.n_tokens)
    scorer = ChunkedHeadScorer(backend.model)
    assert scorer.token_logprobs([5]).shape == (0,)
    np.testing.assert_allclose(scorer.token_logprobs([5, 9]), backend.token_logprobs([5, 9]), atol=1e-5)


def test_final_logit_softcapping_is_applied_per_slice() -> None:
    """Gemma 2/3's tanh cap on the logits: a tiny Gemma 2 with a small cap, so the cap matters."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config

    from auditor.scoring.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=0.5,
                          sliding_window=64, max_position_embeddings=256)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    ids = _ids(40, vocab=512)
    backend = TorchBackend(model)
    scorer = ChunkedHeadScorer(model, chunk_bytes=5 * 4 * 512)
    assert scorer.softcap == 0.5
    np.testing.assert_allclose(scorer.token_logprobs(ids), backend.token_logprobs(ids), atol=1e-5)
    scorer.softcap = None  # without the cap the figures differ: the test above can fail
    assert not np.allclose(scorer.token_logprobs(ids), backend.token_logprobs(ids), atol=1e-3)


def test_rescaled_logits_and_unreached_heads_fall_back_to_the_full_path() -> None:
    from auditor.scoring.backends.torch_backend import TorchBackend

    model = make_tiny_llama()
    model.config.logit_scale = 0.25  # Cohere-style scale after the head: not reproduced by slices
    assert not ChunkedHeadScorer(model).chunked
    del model.config.logit_scale
    backend = TorchBackend(model)
    ids = _ids(20)
    scorer = ChunkedHeadScorer(model)
    scorer.head = torch_linear_never_called()  # a head the forward never calls: the full path answers
    np.testing.assert_allclose(scorer.token_logprobs(ids), backend.token_logprobs(ids), atol=1e-6)
    assert not scorer.chunked


def torch_linear_never_called():
    import torch

    return torch.nn.Linear(64, 49152, bias=False)


def test_chunked_head_keeps_peak_memory_below_the_full_logits(monkeypatch) -> None:
    """The largest float32 tensor made while scoring a window is one slice of logits, not the window's."""
    import torch

    from auditor.scoring.backends.torch_backend import TorchBackend

    model = make_tiny_llama()
    ids = _ids(500)
    sizes: list[int] = []
    real = torch.log_softmax

    def spy(x, *args, **kwargs):
        sizes.append(x.numel())
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch, "log_softmax", spy)
    perplexity(TorchBackend(model), ids, 500, 500, chunked_head=False)
    full = max(sizes)
    sizes.clear()
    perplexity(TorchBackend(model), ids, 500, 500)
    assert full == 499 * 49152
    assert max(sizes) <= (2**26 // (4 * 49152)) * 49152 < full
