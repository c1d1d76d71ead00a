"""Issue 28: a GGUF dequantized tensor by tensor into a float32 folder holds what `load_model` gives.

`gguf_to_float32_folder` reuses transformers' GGUF pieces per tensor instead of loading the whole
model; the reference is the model `load_model` builds (transformers' own GGUF load). Same tensor
names, same float32 values bit for bit, and a config that loads the same model.
"""
from __future__ import annotations

import json

import torch


def _folder_tensors(folder):
    from safetensors import safe_open

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            out.update({name: handle.get_tensor(name) for name in handle.keys()})
    return out


def _check(gguf_path, folder):
    from auditor.artifacts.gguf_float32 import gguf_to_float32_folder
    from auditor.artifacts.models import load_model, resolve_model

    n = gguf_to_float32_folder(gguf_path, folder)
    reference = load_model(resolve_model(gguf_path))
    want = {k: v for k, v in reference.state_dict().items()}
    got = _folder_tensors(folder)
    assert n == len(got) and set(got) <= set(want)
    assert all(v.dtype == torch.float32 for v in got.values())
    assert [k for k in got if not torch.equal(got[k], want[k])] == []
    # what is not stored is the tied head: the embedding itself once loaded
    missing = set(want) - set(got)
    assert missing <= {"lm_head.weight"} and (not missing or reference.config.tie_word_embeddings)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [type(reference).__name__]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(got)


def test_tiny_gguf_dequantized_tensor_by_tensor(tmp_path, converter, smollm2_tokenizer):
    from auditor.artifacts.gguf_writer import write_gguf
    from tests.conftest import make_tiny_llama

    path = write_gguf(make_tiny_llama(), tmp_path / "tiny.gguf", tokenizer=smollm2_tokenizer, outtype="f16").path
    _check(path, tmp_path / "folder")


def test_embedded_q4_1_model_dequantized_tensor_by_tensor(tmp_path, smollm2_source, monkeypatch):
    from auditor.artifacts import gguf_float32

    monkeypatch.setattr(gguf_float32, "SHARD_BYTES", 100_000_000)  # several shards and an index
    _check(smollm2_source.path, tmp_path / "folder")
    assert len(list((tmp_path / "folder").glob("model-*.safetensors"))) > 1
