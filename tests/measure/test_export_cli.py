"""`auditor export`: every format written from a tiny random model loads in its runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from auditor.artifacts.sparse import load_sparse_model
from auditor.cli import main
from compressors.base import Variant
from compressors.registry import parse_chain
from tests.conftest import make_tiny_llama

IDS = [1, 5, 9, 200, 7, 4242]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_tokenizer):
    """A tiny random Llama saved as an HF directory with the SmolLM2 tokenizer: a model argument."""
    from auditor.artifacts.safetensors_dir import save_hf_dir

    return save_hf_dir(make_tiny_llama(), smollm2_tokenizer, tmp_path_factory.mktemp("tiny") / "model")


def _export(capsys, tiny_dir, *args) -> dict:
    assert main(["export", *args, "--model", str(tiny_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _pruned_logits() -> torch.Tensor:
    (step,) = parse_chain("magnitude@0.5")
    model = step.apply(Variant("dense", model=make_tiny_llama())).model
    with torch.inference_mode():
        return model(torch.tensor([IDS])).logits


def test_safetensors_export_loads_in_transformers(capsys, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    record = _export(capsys, tiny_dir, "magnitude@0.5", "--format", "safetensors", "--out", str(tmp_path / "hf"))
    assert record["layout"] == "float32" and record["size_bytes"] > 0
    model = AutoModelForCausalLM.from_pretrained(record["path"], use_safetensors=True).eval()
    with torch.inference_mode():
        assert torch.equal(model(torch.tensor([IDS])).logits, _pruned_logits())


def test_sparse_export_loads_with_the_bitmask_loader(capsys, tiny_dir, tmp_path):
    record = _export(capsys, tiny_dir, "magnitude@0.5", "--format", "sparse", "--out", str(tmp_path / "sp"),
                     "--zstd-level", "1")
    assert record["layouts"]["bitmask"]["size_bytes"] < record["dense_size_bytes"]
    assert record["layouts"]["bitmask"]["matrices_encoded"] == 14
    assert set(record["layouts"]) == {"bitmask", "csr", "zstd-1"}
    want = _pruned_logits()
    for layout in ("bitmask", "csr"):
        with torch.inference_mode():
            assert torch.equal(load_sparse_model(tmp_path / "sp", layout)(torch.tensor([IDS])).logits, want)


def _llama_logits(path) -> np.ndarray:
    from auditor.scoring.backends.llama_backend import open_llama  # AMX CPUs: see its docstring

    llm = open_llama(path, n_ctx=64, logits_all=True, verbose=False)
    try:
        llm.eval(IDS)
        return np.array(llm.scores[:len(IDS)])
    finally:
        llm.close()


def test_gguf_f32_export_loads_in_llama_cpp(capsys, tiny_dir, tmp_path):
    record = _export(capsys, tiny_dir, "dense", "--format", "gguf", "--outtype", "f32",
                     "--out", str(tmp_path / "m.gguf"))
    assert record["layout"] == "F32"
    logits = _llama_logits(record["path"])
    with torch.inference_mode():
        want = make_tiny_llama()(torch.tensor([IDS])).logits[0].numpy()
    assert np.abs(logits - want).max() < 1e-3  # F32: the same model, up to float summation order


def test_quantized_gguf_export_loads_in_llama_cpp(capsys, tiny_dir, tmp_path):
    record = _export(capsys, tiny_dir, "gguf-q8_0", "--format", "gguf", "--out", str(tmp_path / "q8.gguf"))
    from auditor.artifacts.gguf_info import read_gguf_info

    assert record["layout"] == "Q8_0"
    # Q8_0 block: 32 int8 weights + one f16 scale = 34 bytes -> 8.5 bits per block-matrix weight
    assert read_gguf_info(record["path"]).bits_per_weight == pytest.approx(8.5)
    assert np.isfinite(_llama_logits(record["path"])).all()


@pytest.mark.parametrize("args, message", [
    (["bnb-int8", "--format", "gguf"], "bnb-int8: cannot be exported as gguf: bitsandbytes model: no GGUF form"),
    (["gguf-q8_0", "--format", "safetensors"], "gguf-q8_0: cannot be exported as safetensors"),
    (["magnitud@0.5", "--format", "safetensors"], "unknown compressor 'magnitud'.*Did you mean magnitude"),
    (["dense", "--format", "safetensors", "--outtype", "f32"], "outtype 'f32': applies to the gguf format only"),
])
def test_export_errors_exit_2_with_one_clear_message(capsys, tiny_dir, tmp_path, args, message):
    import re

    assert main(["export", *args, "--model", str(tiny_dir), "--out", str(tmp_path / "x")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: library progress bars
    assert last.startswith("auditor: error: ") and re.search(message, last)
