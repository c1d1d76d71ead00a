"""The minimal HF Llama -> GGUF converter: layout, values, tokenizer metadata, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.artifacts.gguf_writer import TokenizerMetadata, llama_permute, tokenizer_for_model, write_gguf
from auditor.core.errors import ModelError
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def embedded_meta():
    from auditor.artifacts.models import resolve_model

    return TokenizerMetadata.from_gguf(resolve_model(None).path)


def _fields(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return reader, {k: f.contents() for k, f in reader.fields.items()
                    if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}


def test_llama_permute_moves_rotary_halves_to_adjacent_pairs():
    # 2 heads of 4 rows: HF pairs rows (0,2),(1,3) per head; GGML wants them adjacent.
    w = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    out = llama_permute(w, n_head=2)
    assert out[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert (out[:, 1] == out[:, 0]).all()


def test_f32_export_layout_and_values(tmp_path, embedded_meta):
    import torch

    model = make_tiny_llama()
    exported = write_gguf(model, tmp_path / "tiny.gguf", tokenizer=embedded_meta, outtype="f32")
    reader, fields = _fields(exported.path)
    assert exported.n_tensors == 2 + 2 * 9  # token_embd, output_norm, 9 per block; tied: no output.weight
    assert exported.size_bytes == exported.path.stat().st_size
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == 0  # ALL_F32
    assert fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count"] == 4
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.embedding_length"] == 64
    assert fields["llama.feed_forward_length"] == 128
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["llama.rope.freq_base"] == pytest.approx(model.config.rope_parameters["rope_theta"])
    assert fields["tokenizer.ggml.bos_token_id"] == 1
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert np.array_equal(tensors["token_embd.weight"].data, sd["model.embed_tokens.weight"])
    q = sd["model.layers.1.self_attn.q_proj.weight"]
    k = sd["model.layers.1.self_attn.k_proj.weight"]
    assert np.array_equal(tensors["blk.1.attn_q.weight"].data, llama_permute(q, 4))
    assert np.array_equal(tensors["blk.1.attn_k.weight"].data, llama_permute(k, 2))
    assert not np.array_equal(tensors["blk.1.attn_q.weight"].data, q)
    assert np.array_equal(tensors["blk.0.ffn_down.weight"].data, sd["model.layers.0.mlp.down_proj.weight"])
    with torch.no_grad():
        assert list(tensors["blk.0.ffn_gate.weight"].shape) == [64, 128]  # GGUF order: ne[0] = row width


def test_f16_export_keeps_norms_f32(tmp_path, embedded_meta):
    model = make_tiny_llama()
    exported = write_gguf(model, tmp_path / "tiny16.gguf", tokenizer=embedded_meta, outtype="f16")
    reader, fields = _fields(exported.path)
    assert fields["general.file_type"] == 1  # MOSTLY_F16
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
    assert types["blk.0.attn_v.weight"] == "F16" and types["token_embd.weight"] == "F16"
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight").data
    ref = model.state_dict()["model.embed_tokens.weight"].numpy()
    assert np.abs(embd.astype(np.float32) - ref).max() <= np.abs(ref).max() * 2**-10


def test_hf_tokenizer_metadata_equals_the_embedded_ggufs(smollm2_tokenizer, embedded_meta):
    built = TokenizerMetadata.from_hf(smollm2_tokenizer, 49152)
    assert built.pre == "smollm"  # detected from the check-text hash, as upstream does
    for field in ("model", "pre", "tokens", "token_types", "merges", "special_ids", "add_bos",
                  "add_space_prefix", "chat_template"):
        assert getattr(built, field) == getattr(embedded_meta, field), field


def test_converts_an_hf_directory_with_tokenizer_json(tmp_path, smollm2_tokenizer, embedded_meta):
    from auditor.artifacts.models import load_model, resolve_model

    hf_dir = tmp_path / "hf"
    make_tiny_llama().save_pretrained(hf_dir, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(hf_dir)
    assert (hf_dir / "tokenizer.json").is_file()
    model = load_model(resolve_model(hf_dir))
    meta = tokenizer_for_model(model)
    assert meta.origin.startswith("HF tokenizer")
    exported = write_gguf(model, tmp_path / "from-dir.gguf", tokenizer=meta)
    back = TokenizerMetadata.from_gguf(exported.path)
    assert back.tokens == embedded_meta.tokens and back.merges == embedded_meta.merges
    assert back.token_types == embedded_meta.token_types and back.pre == "smollm"


def test_tokenizer_for_model_copies_from_the_single_gguf_of_its_directory(embedded_meta):
    from auditor.artifacts.models import resolve_model

    model = make_tiny_llama()
    model.config._name_or_path = str(resolve_model(None).path.parent)
    meta = tokenizer_for_model(model)
    assert meta.origin.startswith("copied from GGUF") and meta.tokens == embedded_meta.tokens


def test_tokenizer_for_model_without_a_source_is_a_clear_error(tmp_path):
    model = make_tiny_llama()
    model.config._name_or_path = str(tmp_path)
    with pytest.raises(ModelError, match="pass it explicitly"):
        tokenizer_for_model(model)


@pytest.mark.parametrize("overrides, message", [
    ({"attention_bias": True}, "bias"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "rope_type"),
    ({"vocab_size": 1000}, "vocab_size"),
])
def test_unsupported_models_are_refused_before_writing(tmp_path, embedded_meta, overrides, message):
    model = make_tiny_llama(**overrides)
    path = tmp_path / "bad.gguf"
    with pytest.raises(ModelError, match=message):
        write_gguf(model, path, tokenizer=embedded_meta)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_bad_outtype_names_the_valid_ones(tmp_path, embedded_meta):
    with pytest.raises(ModelError, match="f32, f16"):
        write_gguf(make_tiny_llama(), tmp_path / "x.gguf", tokenizer=embedded_meta, outtype="q8")  # type: ignore[arg-type]
