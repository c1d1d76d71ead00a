"""GGUF quantization through llama.cpp, bits per weight measured from the file, K-quant fallback."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from auditor.artifacts.gguf_info import GGUFInfo, TensorInfo, bits_per_weight, detect_fallback, read_gguf_info
from auditor.core.errors import ModelError, SpecError
from tests.conftest import make_tiny_llama

THREADS = 1


def _hand_made_gguf(path):
    """Three tensors with hand-known sizes: Q8_0 4x64, F32 norm of 64, F16 8x64."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    q = gguf.quants.quantize(np.linspace(-1, 1, 256, dtype=np.float32).reshape(4, 64), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.add_tensor("token_embd.weight", np.zeros((8, 64), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_bits_per_weight_are_measured_from_the_file(tmp_path):
    info = read_gguf_info(_hand_made_gguf(tmp_path / "hand.gguf"))
    assert info.file_type == "Q8_0"
    assert info.type_histogram == {"F16": 1, "F32": 1, "Q8_0": 1}
    assert info.block_type_histogram == {"Q8_0": 1}  # the 1-D norm is not a weight matrix
    # Q8_0: 32 weights per 34-byte block -> 8 * 34 / 32 = 8.5 bits.
    assert info.bits_per_weight == 8.5
    # All tensors: (4*2*34 + 64*4 + 8*64*2) bytes = 1552 over 256 + 64 + 512 = 832 weights.
    assert info.bits_per_weight_model == pytest.approx(8 * 1552 / 832)
    assert info.bits_per_weight_file == pytest.approx(8 * info.size_bytes / 832)
    assert info.size_bytes > 1552  # header and alignment come on top


def test_bits_per_weight_of_nothing_is_nan():
    assert math.isnan(bits_per_weight([]))


def _info(*tensors):
    return GGUFInfo(path=None, file_type="Q3_K_M", size_bytes=0, tensors=tuple(tensors))  # type: ignore[arg-type]


def test_fallback_is_reported_with_its_types_and_cause():
    info = _info(
        TensorInfo("blk.0.attn_q.weight", "Q4_0", (576, 576), 576 * 576, 0),
        TensorInfo("blk.0.ffn_down.weight", "Q4_K", (1536, 576), 1536 * 576, 0),
        TensorInfo("blk.0.attn_norm.weight", "F32", (576,), 576, 0),
        TensorInfo("token_embd.weight", "Q8_0", (576, 49152), 576 * 49152, 0),
    )
    fb = detect_fallback(info, "Q3_K_M")
    assert fb is not None
    assert fb.tensors == ("blk.0.attn_q.weight",)
    assert fb.types == {"Q4_0": 1} and fb.row_widths == (576,)
    assert fb.share_of_weights == pytest.approx(576 / (576 + 1536))
    assert "576" in fb.describe() and "256" in fb.describe()
    assert detect_fallback(info, "Q8_0").types == {"Q4_0": 1, "Q4_K": 1}
    k_only = _info(TensorInfo("blk.0.attn_q.weight", "Q3_K", (512, 512), 512 * 512, 0))
    assert detect_fallback(k_only, "Q3_K_M") is None
    with pytest.raises(ValueError, match="Q4_K_M"):
        detect_fallback(k_only, "IQ2_XS")


def test_unreadable_gguf_is_a_model_error(tmp_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(_hand_made_gguf(tmp_path / "whole.gguf").read_bytes()[:100])
    with pytest.raises(ModelError, match="cut.gguf"):
        read_gguf_info(bad)


# Hidden 256, intermediate 512: every row width is a multiple of 256, so no K-quant may fall back.
@pytest.mark.parametrize("spec, ftype, base, low, high", [
    ("gguf-q8_0", "Q8_0", "dense", 8.5, 8.5),
    ("gguf-q4_k_m", "Q4_K_M", "dense", 4.5, 6.5625),  # Q4_K 4.5 bits, Q6_K 6.5625 bits
    # base "magnitude@0.5" only checks the chained spec name (the tiny model is not pruned here).
    ("gguf-q3_k_m", "Q3_K_M", "magnitude@0.5", 3.4375, 6.5625),  # Q3_K 3.4375 bits
])
def test_quantizer_writes_a_gguf_that_loads_in_llama_cpp(tmp_path, smollm2_tokenizer, spec, ftype, base, low, high):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend
    from compressors.base import Variant
    from compressors.registry import parse_chain

    [step] = parse_chain(spec)
    step.params.update(tokenizer=smollm2_tokenizer, n_threads=THREADS)
    model = make_tiny_llama(hidden_size=256, intermediate_size=512)
    variant = step.apply(Variant(base, model=model), workdir=tmp_path)
    assert variant.model is None and variant.runtime == "llama.cpp"
    assert variant.spec == (spec if base == "dense" else f"{base}+{spec}")
    assert variant.gguf_path.is_file() and variant.gguf_path.parent == tmp_path
    assert not list(tmp_path.glob("*source-f32*")) and not list(tmp_path.glob(".*tmp*"))
    report = variant.steps[-1]
    m = report.measured
    assert report.family == "quantize" and report.params["ftype"] == ftype and "tokenizer" not in report.params
    assert m["file_type"] == m["requested_type"] == ftype
    assert m["fallback"] is None
    assert "llama.cpp convert_hf_to_gguf.py" in m["converter"]
    assert set(m["non_block_tensor_types"]) == {"token_embd.weight"}  # tied head: no output.weight
    assert low <= m["bits_per_weight"] <= high
    assert m["bits_per_weight"] < m["bits_per_weight_model"] < 32  # embeddings/norms sit above the blocks
    assert m["bits_per_weight"] == read_gguf_info(variant.gguf_path).bits_per_weight
    if ftype != "Q8_0":
        assert set(m["block_tensor_types"]) <= {"Q3_K", "Q4_K", "Q5_K", "Q6_K"}
    backend = LlamaCppBackend(variant.gguf_path, n_ctx=64, n_threads=THREADS)
    try:
        assert np.isfinite(backend.token_logprobs([1, 504, 2283, 314, 253])).all()
    finally:
        backend.close()


def test_a_gguf_variant_cannot_be_quantized_again(tmp_path):
    from compressors.base import Variant
    from compressors.registry import parse_chain

    [step] = parse_chain("gguf-q8_0")
    with pytest.raises(SpecError, match="already a GGUF"):
        step.apply(Variant("gguf-q4_k_m", gguf_path=tmp_path / "x.gguf"), workdir=tmp_path)


@pytest.mark.slow
def test_smollm2_q3_k_m_fallback_is_detected(tmp_path, smollm2_model):
    """SmolLM2-135M's 576-wide rows cannot hold K-quants: its "Q3_K_M" is not a 3-bit file."""
    from auditor.scoring.backends.llama_backend import LlamaCppBackend
    from compressors.base import Variant
    from compressors.registry import parse_chain

    [step] = parse_chain("gguf-q3_k_m")
    step.params.update(n_threads=2)
    # The tokenizer is found from the model's name_or_path (the embedded GGUF's directory).
    variant = step.apply(Variant("dense", model=copy.deepcopy(smollm2_model)), workdir=tmp_path)
    m = variant.steps[-1].measured
    assert m["tokenizer_origin"].startswith("HF tokenizer") and "llama.cpp convert_hf_to_gguf" in m["converter"]
    fb = m["fallback"]
    assert fb is not None and fb["row_widths"] == [576]
    # 30 blocks x 6 matrices with 576-wide rows (q, k, v, o, gate, up); ffn_down rows are 1536 wide.
    assert fb["n_tensors"] == 180
    assert set(fb["types"]) <= {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"}
    assert any("180 of 272" in w for w in m["llama_cpp_warnings"])  # llama.cpp's own count agrees
    assert m["bits_per_weight"] > 4.0 and m["bits_per_weight_model"] > 5.0  # nowhere near 3.x bits
    backend = LlamaCppBackend(variant.gguf_path, n_ctx=64, n_threads=2)
    try:
        assert np.isfinite(backend.token_logprobs([1, 504, 2283, 314, 253])).all()
    finally:
        backend.close()
