"""Issue 28: a variant built block by block into bfloat16 is the float32 build cast, bit for bit.

The reference is the path every report so far was made with: compress the float32 model whole,
then cast it (`Module.to`). The streamed build (`BlockWeights`) reads one float32 block at a
time from the dense folder, compresses it with the same code and casts it before the next one.
Both must give identical tensors, masks and step reports, for every streamable compressor, on a
Llama and on a Gemma 3 (sliding and global layers with their own masks and rotary embeddings,
which Wanda's capture must hand to each block).
"""
from __future__ import annotations

import pytest
import torch

from tests.study.test_units_memory import _worker

STREAMED = ("random@0.5", "magnitude@0.5", "wanda@0.5", "wanda-dense@0.5", "wanda@2:4")


@pytest.fixture(scope="module")
def tiny_gemma3_dir(tmp_path_factory, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    out = tmp_path_factory.mktemp("tiny-gemma3") / "gemma3"
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(out)
    return out


def _both_builds(tmp_path, model_dir, spec):
    """(streamed bfloat16 build, float32 build cast with Module.to) of `spec`, with their step reports."""
    streamed = _worker(tmp_path / "streamed", model_dir, dtype="bfloat16")
    whole = _worker(tmp_path / "whole", model_dir, dtype="float32")
    try:
        got = streamed.build(spec)
        assert streamed._built.cast_in_place  # a float32 unit would build it again
        want = whole.build(spec)
        want_steps = [s.measured for s in want.steps]
        want_state = {k: v.to(torch.bfloat16) for k, v in want.model.state_dict().items()}
        got_state = {k: v.clone() for k, v in got.model.state_dict().items()}
        return got_state, [s.measured for s in got.steps], want_state, want_steps, got.model
    finally:
        streamed.close()
        whole.close()


@pytest.mark.parametrize("spec", STREAMED)
def test_streamed_build_equals_the_float32_build_cast(tmp_path, tiny_model_dir, spec):
    got, got_steps, want, want_steps, model = _both_builds(tmp_path, tiny_model_dir, spec)
    assert got.keys() == want.keys()
    assert all(v.dtype == torch.bfloat16 for v in got.values() if v.is_floating_point())
    assert [k for k in got if not torch.equal(got[k], want[k])] == []
    assert got_steps == want_steps  # the reported sparsity per layer, deviation, untouched share
    # no float32 parameter is left: nothing of the float32 build stays resident
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_streamed_wanda_on_sliding_and_global_layers(tmp_path, tiny_gemma3_dir):
    got, got_steps, want, want_steps, _ = _both_builds(tmp_path, tiny_gemma3_dir, "wanda@0.5")
    assert [k for k in got if not torch.equal(got[k], want[k])] == []
    assert got_steps == want_steps


def test_streamed_variant_is_built_again_for_a_float32_unit(tmp_path, tiny_model_dir):
    from auditor.data.rundir import SCORE, Unit

    worker = _worker(tmp_path, tiny_model_dir, dtype="bfloat16")
    try:
        first = worker.build("magnitude@0.5").model
        assert first.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
        # a llama.cpp unit of the same variant needs its float32 weights (the GGUF F16 export): rebuilt
        worker._backend(worker._built, "torch", "float32")
        again = worker._built.variant.model
        assert again is not first and again.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
        result = worker.execute(Unit(SCORE, "magnitude@0.5", "magnitude@0.5", "torch"))
        assert result.error is None and result.descriptor["compute_dtype"] == "bfloat16"
    finally:
        worker.close()


def test_a_chain_of_two_steps_is_not_streamed(tmp_path, tiny_model_dir):
    from compressors.registry import build_variant, can_stream, parse_chain

    assert can_stream(parse_chain("magnitude@0.5")) and can_stream(parse_chain("wanda@0.5"))
    assert not can_stream(parse_chain("magnitude@0.5+rtn@4")) and not can_stream(parse_chain("rtn@4"))
    with pytest.raises(ValueError, match="block by block"):
        build_variant(parse_chain("rtn@4"), None, blocks=object())
