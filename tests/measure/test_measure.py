"""Measurement library: hand-computed statistics and claims, and one real measurement of a tiny model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from auditor.analysis.claims import (
    AGREES,
    CLAIM_PRUNE_DENSE,
    CLAIM_PRUNE_SPARSE,
    CLAIM_QUANTIZE,
    DISAGREES,
    INCONCLUSIVE,
    claims_table,
    no_speedup_verdict,
    ratio_ci,
)
from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.core.names import variant_id
from auditor.measure.measurement import (
    MeasureSettings,
    Spread,
    Workload,
    bits_per_weight,
    load_summary,
    measure,
    rates,
    run_worker,
)
from tests.conftest import make_tiny_llama

SPREAD_KEYS = {"median", "min", "max", "values"}


def test_spread_and_rates_hand_computed():
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, (3.0, 1.0, 2.0))
    assert Spread.of([1.0, 4.0]) == Spread(2.5, 1.0, 4.0, (1.0, 4.0))
    empty = Spread.of([])
    assert math.isnan(empty.median) and math.isnan(empty.min) and math.isnan(empty.max)
    # 100 tokens in 0.5 s, 1 s, 2 s -> 200, 100, 50 tokens/s
    assert rates(100, [0.5, 1.0, 2.0]) == Spread(100.0, 50.0, 200.0, (200.0, 100.0, 50.0))


def test_load_summary_warns_when_other_work_competed():
    assert load_summary(1.0, [1.2, 1.5], 1.1, 1.0, 2) == {
        "start": 1.0, "end": 1.1, "min": 1.0, "max": 1.5, "moved": False, "competing": False,
        "own_threads": 2, "tolerance": 1.0}
    # an idle machine: the load climbs to the worker's own 2 threads; it moved, nothing else ran
    idle = load_summary(0.2, [1.1, 1.9], 1.9, 1.0, 2)
    assert idle["moved"] is True and idle["competing"] is False
    # another 2-thread job beside the worker
    assert load_summary(1.0, [3.5, None], 4.0, 1.0, 2)["competing"] is True
    # steady contention is competition too, although the load never moved
    busy = load_summary(5.0, [5.2, 5.1], 5.0, 1.0, 2)
    assert busy["moved"] is False and busy["competing"] is True
    assert load_summary(None, [None], None, 1.0, 2)["competing"] is None


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


def test_speed_claim_from_spreads_without_per_run_values():
    """Files with only median, min and max: the widest interval the spreads allow decides."""
    dense = {"variant": "dense", "family": "dense", "format": "gguf", "layout": "F16", "size_bytes": 500,
             "prefill_tokens_per_s": {"median": 100.0, "min": 80.0, "max": 120.0},
             "decode_tokens_per_s": {"median": 10.0, "min": 9.0, "max": 11.0}}
    noisy = {**dense, "variant": "magnitude@0.5", "family": "prune",
             "prefill_tokens_per_s": {"median": 125.0, "min": 110.0, "max": 140.0}}
    faster = {**noisy, "variant": "wanda@0.5", "prefill_tokens_per_s": {"median": 140.0, "min": 133.0, "max": 150.0}}
    table = claims_table([dense, noisy, faster]).set_index("variant")
    # median 1.25x, but the interval [110/120, 140/80] straddles 1.1: noise decides nothing
    assert table.loc["magnitude@0.5", "prefill_vs_dense"] == pytest.approx(1.25)
    assert (table.loc["magnitude@0.5", "prefill_ci_low"], table.loc["magnitude@0.5", "prefill_ci_high"]) == \
        pytest.approx((110 / 120, 140 / 80))
    assert table.loc["magnitude@0.5", "verdict"] == INCONCLUSIVE and table.loc["magnitude@0.5", "agrees"] is None
    # slowest run 133 > 1.1 * 120 = 132: a speed-up whatever the noise, the claim fails
    assert table.loc["wanda@0.5", "verdict"] == DISAGREES and table.loc["wanda@0.5", "agrees"] is False


def test_ratio_ci_paired_hand_computed():
    # paired ratios 1.0, 1.2, 0.9: median 1.0; a median of 3 resampled values spans [0.9, 1.2]
    ratio, low, high = ratio_ci([100.0, 120.0, 90.0], [100.0, 100.0, 100.0])
    assert ratio == pytest.approx(1.0) and (low, high) == pytest.approx((0.9, 1.2))
    # unpaired (lengths differ): ratio of medians
    assert ratio_ci([100.0, 120.0, 90.0], [50.0, 50.0])[0] == pytest.approx(2.0)
    assert all(math.isnan(x) for x in ratio_ci([], [1.0]))
    assert all(math.isnan(x) for x in ratio_ci([1.0], [0.0]))
    assert no_speedup_verdict(1.11, 1.3, 0.1) == DISAGREES and no_speedup_verdict(0.8, 1.1, 0.1) == AGREES
    assert no_speedup_verdict(1.0, 1.2, 0.1) == INCONCLUSIVE and no_speedup_verdict(math.nan, 1.0, 0.1) == "unknown"


def _noisy_run(rng, true_ratio: float, drift: float, sd: float, rounds: int) -> list[dict]:
    """Dense and a pruned variant timed in interleaved rounds: each round the machine's load
    scales both by the same factor (drifting by up to `drift`), plus independent noise `sd`."""
    load = 1 + drift * rng.random(rounds)  # slowdown shared by the two runs of a round
    dense = 100.0 / load * (1 + sd * rng.standard_normal(rounds))
    pruned = true_ratio * 100.0 / load * (1 + sd * rng.standard_normal(rounds))

    def row(variant, family, values):
        return {"variant": variant, "family": family, "format": "gguf", "layout": "F16", "size_bytes": 500,
                **{k: {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max()),
                       "values": [float(v) for v in values]} for k in ("prefill_tokens_per_s", "decode_tokens_per_s")}}

    return [row("dense", "dense", dense), row("magnitude@0.5", "prune", pruned)]


@pytest.mark.parametrize("true_ratio", [1.0, 0.97])
def test_planted_no_speedup_never_disagrees_under_noise(true_ratio):
    """A pruned model exactly as fast as dense (or 3% slower), timed under heavy load drift (up to 3x)
    and 10% run-to-run noise: over many simulated measurements the claim is "agrees" or
    "inconclusive (noise)", never "disagrees", so no two runs flip between agrees and disagrees."""
    rng = np.random.default_rng(0)
    verdicts = [claims_table(_noisy_run(rng, true_ratio, drift=2.0, sd=0.10, rounds=5)).iloc[0]["verdict"]
                for _ in range(200)]
    assert DISAGREES not in verdicts
    assert verdicts.count(AGREES) > 0  # the interval is tight enough to agree sometimes


def test_planted_speedup_is_found_through_noise():
    """A real 1.6x speed-up under the same drift and 5% noise: disagrees in every simulated run, never agrees."""
    rng = np.random.default_rng(1)
    verdicts = {claims_table(_noisy_run(rng, 1.6, drift=2.0, sd=0.05, rounds=5)).iloc[0]["verdict"]
                for _ in range(100)}
    assert verdicts == {DISAGREES}


def test_two_point_estimates_alone_do_not_decide():
    """Drift between unpaired runs made the variant look 1.4x faster; paired rounds see no speed-up."""
    rows = _noisy_run(np.random.default_rng(2), 1.0, drift=0.0, sd=0.0, rounds=3)
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):  # dense slowed by load in every round alike
        rows[0][key]["values"] = [70.0, 72.0, 71.0]
        rows[1][key]["values"] = [70.5, 71.0, 72.0]
        rows[1][key]["median"] = 71.0
        rows[0][key]["median"] = 50.0  # a point estimate taken at another time would say 1.42x
    got = claims_table(rows).iloc[0]
    assert got["verdict"] == AGREES and got["prefill_vs_dense"] == pytest.approx(1.0, abs=0.02)


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
        for key in ("load_s", "time_to_first_token_s", "prefill_tokens_per_s", "decode_tokens_per_s"):
            assert set(r[key]) == SPREAD_KEYS and len(r[key]["values"]) == settings.repeats  # one per round
            assert 0 < r[key]["min"] <= r[key]["median"] <= r[key]["max"] < math.inf
        assert len(r["load_average"]["values"]) in (0, settings.repeats)
        assert r["peak_rss_bytes"] >= r["rss_before_load_bytes"] > 0
        assert 0 < r["bbq_ms_per_prompt"] < math.inf
        unit = tmp_path / "measurements" / f"{variant_id(r['variant'])}__{r['runtime']}.json"
        assert json.loads(unit.read_text())["size_bytes"] == r["size_bytes"]
    sizes = {(r["variant"], r["layout"]): r["size_bytes"] for r in doc["measurements"]}
    # Unstructured zeros cost the same bytes in dense formats; the bitmask layout is smaller.
    assert sizes[("magnitude@0.5", "float32")] == sizes[("dense", "float32")]
    assert sizes[("magnitude@0.5", "bitmask")] < sizes[("dense", "float32")]
    assert {c["variant"] for c in doc["claims"]} == {"magnitude@0.5"}
    assert {c["verdict"] for c in doc["claims"]} <= {"agrees", "disagrees", "inconclusive (noise)", "unknown"}
    assert set(doc["load_average"]) >= {"start", "end", "min", "max", "moved"}
    assert report.wall_s > 0 and doc["wall_s"] == pytest.approx(report.wall_s)


def test_a_variant_none_of_the_asked_formats_holds_is_measured_in_its_own(tiny_dir, tmp_path):
    """A study asking for GGUF alone still measures bnb-nf4, whose only form is safetensors, and says so."""
    settings = MeasureSettings(repeats=1, new_tokens=2, bbq_items=0, formats=("gguf",))
    report = measure(["bnb-nf4"], model=str(tiny_dir), settings=settings, out_dir=tmp_path)
    got = {(r.variant, r.format) for r in report.rows}
    assert got == {("dense", "gguf"), ("bnb-nf4", "safetensors")}
    bnb = next(r for r in report.rows if r.variant == "bnb-nf4")
    assert bnb.runtime == "torch" and bnb.decode_tokens_per_s is not None and bnb.size_bytes > 0
    assert any(n.startswith("bnb-nf4: measured as safetensors, its only format (gguf asked)") for n in report.notes)
