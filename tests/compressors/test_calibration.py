"""Calibration windows: shape, seeded offsets, fixture fallback text, clear errors."""
from __future__ import annotations

import pytest
import torch

from auditor.core.errors import DataError, SpecError
from compressors.calibration import load_calibration
from tests.conftest import FIXTURE_CORPUS


class WordTokenizer:
    """One id per whitespace-separated word: enough to test window mechanics."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(word) for word in text.split()]


def test_windows_are_contiguous_slices_of_the_text(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join("x" * (1 + i % 7) for i in range(500)))
    ids = WordTokenizer().encode(text.read_text())
    cal = load_calibration(WordTokenizer(), text, n_samples=5, seq_len=20, seed=3)
    assert cal.input_ids.shape == (5, 20) and cal.input_ids.dtype == torch.long
    for row in cal.input_ids.tolist():
        assert any(ids[s:s + 20] == row for s in range(len(ids) - 20))
    assert "5 x 20 tokens, seed 3" in cal.origin and str(text) in cal.origin


def test_same_seed_same_windows(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join("ab"[i % 2] * (1 + i % 13) for i in range(1000)))
    a = load_calibration(WordTokenizer(), text, n_samples=4, seq_len=16, seed=0).input_ids
    b = load_calibration(WordTokenizer(), text, n_samples=4, seq_len=16, seed=0).input_ids
    c = load_calibration(WordTokenizer(), text, n_samples=4, seq_len=16, seed=1).input_ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_errors_name_the_file_or_option(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    with pytest.raises(DataError, match="short.txt.*5 tokens"):
        load_calibration(WordTokenizer(), short, n_samples=2, seq_len=16)
    with pytest.raises(DataError, match="no such text file"):
        load_calibration(WordTokenizer(), tmp_path / "missing.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(DataError, match="not UTF-8"):
        load_calibration(WordTokenizer(), binary)
    with pytest.raises(SpecError, match="positive"):
        load_calibration(WordTokenizer(), short, n_samples=0)


def test_fixture_text_fills_the_default_windows(smollm2_tokenizer):
    """The project's own fallback text is long enough for 32 x 256 windows with the real tokenizer."""
    cal = load_calibration(smollm2_tokenizer, FIXTURE_CORPUS)
    assert cal.input_ids.shape == (32, 256)
    assert len(smollm2_tokenizer.encode(FIXTURE_CORPUS.read_text(), add_special_tokens=False)) > 8 * 256
