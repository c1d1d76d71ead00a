"""Fixtures for compressor tests: calibration windows and a tiny HF model directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, make_tiny_llama

FIXTURE_CORPUS = ROOT / "fixtures" / "corpus_valid.txt"


@pytest.fixture
def calibration():
    """6 windows x 24 random token ids: enough tokens per input feature for a stable norm."""
    import torch

    from compressors.base import CalibrationData

    ids = torch.randint(0, 49152, (6, 24), generator=torch.Generator().manual_seed(123))
    return CalibrationData(ids, "random token ids (test)")


@pytest.fixture
def tiny_hf_dir(tmp_path: Path, smollm2_tokenizer) -> Path:
    """The tiny random Llama saved with the real SmolLM2 tokenizer, as `--model` accepts it."""
    from auditor.export.safetensors_dir import save_hf_dir

    return save_hf_dir(make_tiny_llama(), smollm2_tokenizer, tmp_path / "tiny")
