"""Measurement library: hand-computed statistics and claims, and one real measurement of a tiny model."""
from __future__ import annotations

import json
import math

import pytest

from auditor.analysis.claims import CLAIM_PRUNE_DENSE, CLAIM_PRUNE_SPARSE, CLAIM_QUANTIZE, claims_table
from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.core.names import variant_id
from auditor.measure.measurement import MeasureSettings, Spread, Workload, bits_per_weight, measure, rates, run_worker
from tests.conftest import make_tiny_llama

SPREAD_KEYS = {"median", "min", "max"}


def test_spread_and_rates_hand_computed():
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert Spread.of([1.0, 4.0]) == Spread(2.5, 1.0, 4.0)
    empty = Spread.of([])
    assert math.isnan(empty.median) and math.isnan(empty.min) and math.isnan(empty.max)
    # 100 tokens in 0.5 s, 1 s, 2 s -> 200, 100, 50 tokens/s
    assert rates(100, [0.5, 1.0, 2.0]) == Spread(100.0, 50.0, 200.0)


def test_bits_per_weight_and_json_safe():
    assert bits_per_weight(1000, 250) == 32.0
    assert math.isnan(bits_per_weight(1000, 0))
    assert json_safe({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {"a": [1.0, None], "b": None, "c": "x"}


def _row(variant, family, fmt, layout, size, prefill=None, decode=None):
    speed = (lambda v: None if v is None else {"median": v, "min": v, "max": v})
    return {"variant": variant, "family": family, "format": fmt, "layout": layout, "size_bytes": size,
            "prefill_tokens_per_s": speed(prefill), "decode_tokens_per_s": speed(decode)}


def test_claims_table_hand_computed():
    rows = [
        _row("dense", "dense", "safetensors", "float32", 1000, 100.0, 10.0),
        _row("dense", "dense", "gguf", "F16", 500, 200.0, 20.0),
        _row("dense", "dense", "sparse", "bitmask", 1001),  # dense rows are references only
        _row("wanda@0.5", "prune", "safetensors", "float32", 1000, 102.0, 9.5),
        _row("wanda@0.5", "prune", "gguf", "F16", 500, 300.0, 20.0),
        _row("wanda@0.5", "prune", "sparse", "bitmask", 600),
        _row("wanda@0.5", "prune", "sparse", "csr", 800),
        _row("gguf-q8_0", "quantize", "gguf", "Q8_0", 270, 250.0, 30.0),
        _row("rtn@4", "quantize", "safetensors", "float32", 1000, 100.0, 10.0),
    ]
    table = claims_table(rows).set_index(["variant", "format", "layout"])
    assert len(table) == 6
    r = table.loc[("wanda@0.5", "safetensors", "float32")]
    assert (r["size_vs_dense"], r["prefill_vs_dense"], r["decode_vs_dense"]) == pytest.approx((1.0, 1.02, 0.95))
    assert r["claim"] == CLAIM_PRUNE_DENSE and r["size_agrees"] and r["speed_agrees"] and r["agrees"]
    r = table.loc[("wanda@0.5", "gguf", "F16")]  # 1.5x faster prefill than dense: the claim does not hold
    assert r["prefill_vs_dense"] == pytest.approx(1.5) and r["size_agrees"] and r["speed_agrees"] is False
    assert r["agrees"] is False
    r = table.loc[("wanda@0.5", "sparse", "bitmask")]  # dense in the same layout measured: that one
    assert r["reference"] == "dense sparse bitmask" and r["size_vs_dense"] == pytest.approx(600 / 1001)
    assert r["claim"] == CLAIM_PRUNE_SPARSE and r["agrees"] and r["speed_agrees"] is None
    assert math.isnan(r["prefill_vs_dense"])
    r = table.loc[("wanda@0.5", "sparse", "csr")]  # no dense CSR row: dense safetensors, the file it encodes
    assert r["reference"] == "dense safetensors float32" and r["size_vs_dense"] == pytest.approx(0.8)
    r = table.loc[("gguf-q8_0", "gguf", "Q8_0")]  # vs dense GGUF F16
    assert r["size_vs_dense"] == pytest.approx(0.54) and r["claim"] == CLAIM_QUANTIZE and r["agrees"]
    r = table.loc[("rtn@4", "safetensors", "float32")]  # fake-quant stored as float32: no saving, claim fails
    assert r["size_vs_dense"] == pytest.approx(1.0) and r["agrees"] is False


def test_speed_claim_needs_a_speedup_beyond_the_run_to_run_spread():
    dense = {"variant": "dense", "family": "dense", "format": "gguf", "layout": "F16", "size_bytes": 500,
             "prefill_tokens_per_s": {"median": 100.0, "min": 80.0, "max": 120.0},
             "decode_tokens_per_s": {"median": 10.0, "min": 9.0, "max": 11.0}}
    noisy = {**dense, "variant": "magnitude@0.5", "family": "prune",
             "prefill_tokens_per_s": {"median": 125.0, "min": 110.0, "max": 140.0}}
    faster = {**noisy, "variant": "wanda@0.5", "prefill_tokens_per_s": {"median": 140.0, "min": 133.0, "max": 150.0}}
    table = claims_table([dense, noisy, faster]).set_index("variant")
    # median 1.25x, but its slowest run (110) is below dense's fastest (120): noise, the claim holds
    assert table.loc["magnitude@0.5", "prefill_vs_dense"] == pytest.approx(1.25)
    assert table.loc["magnitude@0.5", "agrees"] is True
    # slowest run 133 > 1.1 * 120 = 132: a real speed-up, the claim fails
    assert table.loc["wanda@0.5", "agrees"] is False


def test_claims_unknown_without_reference():
    table = claims_table([_row("magnitude@0.5", "prune", "gguf", "F16", 500, 10.0, 1.0)])
    assert table.iloc[0]["agrees"] is None and table.iloc[0]["reference"] == "no dense row measured"
    assert claims_table([]).empty


def test_settings_are_checked():
    with pytest.raises(AuditorError, match="formats.*valid formats are safetensors, gguf, sparse"):
        MeasureSettings(formats=("onnx",)).check()
    with pytest.raises(AuditorError, match="repeats must"):
        MeasureSettings(repeats=0).check()
    with pytest.raises(AuditorError, match="zstd_level 30"):
        MeasureSettings(zstd_level=30).check()


def test_worker_failure_names_the_file(tmp_path):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"nope")
    workload = Workload((1, 2, 3), (), (4, 5, 6), 0, "test")
    with pytest.raises(AuditorError, match="not-a-model.gguf: measurement in llama.cpp failed"):
        run_worker("llama.cpp", bogus, workload, MeasureSettings(repeats=1))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_tokenizer):
    """A tiny random Llama saved as an HF directory with the SmolLM2 tokenizer: a model argument."""
    from auditor.artifacts.safetensors_dir import save_hf_dir

    return save_hf_dir(make_tiny_llama(), smollm2_tokenizer, tmp_path_factory.mktemp("tiny") / "model")


def test_measure_tiny_model_every_format(tiny_dir, tmp_path):
    settings = MeasureSettings(repeats=2, new_tokens=4, bbq_items=2, zstd_level=1)
    report = measure(["magnitude@0.5"], model=str(tiny_dir), settings=settings, out_dir=tmp_path)
    doc = json.loads((tmp_path / "measurements.json").read_text())
    assert doc["n_params"] == sum(p.numel() for p in make_tiny_llama().parameters())  # tied: counted once
    got = {(r["variant"], r["format"], r["layout"]) for r in doc["measurements"]}
    for variant in ("dense", "magnitude@0.5"):
        assert {(variant, "safetensors", "float32"), (variant, "gguf", "F16"), (variant, "sparse", "bitmask"),
                (variant, "sparse", "csr"), (variant, "sparse", "zstd-1")} <= got
    for r in doc["measurements"]:
        assert r["size_bytes"] > 0 and 0 < r["bits_per_weight"] < 64
        if r["runtime"] is None:
            assert r["prefill_tokens_per_s"] is None and r["load_s"] is None
            continue
        for key in ("load_s", "prefill_tokens_per_s", "decode_tokens_per_s"):
            assert set(r[key]) == SPREAD_KEYS
            assert 0 < r[key]["min"] <= r[key]["median"] <= r[key]["max"] < math.inf
        assert r["peak_rss_bytes"] >= r["rss_before_load_bytes"] > 0
        assert 0 < r["bbq_ms_per_prompt"] < math.inf
        unit = tmp_path / "measurements" / f"{variant_id(r['variant'])}__{r['runtime']}.json"
        assert json.loads(unit.read_text())["size_bytes"] == r["size_bytes"]
    sizes = {(r["variant"], r["layout"]): r["size_bytes"] for r in doc["measurements"]}
    # Unstructured zeros cost the same bytes in dense formats; the bitmask layout is smaller.
    assert sizes[("magnitude@0.5", "float32")] == sizes[("dense", "float32")]
    assert sizes[("magnitude@0.5", "bitmask")] < sizes[("dense", "float32")]
    assert {c["variant"] for c in doc["claims"]} == {"magnitude@0.5"}
    assert report.wall_s > 0 and doc["wall_s"] == pytest.approx(report.wall_s)
