"""GGUF export through llama.cpp's own converter: layout, values, tokenizer, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.artifacts.gguf_writer import model_architecture, tokenizer_for_model, write_gguf
from auditor.core.errors import ModelError
from tests.conftest import make_tiny_llama

THREADS = 1


def _fields(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return reader, {k: f.contents() for k, f in reader.fields.items()
                    if not k.startswith("tokenizer.ggml.") or k.endswith("_id") or k.endswith(".pre")}


def test_f32_export_layout_values_and_tokenizer(tmp_path, converter, smollm2_tokenizer):
    from gguf import GGUFReader

    from auditor.artifacts.models import resolve_model

    model = make_tiny_llama()
    exported = write_gguf(model, tmp_path / "tiny.gguf", tokenizer=smollm2_tokenizer, outtype="f32")
    assert exported.converter == converter.describe() and exported.size_bytes == exported.path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]  # the temporary HF directory is gone
    reader, fields = _fields(exported.path)
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == 0  # ALL_F32
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 2
    assert fields["tokenizer.ggml.pre"] == "smollm"  # llama.cpp's own pre-tokenizer detection
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied head
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert np.array_equal(tensors["token_embd.weight"].data, sd["model.embed_tokens.weight"])
    assert np.array_equal(tensors["blk.0.ffn_down.weight"].data, sd["model.layers.0.mlp.down_proj.weight"])
    # q rows are permuted to GGML's rotary layout: same values, another order.
    q = sd["model.layers.1.self_attn.q_proj.weight"]
    assert not np.array_equal(tensors["blk.1.attn_q.weight"].data, q)
    assert np.array_equal(np.sort(tensors["blk.1.attn_q.weight"].data, axis=None), np.sort(q, axis=None))
    # The vocabulary equals the one the embedded model ships with.
    embedded = GGUFReader(str(resolve_model(None).path)).fields
    out = reader.fields
    assert out["tokenizer.ggml.tokens"].contents() == embedded["tokenizer.ggml.tokens"].contents()
    assert out["tokenizer.ggml.merges"].contents() == embedded["tokenizer.ggml.merges"].contents()


def test_llama_cpp_tokenizes_the_export_as_the_hf_tokenizer(tmp_path, converter, smollm2_tokenizer):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    path = write_gguf(make_tiny_llama(), tmp_path / "tiny.gguf", tokenizer=smollm2_tokenizer, outtype="f16").path
    texts = ["The nurse said she would come.", "  two  spaces\nand a newline 1234 ü", "<|im_start|>user\nHi"]
    backend = LlamaCppBackend(path, n_ctx=64, n_threads=THREADS)
    try:
        assert backend.check_tokenization(smollm2_tokenizer, texts) == len(texts)
    finally:
        backend.close()


def test_f16_export_keeps_norms_f32(tmp_path, converter, smollm2_tokenizer):
    model = make_tiny_llama()
    exported = write_gguf(model, tmp_path / "tiny16.gguf", tokenizer=smollm2_tokenizer, outtype="f16")
    reader, fields = _fields(exported.path)
    assert fields["general.file_type"] == 1  # MOSTLY_F16
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
    assert types["blk.0.attn_v.weight"] == "F16"


def test_tokenizer_for_model_from_a_directory_and_from_a_gguf(tmp_path, smollm2_tokenizer):
    from auditor.artifacts.models import resolve_model

    model = make_tiny_llama()
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir)
    smollm2_tokenizer.save_pretrained(hf_dir)
    model.config._name_or_path = str(hf_dir)
    text = "A test sentence."
    assert tokenizer_for_model(model).encode(text) == smollm2_tokenizer.encode(text)
    model.config._name_or_path = str(resolve_model(None).path.parent)  # a directory holding one GGUF
    assert tokenizer_for_model(model).encode(text) == smollm2_tokenizer.encode(text)
    model.config._name_or_path = str(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="pass it explicitly"):
        tokenizer_for_model(model)


def test_a_gguf_model_finds_its_tokenizer_beside_other_ggufs(tmp_path, smollm2_source, smollm2_tokenizer):
    import shutil

    from auditor.artifacts.models import load_model, resolve_model

    shutil.copy(smollm2_source.path, tmp_path / "b-model.gguf")
    shutil.copy(smollm2_source.path, tmp_path / "a-other.gguf")  # a folder of several models
    model = load_model(resolve_model(tmp_path / "b-model.gguf"))
    assert model.config._name_or_path == str(tmp_path / "b-model.gguf")
    text = "A test sentence."
    assert tokenizer_for_model(model).encode(text) == smollm2_tokenizer.encode(text)


def test_an_architecture_nothing_converts_is_refused_before_writing(tmp_path, converter, smollm2_tokenizer):
    model = make_tiny_llama()
    model.config.architectures = ["NoSuchForCausalLM"]
    assert model_architecture(model) == "NoSuchForCausalLM"
    with pytest.raises(ModelError, match="'NoSuchForCausalLM'.*cannot convert"):
        write_gguf(model, tmp_path / "x.gguf", tokenizer=smollm2_tokenizer)
    assert not list(tmp_path.iterdir())


def test_bad_outtype_and_missing_tokenizer_are_refused(tmp_path, smollm2_tokenizer):
    with pytest.raises(ModelError, match="f32, f16"):
        write_gguf(make_tiny_llama(), tmp_path / "x.gguf", tokenizer=smollm2_tokenizer, outtype="q8")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="HF tokenizer"):
        write_gguf(make_tiny_llama(), tmp_path / "x.gguf", tokenizer=None)
