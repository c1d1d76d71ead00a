"""Predicted peak memory per step (auditor.study.memory_plan) and the refusal before a run (issue 28 item 4)."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from auditor.cli import main
from auditor.data.rundir import PPL, SCORE, Unit
from auditor.artifacts.gguf_float32 import SHARD_BYTES
from auditor.scoring.perplexity import HEAD_CHUNK_BYTES
from auditor.study.memory_plan import (FIXED_BYTES, GB, StepPeak, UnitMemory, head_slice_bytes, plan_memory, refusals,
                                       step_peak_bytes, unit_steps)
from tests.conftest import SAMPLE_BBQ
from tests.study.conftest import write_study

# Llama-3.1-8B's shape (its config.json on the Hub), declared float32 so the folder is its own float32
# weights folder: the bfloat16 scoring unit then holds only bf16 weights.
LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}


def _llama_params(c: dict) -> int:
    """Parameters of a Llama by hand: embedding and untied head, per block q/k/v/o, MLP and two norms, final norm."""
    h, i, kv = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"] * c[
        "num_key_value_heads"]
    block = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return 2 * c["vocab_size"] * h + c["num_hidden_layers"] * block + h


def test_step_peak_is_the_bound_of_docs_memory():
    """1.5 GB + 1.25 x the weights in the step's dtype (+ extra): 1e9 parameters are 4.0 GB in bf16, 6.5 in float32."""
    assert step_peak_bytes(10**9, "bfloat16") == pytest.approx(1.5e9 + 1.25 * 2e9)
    assert step_peak_bytes(10**9, "float32") == pytest.approx(1.5e9 + 1.25 * 4e9)
    assert step_peak_bytes(10**9, "float32", 1e8) == pytest.approx(6.6e9)
    assert step_peak_bytes(0, "bfloat16") == FIXED_BYTES
    with pytest.raises(ValueError, match="int4"):
        step_peak_bytes(10, "int4")


def test_head_slice_is_64_mib_of_logits_at_most_the_window():
    rows = HEAD_CHUNK_BYTES // (4 * 49152)  # 341 positions per slice at SmolLM2's vocabulary
    assert head_slice_bytes(49152, 2048, "bfloat16") == rows * 49152 * (2 + 8)
    assert head_slice_bytes(49152, 100, "float32") == 100 * 49152 * (4 + 8)  # a short window is one slice
    assert head_slice_bytes(10**9, 2048, "float32") == 10**9 * 12  # a huge vocabulary: one position per slice


def _steps(unit, **kw):
    args = dict(dtype="bfloat16", n_params=10**9, vocab=1000, hidden=64, source_float32=True)
    args.update(kw)
    return unit_steps(unit, **args)


def test_unit_steps_follow_what_the_worker_does():
    dense = Unit(SCORE, "dense", "dense", "torch")
    assert [s.step for s in _steps(dense)] == ["score bfloat16"]
    assert [s.step for s in _steps(dense, source_float32=False)] == ["load (float32 folder)", "score bfloat16"]
    precision = Unit(SCORE, "dense-float32", "dense", "torch")
    assert UnitMemory(precision, _steps(precision, dtype="float32")).peak.step == "score float32"
    wanda = Unit(SCORE, "wanda@0.5", "wanda@0.5", "torch")
    built = _steps(wanda, calibration_tokens=32 * 512)  # built block by block into bfloat16
    assert built[0].step == "build wanda@0.5 (by block)" and built[0].dtype == "bfloat16"
    assert built[0].peak_bytes == step_peak_bytes(10**9, "bfloat16", 2 * 4 * 32 * 512 * 64)
    whole = _steps(Unit(SCORE, "rtn@4", "rtn@4", "torch"))  # compressed whole in float32, then cast
    assert whole[0].step == "build rtn@4" and whole[0].dtype == "float32"
    assert _steps(wanda, dtype="float32")[0].dtype == "float32"
    from_gguf = _steps(dense, source_float32=False, source_gguf=True)
    assert from_gguf[0].step.startswith("load (GGUF")
    assert from_gguf[0].peak_bytes == pytest.approx(1.5e9 + 1.25 * (SHARD_BYTES + 3 * 4 * 1000 * 64))
    export = _steps(Unit(SCORE, "dense-gguf-f16", "dense", "llama.cpp"))
    assert [s.step for s in export] == ["export GGUF F16 (from the float32 folder)", "score llama.cpp"]
    assert export[0].peak_bytes == pytest.approx(1.5e9 + 1.25 * 3 * 4 * 1000 * 64)  # no weights held
    quantized = _steps(Unit(SCORE, "gguf-q4_k_m", "gguf-q4_k_m", "llama.cpp"))
    assert quantized[0].step == "build gguf-q4_k_m (from the float32 folder)"
    assert _steps(Unit(SCORE, "bnb-nf4", "bnb-nf4", "torch"))[0].dtype == "float32"  # the folder's pages, read
    chained = _steps(Unit(SCORE, "wanda@0.5+gguf-q4_k_m", "wanda@0.5+gguf-q4_k_m", "llama.cpp"))
    assert chained[0].step == "build wanda@0.5+gguf-q4_k_m" and chained[0].dtype == "float32"  # pruned whole
    ppl = _steps(Unit(PPL, "gguf-q4_k_m", "gguf-q4_k_m", "llama.cpp"), window=2048)
    assert ppl[-1].peak_bytes == step_peak_bytes(10**9, "gguf", 4.0 * 2048 * 1000)
    torch_ppl = _steps(Unit(PPL, "dense", "dense", "torch"), window=2048)
    assert torch_ppl[-1].peak_bytes == step_peak_bytes(10**9, "bfloat16", head_slice_bytes(1000, 2048, "bfloat16"))


def test_refusal_names_the_unit_and_the_step():
    unit = Unit(SCORE, "dense-float32", "dense", "torch")
    memory = [UnitMemory(unit, (StepPeak("score float32", "float32", 33.1e9),))]
    [line] = refusals(memory, 23.4e9)
    assert line.startswith(f"unit {unit.name} needs ~33.1 GB at step 'score float32' (predicted); "
                           "this machine has 23.4 GB available")
    assert refusals(memory, 33.2e9) == []
    [limited] = refusals(memory, 24e9, limit_given=True)
    assert "at step 'score float32' (predicted); --memory-limit is 24.0 GB; drop it" in limited


@pytest.fixture
def fake_8b(tmp_path, smollm2_tokenizer):
    """Llama-3.1-8B's config, a real (small) tokenizer, and a one-tensor safetensors file: no 8B weights."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "llama-8b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    save_file({"placeholder": torch.zeros(1)}, str(folder / "model.safetensors"))  # never read by a plan
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def _study(tmp_path, model):
    return write_study(tmp_path / "8b.toml", {
        "name": "eight-b", "output_dir": str(tmp_path / "reports"), "models": [str(model)], "seeds": [0],
        "null_baselines": False},
        data={"bbq": str(SAMPLE_BBQ), "n_items": 4}, execution={"batch_size": 2, "dtype": "bfloat16"})


def test_8b_shape_is_planned_from_its_config_in_seconds(tmp_path, fake_8b):
    """The plan reads the config only: an 8B shape's peaks in seconds; its float32 precision unit needs over
    24 GB, the bf16 dense unit does not (1.25 x 16.1 GB + 1.5 GB)."""
    from auditor.study.model_shape import model_shape
    from auditor.study.runner import plan_study, select_units
    from auditor.study.spec import load_study

    [plan] = plan_study(load_study(_study(tmp_path, fake_8b)))
    start = time.perf_counter()
    shape = model_shape(plan.context.source)
    memory = {m.unit.variant: m for m in plan_memory(plan, shape)}
    assert time.perf_counter() - start < 15
    assert shape.n_params == _llama_params(LLAMA_8B)
    assert memory["dense-float32"].peak.step == "score float32"
    assert memory["dense-float32"].peak.peak_bytes > 24 * GB
    assert memory["dense"].peak.peak_bytes == pytest.approx(1.5e9 + 1.25 * 2 * shape.n_params)
    dense_only = plan_memory(replace(plan, units=select_units(plan, ["dense"])), shape)
    assert [m.unit.variant for m in dense_only] == ["dense"] and refusals(dense_only, 24 * GB) == []


def test_run_refuses_an_over_limit_unit_before_anything_runs(tmp_path, fake_8b, capsys):
    study = _study(tmp_path, fake_8b)
    assert main(["run", str(study), "--plan", "--memory-limit", "24"]) == 2
    captured = capsys.readouterr()
    assert "unit dense-float32" in captured.err and "at step 'score float32'" in captured.err
    assert "--memory-limit is 24.0 GB" in captured.err and "REFUSED" in captured.out
    assert main(["run", str(study), "--memory-limit", "24"]) == 2  # a run: refused before its directory exists
    assert not (tmp_path / "reports").exists()
    assert main(["run", str(study), "--plan", "--memory-limit", "0"]) == 2
    assert "--memory-limit must be a positive number" in capsys.readouterr().err
