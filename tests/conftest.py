"""Shared fixtures: tiny random Llama models for mechanics, the embedded model for end-to-end checks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_BBQ = SHARED / "bbq"
SAMPLE_BBQ = ROOT / "fixtures" / "bbq_sample"
FIXTURE_CORPUS = ROOT / "fixtures" / "corpus_valid.txt"


@pytest.fixture(autouse=True)
def _own_plan_rate_cache(tmp_path_factory, monkeypatch):
    """Every test plans with an empty per-machine rate cache (auditor.study.rate_cache): no test reads
    timings another test (or the user's own plans) kept."""
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path_factory.mktemp("auditor-cache")))


def tiny_llama_config(vocab_size: int = 49152, **overrides):
    """2 layers, hidden 64: small enough for exhaustive checks, shaped like the real model."""
    from transformers import LlamaConfig

    kwargs = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def make_tiny_llama(seed: int = 0, **overrides):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(**overrides), dtype=torch.float32)
    return model.eval()


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture(scope="session")
def smollm2_source():
    from auditor.artifacts.models import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_source):
    from auditor.artifacts.models import load_tokenizer

    return load_tokenizer(smollm2_source)


@pytest.fixture(scope="session")
def smollm2_model(smollm2_source):
    """The real embedded model (dequantized Q4_1). Shared: tests must not modify it (deepcopy first)."""
    from auditor.artifacts.models import load_model

    return load_model(smollm2_source)


@pytest.fixture
def shared_bbq():
    if not SHARED_BBQ.is_dir():
        pytest.skip("../shared/bbq is absent")
    return SHARED_BBQ

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
    from auditor.artifacts.safetensors_dir import save_hf_dir

    return save_hf_dir(make_tiny_llama(), smollm2_tokenizer, tmp_path / "tiny")


@pytest.fixture(scope="session")
def converter():
    """llama.cpp's converter as `auditor setup` installed it (`make install` runs it); skip where it is absent."""
    from auditor.artifacts.llama_converter import find_converter
    from auditor.core.errors import ModelError

    try:
        return find_converter()
    except ModelError as exc:
        pytest.skip(str(exc))
