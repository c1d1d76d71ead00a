"""`auditor bench random-model`: a random-weight model of a given shape, written shard by shard, that loads."""
from __future__ import annotations

import json

import torch

TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=256)


def test_written_model_loads_with_its_shape_and_tokenizer(tmp_path, smollm2_tokenizer):
    from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
    from auditor.benchmarks.random_model import write_random_model

    out = tmp_path / "model"
    n = write_random_model(out, TINY_SHAPE, smollm2_tokenizer, seed=3, shard_bytes=2_000_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and index["metadata"]["total_size"] == 4 * n
    model = load_model(resolve_model(out))
    assert sum(p.numel() for p in model.parameters()) == n
    assert model.config.vocab_size == len(smollm2_tokenizer) and not model.config.tie_word_embeddings
    assert torch.equal(model.model.norm.weight, torch.ones(64))  # norms are ones, matrices N(0, 0.02)
    std = float(model.model.layers[0].mlp.up_proj.weight.std())
    assert 0.015 < std < 0.025
    assert load_tokenizer(resolve_model(out)).encode("hello") == smollm2_tokenizer.encode("hello")
    again = write_random_model(tmp_path / "again", TINY_SHAPE, smollm2_tokenizer, seed=3, shard_bytes=2_000_000)
    assert again == n and (out / index["weight_map"]["lm_head.weight"]).read_bytes() == (
        tmp_path / "again" / index["weight_map"]["lm_head.weight"]).read_bytes()  # seeded: the same bytes


def test_refuses_an_existing_directory(tmp_path, capsys):
    from auditor.cli import main

    (tmp_path / "out").mkdir()
    assert main(["bench", "random-model", "--shape", "phi-3.5-mini", "--out", str(tmp_path / "out")]) == 2
    assert "exists; give a new directory" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []  # nothing written
