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


def test_deepen_counts_what_does_not_grow_with_depth_once():
    """Seconds on the model: the blockless part once, the blocks' part x depth ratio; None when the timings
    cannot be split (no blockless timing, or one not below the proxy's)."""
    from auditor.study.estimate import deepen

    assert deepen(5.0, 2.0, 28, 4) == pytest.approx(2.0 + 3.0 * 7)
    assert deepen(5.0, 0.0, 28, 4) == pytest.approx(35.0)  # nothing fixed: plain depth ratio
    assert deepen(5.0, None, 28, 4) is None
    assert deepen(5.0, 5.0, 28, 4) is None and deepen(5.0, 6.0, 28, 4) is None


def test_the_plan_times_the_runs_own_forward_passes(smollm2_tokenizer):
    """sample_calls gives whole passes of the engine's one call over every group (tree_batches), the median
    width first and the others spread over the widths; they pad less than passes of consecutive groups."""
    from auditor.data.bbq import select_items
    from auditor.data.sources import SAMPLE_BBQ
    from auditor.scoring.backends.torch_backend import tree_batches
    from auditor.scoring.backends.trees import plan_trees
    from auditor.scoring.engine import PromptSet
    from auditor.study.estimate import sample_calls

    prompts = PromptSet.build(smollm2_tokenizer, select_items([SAMPLE_BBQ], n=24, seed=0).items, (0, 1, 2))
    groups = prompts.groups
    plan = plan_trees(groups)
    batches = tree_batches(plan, 2)
    passes = [{groups[g].item_id for t in b for g, _ in plan.members[t]} for b in batches]
    calls = sample_calls(groups, 2, 6)
    assert len(calls) == 3 <= len(batches)
    picked = [passes.index({g.item_id for g in call}) for call in calls]  # each call is one of the run's passes
    assert picked[0] == min(picked, key=lambda i: abs(i - len(batches) // 2))
    assert len(set(picked)) == 3 and min(picked) < len(batches) // 2 < max(picked)

    def padding(call_groups) -> int:
        p = plan_trees(call_groups)
        return sum(max(p.trees[t].n_nodes for t in b) * len(b) - sum(p.trees[t].n_nodes for t in b)
                   for b in tree_batches(p, 2))

    consecutive = [list(groups[i:i + 2]) for i in range(0, len(groups), 2)]
    assert sum(map(padding, calls)) / len(calls) <= sum(map(padding, consecutive)) / len(consecutive)
    assert sample_calls([], 2, 6) == []


def test_a_shallower_proxy_times_torch_kinds_without_blocks_too(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """A model deeper than its proxy: each torch kind is timed on the proxy and again, on the same passes and
    window, on the proxy without blocks; the estimate deepens the two (`deepen`); llama.cpp kinds scale by FLOPs."""
    from auditor.cli import main
    from auditor.study import estimate
    from tests.conftest import FIXTURE_CORPUS, SAMPLE_BBQ, tiny_llama_config
    from tests.study.conftest import write_study

    built, timed = [], []
    real_proxy_model, real_time_kind = estimate.proxy_model, estimate.time_kind
    monkeypatch.setattr(estimate, "proxy_layers", lambda shape, **k: 1)
    monkeypatch.setattr(estimate, "proxy_model",
                        lambda *a, **k: built.append(k["n_layers"]) or real_proxy_model(*a, **k))

    def time_kind(kind, spec, dtype, dense, *args, **kwargs):
        timing = real_time_kind(kind, spec, dtype, dense, *args, **kwargs)
        timed.append((kind, dense.config.num_hidden_layers, len(kwargs["calls"]), bool(kwargs["window_ids"]),
                      timing))
        return timing

    monkeypatch.setattr(estimate, "time_kind", time_kind)
    captured = {}
    real_deepen = estimate.deepen
    monkeypatch.setattr(estimate, "deepen", lambda *a: captured.setdefault(a, real_deepen(*a)))
    study = write_study(tmp_path / "plan.toml", {
        "name": "plan", "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)], "seeds": [0],
        "null_baselines": False}, data={"bbq": str(SAMPLE_BBQ), "n_items": 6},
        compression={"variants": ["gguf-q8_0"]},
        perplexity={"corpus": str(FIXTURE_CORPUS), "max_length": 64, "stride": 64, "max_tokens": 256},
        execution={"batch_size": 2, "dtype": "float32"})
    assert main(["run", str(study), "--plan", "--plan-groups", "4"]) == 0
    out = capsys.readouterr().out
    assert built == [1, 0]  # the proxy, then the same without blocks
    torch_timings = [t for t in timed if t[0] == "torch float32"]
    (kind, depth, n_calls, windowed, proxy_t), (_, bare_depth, bare_calls, bare_windowed, bare_t) = torch_timings
    assert (depth, bare_depth) == (1, 0) and bare_calls == proxy_t.score_calls and windowed and bare_windowed
    assert [d for k, d, *_ in timed if k.startswith("llama.cpp")] == [1]  # not timed without blocks
    n_layers = tiny_llama_config().num_hidden_layers
    assert (proxy_t.score_wall_s, bare_t.score_wall_s, n_layers, 1) in captured
    assert (proxy_t.ppl_wall_s, bare_t.ppl_wall_s, n_layers, 1) in captured
    # how many kinds were deepened depends on the tiny model's timings (noise may refuse the split): said in the notes
    n_deepened = sum(v is not None for a, v in captured.items() if a[0] == proxy_t.score_wall_s)
    assert f"{n_deepened} kind(s) by the blocks'" in out


def test_each_timed_pass_counts_its_median_round_and_the_budget_stops_after_a_pass(monkeypatch):
    """_time_scoring: every call once as a warm-up, then `rounds` timings of each pass, the median counted;
    a budget spent after a pass stops before the next."""
    from auditor.study import estimate

    class Backend:
        def __init__(self):
            self.calls = []

        def letter_logprobs(self, groups, letter_ids):
            self.calls.append(len(groups))

    ticks = iter([0, 1, 1, 5, 5, 6,  # pass 1: 1 s, 4 s, 1 s -> median 1
                  10, 12, 12, 14, 14, 17])  # pass 2: 2 s, 2 s, 3 s -> median 2
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(estimate, "_planned_tokens", lambda backend_name, part: 10 * len(part))
    passes = [["a", "b", "c"], ["d", "e"], ["f"]]
    backend = Backend()
    assert estimate._time_scoring(backend, "torch", passes, [1], budget_s=2.5, rounds=3) == (2, 5, 50, 3)
    assert backend.calls == [2, 3, 3, 3, 2, 2, 2]  # warm-up on the first pass's first 2 groups
    assert estimate._time_scoring(Backend(), "torch", [], [1], budget_s=None) == (0, 0, 0, 0.0)


def test_the_floor_counts_every_kinds_tokens_at_the_fastest_arithmetic_it_can_use():
    """floor = (calibration tokens at float32's peak + each scoring/perplexity unit's tokens at its kind's
    fastest arithmetic) x the linears' 2 FLOPs per weight; torch kinds compute in their dtype only, llama.cpp and
    bitsandbytes in any; the measurement unit is not counted."""
    from auditor.data.rundir import MEASURE, PPL, SCORE, Unit
    from auditor.study.estimate import ANY_ARITHMETIC, UnitEstimate, floor_arithmetics, floor_seconds

    assert floor_arithmetics("torch bfloat16") == ("bfloat16",)
    assert floor_arithmetics("torch float32") == ("float32",)
    assert floor_arithmetics("llama.cpp Q4_K_M") == floor_arithmetics("torch bnb-nf4") == ANY_ARITHMETIC
    dims = ModelDims(n_layers=2, hidden=4, intermediate=8, n_heads=2, n_kv_heads=1, head_dim=2, vocab=10)
    per_token = 2 * dims.block_params
    peaks = {"float32": 10.0, "bfloat16": 40.0, "int8": 80.0}

    def unit(kind: str, unit_kind: str, tokens: int) -> UnitEstimate:
        return UnitEstimate(Unit(unit_kind, "v", "v", "torch"), kind, tokens, 1.0)

    units = [unit("torch bfloat16", SCORE, 100), unit("torch float32", SCORE, 50), unit("llama.cpp Q8_0", PPL, 160),
             unit("measure", MEASURE, 10**9)]
    expected = per_token * (30 / 10 + 100 / 40 + 50 / 10 + 160 / 80)
    assert floor_seconds(dims, units, 30, peaks) == pytest.approx(expected)
    # llama.cpp takes the fastest arithmetic there is, whichever it is on this machine
    assert floor_seconds(dims, units[2:3], 0, {**peaks, "float32": 1000.0}) == pytest.approx(per_token * 160 / 1000)
    # with only float32 measured llama.cpp counts at it, and a bfloat16 unit has no floor at all
    assert floor_seconds(dims, units[2:3], 0, {"float32": 10.0}) == pytest.approx(per_token * 160 / 10)
    assert floor_seconds(dims, units[:1], 0, {"float32": 10.0}) is None


def test_the_plan_prints_a_floor_and_keeps_its_peaks(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The plan measures the matmul peak of each arithmetic its units need, prints the floor, and keeps the peaks
    with the timings: the next plan reads them (no matmul timed) and prints the same floor."""
    import re

    from auditor.cli import main
    from auditor.study import estimate
    from tests.conftest import SAMPLE_BBQ
    from tests.study.conftest import write_study

    study = write_study(tmp_path / "plan.toml", {
        "name": "plan", "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)], "seeds": [0],
        "null_baselines": False}, data={"bbq": str(SAMPLE_BBQ), "n_items": 4},
        compression={"variants": ["magnitude@0.5"]}, execution={"batch_size": 2, "dtype": "float32"})
    measured = []
    real = estimate.measure_gemm
    monkeypatch.setattr(estimate, "measure_gemm",
                        lambda *a, dtype, **k: measured.append(dtype) or real(*a, dtype=dtype, **k))
    assert main(["run", str(study), "--plan", "--plan-groups", "2"]) == 0
    first = capsys.readouterr().out
    assert measured == ["float32"]  # float32 torch units only: one arithmetic
    floor = re.search(r"floor: ([\d.]+) h: .*measured on this CPU \(float32 [\d,]+ GFLOP/s", first)
    assert floor and float(floor.group(1)) >= 0
    measured.clear()
    assert main(["run", str(study), "--plan", "--plan-groups", "2"]) == 0
    second = capsys.readouterr().out
    assert measured == [] and "the floor's matmul rates read from this machine's cache" in second
    assert re.search(r"floor: ([\d.]+) h", second).group(1) == floor.group(1)
