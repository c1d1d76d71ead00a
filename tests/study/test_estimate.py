"""`auditor run --plan` without the weights: the shape read from the config equals the loaded model's, and the
proxy it times has the real model's architecture (auditor.study.model_shape, auditor.study.estimate)."""
from __future__ import annotations

import pytest

from auditor.artifacts.models import load_model, resolve_model
from auditor.scoring.gemm import ModelDims
from auditor.study.model_shape import model_shape, proxy_config, proxy_layers, proxy_model


def _shapes(model) -> dict:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_shape_from_config_equals_the_loaded_hf_model(tiny_model_dir):
    """What the old --plan read off the loaded model (parameters, FLOP sizes), the new one reads off config.json."""
    source = resolve_model(str(tiny_model_dir))
    loaded = load_model(source)
    shape = model_shape(source)
    assert shape.n_params == sum(p.numel() for p in loaded.parameters())
    assert shape.dims == ModelDims.from_config(loaded.config)
    # A model this small is timed at its full depth: the proxy is the model with other weights.
    proxy = proxy_model(source, shape, seed=0)
    assert _shapes(proxy) == _shapes(loaded)
    assert proxy.config._name_or_path == str(source.path)


def test_shape_from_gguf_header_equals_the_dequantized_model(smollm2_source, smollm2_model):
    """The embedded GGUF: config from its header, no tensor dequantized; same count and sizes as load_model."""
    shape = model_shape(smollm2_source)
    assert shape.n_params == sum(p.numel() for p in smollm2_model.parameters())
    assert shape.dims == ModelDims.from_config(smollm2_model.config)
    assert proxy_layers(shape) == shape.dims.n_layers  # 134.5M parameters: timed at full depth


def test_a_large_model_is_timed_on_a_few_of_its_blocks():
    """A 1.5B-shaped Qwen2 (untied head) gets the minimum depth; per-layer lists are cut with the depth."""
    from transformers import Qwen2Config

    from auditor.study.model_shape import ModelShape, PROXY_MIN_LAYERS, count_parameters

    config = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=False)
    shape = ModelShape(config, count_parameters(config), ModelDims.from_config(config))
    assert shape.n_params == 1_777_088_000  # Qwen2.5-Coder-1.5B as the GGUF loads it (docs/memory.md)
    assert proxy_layers(shape) == PROXY_MIN_LAYERS
    small = proxy_config(config, 3)
    assert small.num_hidden_layers == 3 and config.num_hidden_layers == 28
    if getattr(config, "layer_types", None) is not None:
        assert len(small.layer_types) == 3
    # Everything but the blocks stays: a proxy block has the real block's parameters.
    one, two = count_parameters(proxy_config(config, 1)), count_parameters(proxy_config(config, 2))
    assert shape.n_params == one + 27 * (two - one)


@pytest.mark.parametrize("budget, expected", [(10**12, 28), (1, 4)])
def test_proxy_depth_is_bounded_by_the_parameter_budget(budget, expected):
    from transformers import Qwen2Config

    from auditor.study.model_shape import ModelShape, count_parameters

    config = Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=28,
                         num_attention_heads=4, num_key_value_heads=2)
    shape = ModelShape(config, count_parameters(config), ModelDims.from_config(config))
    assert proxy_layers(shape, max_params=budget) == expected
    one = count_parameters(proxy_config(config, 1))
    per_block = count_parameters(proxy_config(config, 2)) - one
    assert proxy_layers(shape, max_params=one + 4 * per_block) == 5


def test_plan_never_reads_the_weights(tmp_path, tiny_model_dir, capsys):
    """The plan of a model whose weights file is garbage still counts, times and estimates: no weight is read."""
    import shutil

    from auditor.cli import main
    from tests.conftest import SAMPLE_BBQ
    from tests.study.conftest import write_study

    model = tmp_path / "garbage-weights"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    study = write_study(tmp_path / "plan.toml", {
        "name": "plan", "output_dir": str(tmp_path / "reports"), "models": [str(model)], "seeds": [0],
        "null_baselines": False}, data={"bbq": str(SAMPLE_BBQ), "n_items": 4},
        execution={"batch_size": 2, "dtype": "float32"})
    assert main(["run", str(study), "--plan", "--plan-groups", "2"]) == 0
    out = capsys.readouterr().out
    assert "predicted peak memory per step" in out and "estimated wall time:" in out
    assert "random weights" in out  # a model this small is timed at its full depth
    assert not (tmp_path / "reports").exists()


def test_a_second_plan_reads_this_machines_timings(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The first plan times every kind and keeps the timings; the next one of the same model shape reads them
    (no proxy built, nothing timed) and estimates the same; --retime times again; a damaged cache is timed past."""
    import re

    from auditor.cli import main
    from auditor.study import estimate
    from auditor.core.cache import cache_dir
    from auditor.study.rate_cache import RATES_FILE
    from tests.conftest import SAMPLE_BBQ
    from tests.study.conftest import write_study

    study = write_study(tmp_path / "plan.toml", {
        "name": "plan", "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)], "seeds": [0],
        "null_baselines": False}, data={"bbq": str(SAMPLE_BBQ), "n_items": 4},
        compression={"variants": ["magnitude@0.5"]}, execution={"batch_size": 2, "dtype": "float32"})
    plan = ["run", str(study), "--plan", "--plan-groups", "2"]

    def total(out: str) -> str:
        return re.search(r"estimated wall time: ([\d.]+) h", out).group(1)

    timed = []
    real_time_kind = estimate.time_kind
    monkeypatch.setattr(estimate, "time_kind", lambda kind, *a, **k: timed.append(kind) or real_time_kind(kind, *a, **k))
    assert main(plan) == 0
    first = capsys.readouterr().out
    assert timed and "read from this machine's cache" not in first
    assert (cache_dir() / RATES_FILE).is_file()

    def no_proxy(*args, **kwargs):
        raise AssertionError("a cached plan must not build the proxy")

    timed.clear()
    monkeypatch.setattr(estimate, "proxy_model", no_proxy)
    assert main(plan) == 0
    second = capsys.readouterr().out
    assert timed == [] and "timings read from this machine's cache" in second
    assert total(second) == total(first)
    # every unit's estimate is the same figure
    assert [line for line in second.splitlines() if "__" in line] == [line for line in first.splitlines() if "__" in line]

    monkeypatch.setattr(estimate, "proxy_model", __import__("auditor.study.model_shape",
                                                            fromlist=["proxy_model"]).proxy_model)
    assert main([*plan, "--retime"]) == 0
    assert timed and "read from this machine's cache" not in capsys.readouterr().out

    timed.clear()
    (cache_dir() / RATES_FILE).write_text("{not json")
    assert main(plan) == 0
    assert timed  # an unreadable cache costs a timing, not the plan
    capsys.readouterr()
    assert main(["run", str(study), "--retime"]) == 2
    assert "--retime applies to --plan only" in capsys.readouterr().err


def test_llama_cpp_kinds_are_quantized_from_one_f32_export(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The plan writes the proxy's F32 GGUF once and quantizes it into every llama.cpp kind (the runtime
    baseline's F16 too); each kind's build counts that export, as the run exports once per variant."""
    from auditor.artifacts.gguf_info import read_gguf_info
    from auditor.cli import main
    from auditor.study import estimate
    from tests.conftest import SAMPLE_BBQ
    from tests.study.conftest import write_study

    exports, timed = [], {}
    real_write, real_time_kind = estimate.write_gguf, estimate.time_kind
    monkeypatch.setattr(estimate, "write_gguf", lambda *a, **k: exports.append(k["outtype"]) or real_write(*a, **k))

    def time_kind(kind, *args, **kwargs):
        timing = real_time_kind(kind, *args, **kwargs)
        files = sorted(kwargs["workdir"].glob("*.gguf"))
        timed[kind] = (timing, kwargs["f32_export"], read_gguf_info(files[0]).file_type if files else None)
        return timing

    monkeypatch.setattr(estimate, "time_kind", time_kind)
    study = write_study(tmp_path / "plan.toml", {
        "name": "plan", "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)], "seeds": [0],
        "null_baselines": True}, data={"bbq": str(SAMPLE_BBQ), "n_items": 4},
        compression={"variants": ["gguf-q8_0", "gguf-q4_k_m"]}, execution={"batch_size": 2, "dtype": "float32"})
    assert main(["run", str(study), "--plan", "--plan-groups", "2"]) == 0
    assert "llama.cpp Q4_K_M" in capsys.readouterr().out
    llama = {kind: t for kind, t in timed.items() if kind.startswith("llama.cpp")}
    assert {kind: file_type for kind, (_, _, file_type) in llama.items()} == {
        "llama.cpp F16": "F16", "llama.cpp Q8_0": "Q8_0", "llama.cpp Q4_K_M": "Q4_K_M"}
    assert exports == ["f32"]
    (export,) = {f32 for _, f32, _ in llama.values()}
    assert all(timing.build_s > export.export_s > 0 for timing, _, _ in llama.values())
