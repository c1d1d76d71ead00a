"""Sliding-window perplexity: window arithmetic by hand, the HF guide's recipe, the corpus cap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.core.errors import DataError
from auditor.scoring.perplexity import Window, corpus_token_ids, perplexity, sliding_windows


class ContextLengthScorer:
    """log p(x_i | context) = -len(context): the NLL of a token is the context length it was given."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def token_logprobs(self, ids):
        self.calls.append(list(ids))
        return -np.arange(1, len(ids), dtype=np.float64)


class UniformScorer:
    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def token_logprobs(self, ids):
        return np.full(len(ids) - 1, -math.log(self.vocab))


class FakeTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_windows_by_hand() -> None:
    # 10 tokens, windows of 4 every 2: [0,4) scores 1..3, then 2 new tokens per window.
    assert sliding_windows(10, 4, 2) == [Window(0, 4, 1), Window(2, 6, 4), Window(4, 8, 6), Window(6, 10, 8)]


def test_nll_by_hand() -> None:
    scorer = ContextLengthScorer()
    res = perplexity(scorer, list(range(10)), max_length=4, stride=2)
    # Contexts: 1, 2, 3 in the first window, then 2 and 3 in each of the 3 later windows.
    assert res.n_tokens == 9 and res.n_windows == 4
    assert res.nll_sum == pytest.approx(1 + 2 + 3 + 3 * (2 + 3))
    assert res.ppl == pytest.approx(math.exp(21 / 9))
    assert scorer.calls[1] == [2, 3, 4, 5]


def test_stride_equal_to_window_skips_each_window_first_token() -> None:
    assert sliding_windows(10, 4, 4) == [Window(0, 4, 1), Window(4, 8, 5), Window(8, 10, 9)]
    assert perplexity(ContextLengthScorer(), list(range(10)), 4, 4).n_tokens == 7


@pytest.mark.parametrize("n,max_length,stride", [(2, 2, 1), (37, 8, 3), (64, 16, 15), (100, 128, 64), (51, 10, 5)])
def test_every_token_scored_once_with_enough_context(n: int, max_length: int, stride: int) -> None:
    seen: list[int] = []
    for w in sliding_windows(n, max_length, stride):
        assert 0 <= w.begin < w.first_scored < w.end <= n and w.end - w.begin <= max_length
        for pos in range(w.first_scored, w.end):
            assert pos - w.begin >= min(pos, max_length - stride)
        seen.extend(range(w.first_scored, w.end))
    assert seen == list(range(1, n))


def test_uniform_model_has_perplexity_vocab() -> None:
    assert perplexity(UniformScorer(977), list(range(300)), 64, 32).ppl == pytest.approx(977)


def test_too_short_gives_nan() -> None:
    res = perplexity(ContextLengthScorer(), [7], 4, 2)
    assert math.isnan(res.ppl) and res.n_tokens == 0 and res.n_windows == 0


@pytest.mark.parametrize("max_length,stride", [(1, 1), (8, 0), (8, 9)])
def test_bad_window_settings(max_length: int, stride: int) -> None:
    with pytest.raises(ValueError):
        sliding_windows(10, max_length, stride)


def test_matches_hf_guide_recipe(tiny_llama) -> None:
    """The HF guide's loop (labels -100 on context, loss * scored tokens) gives the same NLL."""
    import torch

    from auditor.scoring.backends.torch_backend import TorchBackend

    ids = [int(t) for t in np.random.default_rng(0).integers(3, 49152, 70)]
    max_length, stride = 24, 10
    res = perplexity(TorchBackend(tiny_llama), ids, max_length, stride)
    nll, n, prev_end = 0.0, 0, 0
    with torch.inference_mode():
        for begin in range(0, len(ids), stride):
            end = min(begin + max_length, len(ids))
            trg_len = end - prev_end
            x = torch.tensor([ids[begin:end]])
            labels = x.clone()
            labels[:, :-trg_len] = -100
            valid = int((labels != -100).sum()) - 1 if begin == 0 else int((labels != -100).sum())
            nll += float(tiny_llama(input_ids=x, labels=labels).loss) * valid
            n += valid
            prev_end = end
            if end == len(ids):
                break
    assert res.n_tokens == n == len(ids) - 1
    assert res.nll_sum == pytest.approx(nll, rel=1e-5)


def test_corpus_cap_and_origin(tmp_path) -> None:
    text = tmp_path / "test.txt"
    text.write_text("abcdefghij")
    full = corpus_token_ids(FakeTokenizer(), text, max_tokens=None)
    capped = corpus_token_ids(FakeTokenizer(), text, max_tokens=4)
    assert full.ids == tuple(ord(c) for c in "abcdefghij")
    assert capped.ids == full.ids[:4]
    assert "first 4 of 10 tokens" in capped.origin and str(text) in capped.origin
    assert "all of 10 tokens" in full.origin


def test_empty_or_missing_corpus_is_a_data_error(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    with pytest.raises(DataError, match="empty"):
        corpus_token_ids(FakeTokenizer(), empty)
    with pytest.raises(DataError, match="no such"):
        corpus_token_ids(FakeTokenizer(), tmp_path / "missing.txt")


@pytest.mark.slow
def test_smollm2_prefers_real_text_to_shuffled(smollm2_model, smollm2_tokenizer) -> None:
    """On English prose the real model's perplexity is far below that of the same tokens shuffled."""
    from auditor.data.sources import resolve_corpus
    from auditor.scoring.backends.torch_backend import TorchBackend

    ids = corpus_token_ids(smollm2_tokenizer, resolve_corpus(None, "test").path, max_tokens=256).ids
    backend = TorchBackend(smollm2_model)
    real = perplexity(backend, ids, 128, 64)
    shuffled = perplexity(backend, list(np.random.default_rng(0).permutation(ids)), 128, 64)
    assert real.n_tokens == shuffled.n_tokens == len(ids) - 1
    assert real.ppl < 100 < shuffled.ppl
