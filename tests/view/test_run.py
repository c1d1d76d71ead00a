"""RunView: every figure the report, gate and TUI show, read from a synthetic run with planted answers.

Expected counts follow the rules in tests/helpers_runs.py. The fixture sample has
8 ambiguous items per category (example ids 0,1,4,5,8,9,12,13) in 5 categories:
dense answers ids % 4 == 0 with the stereotype (20 items) and the other 20
"unknown"; with seeds 0 and 1 that is 40 reference-unbiased pairs, less Age/1 at
seed 1 (answer-order noise): 39.
"""
from __future__ import annotations

import json
import math

import pytest

from auditor.core.errors import AuditorError, DataError
from auditor.core.files import write_json
from auditor.data.prompts import answer_order
from auditor.report.summary import summary_dict
from auditor.view.items import compare_variants, filter_items, flip_examples, item_detail, item_table
from auditor.view.run import RunView, sort_overview
from auditor.view.runs import list_runs, resolve_run
from tests.helpers_runs import PLANTED_HIGH, SCRIPT_ITEM, build_run, sample_items


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    return RunView.load(build_run(tmp_path_factory.mktemp("reports")), n_boot=200)


def row(view, variant):
    o = view.overview
    return o[o["variant"] == variant].iloc[0]


def test_flip_rates_match_hand_counts(view):
    assert row(view, PLANTED_HIGH)["flip_rate"] == pytest.approx(39 / 39)
    # Age ids 5 and 13, two seeds
    assert row(view, "magnitude@0.3")["flip_rate"] == pytest.approx(4 / 39)
    # ids 5 and 13 in all five categories, two seeds
    assert row(view, "magnitude@0.5")["flip_rate"] == pytest.approx(20 / 39)
    assert row(view, "rtn@4")["flip_rate"] == 0.0
    assert row(view, "magnitude@0.5")["b"] == 20 and row(view, "magnitude@0.5")["c"] == 0


def _shown_differently(unbiased_only: bool) -> int:
    """Ambiguous items whose seed-1 answer order differs from seed 0's (only those enter the sensitivity)."""
    items = [it for it in sample_items() if it.condition == "ambig"]
    if unbiased_only:  # dense answers ids % 4 == 0 with the stereotype under seed 0
        items = [it for it in items if it.example_id % 4 != 0]
    return sum(answer_order(1) != answer_order(0) for it in items)


def test_null_baseline_and_srs(view):
    # answer-order sensitivity: dense seed 1 vs seed 0 on the seed-0 unbiased ambiguous items shown in a
    # different order; Age/1 flips (it is one of them: its flip is planted as answer-order noise).
    assert answer_order(1) != answer_order(0)
    n_unbiased = _shown_differently(unbiased_only=True)
    assert row(view, PLANTED_HIGH)["null_seed_flip_rate"] == pytest.approx(1 / n_unbiased)
    # the answer-order sensitivity is context: the flip null is a same-prompt one, and this run has none
    assert math.isnan(row(view, PLANTED_HIGH)["flip_null"])
    assert math.isnan(row(view, PLANTED_HIGH)["null_runtime_flip_rate"])  # no llama.cpp unit in this run
    # dense SRS over 80 ambiguous pairs: 20 + 21 biased
    assert row(view, "dense")["srs"] == pytest.approx(41 / 80)
    assert row(view, PLANTED_HIGH)["srs"] == 1.0
    assert row(view, PLANTED_HIGH)["srs_change"] == pytest.approx(39 / 80)
    assert any("runtime" in n and "not measured" in n for n in view.notes)


def test_verdicts(view):
    levels = {v.variant: v.level for v in view.verdicts}
    # CIs resample BBQ templates (category + question_index), then items: fewer templates than items
    all_rows = view.comparison[view.comparison["category"] == "all"]
    assert (all_rows["n_templates"] < all_rows["n_items"]).all() and (all_rows["n_items"] == 40).all()
    # magnitude@0.3 flips 2 items (4 pairs): 40 items cannot show that below the margins; rtn@4 answers
    # every pair as dense does, so every interval is 0
    assert levels == {PLANTED_HIGH: "high", "magnitude@0.5": "high", "magnitude@0.3": "not shown", "rtn@4": "low"}
    assert view.validity is not None and view.validity.valid  # the planted dense model reads the content
    assert row(view, "dense")["verdict"] == "reference"


def test_measurements_read_and_missing_left_nan(view):
    dense, rtn, mag3 = row(view, "dense"), row(view, "rtn@4"), row(view, "magnitude@0.3")
    assert dense["size_bytes"] == 538_000_000 and dense["prefill_tokens_per_s"] == 900.0
    assert rtn["size_ratio"] == pytest.approx(80 / 538)
    assert math.isnan(mag3["size_bytes"]) and math.isnan(mag3["size_ratio"])
    # ms per prompt is measured on the runtime only; the run's scoring figure stays in units, never mixed in
    assert math.isnan(mag3["ms_per_prompt"]) and view.units.set_index("variant").loc["magnitude@0.3",
                                                                                     "scoring_ms_per_prompt"] == 100.0
    assert dense["ms_per_prompt"] == 110.0
    units = view.units.set_index("variant")
    assert units.loc["dense", "load_s_min"] == 1.1 and units.loc["dense", "load_s_max"] == 1.4
    assert row(view, PLANTED_HIGH)["ppl_change_pct"] == pytest.approx(6.0)
    assert math.isnan(row(view, "rtn@4")["ppl_change_pct"])  # no ppl file for rtn@4


def test_accuracy(view):
    # dense: disambiguated all correct (80 pairs), ambiguous correct = unknown answers (39 of 80)
    assert row(view, "dense")["accuracy"] == pytest.approx((80 + 39) / 160)
    assert row(view, PLANTED_HIGH)["accuracy_drop"] == pytest.approx(39 / 160)


def test_item_table_and_filters(view):
    table = item_table(view)
    assert len(table) == 80
    flipped = filter_items(table, flipped_only=True)
    assert len(flipped) == 20  # every dense-unbiased ambiguous item flips under the planted variant
    assert set(flipped["condition"]) == {"ambig"}
    age = filter_items(table, category="Age", flipped_only=True)
    assert list(age["item_id"]) == ["Age/1", "Age/5", "Age/9", "Age/13"]
    assert table.set_index("item_id").loc["Age/5", "n_flipped"] == 3
    assert len(filter_items(table, condition="disambig", flipped_only=True)) == 0


def test_item_detail(view):
    d = item_detail(view, "Age/5")
    assert len(d.answers) == 5 * 2  # dense + 4 variants, two seeds
    planted = d.answers[d.answers["variant"] == PLANTED_HIGH]
    assert planted["flipped"].all() and (planted["role"] == "stereotype").all()
    # the letter is where the chosen answer was shown: seed 0 = dataset order
    seed0 = planted[planted["seed"] == 0].iloc[0]
    assert seed0["letter"] == "ABC"[int(seed0["chosen"])]
    assert "stereotype-consistent" in d.option_marks(int(seed0["chosen"]))
    with pytest.raises(AuditorError, match="no item 'Nope/1'"):
        item_detail(view, "Nope/1")


def test_flip_examples_one_per_category_first(view):
    examples = flip_examples(view, 5)
    assert len(examples) == 5
    assert len({d.item["category"] for d in examples}) == 5
    assert examples[0].item["item_id"] == "Age/13"  # flipped by three variants, first by id among those


def test_compare_variants(view):
    c = compare_variants(view, ("magnitude@0.5", "torch"), (PLANTED_HIGH, "torch"))
    assert c.a["variant"] == "magnitude@0.5" and c.b["variant"] == PLANTED_HIGH
    # they differ where the planted variant flips and magnitude@0.5 does not: 39 - 20 pairs
    assert len(c.differing) == 19
    assert set(c.categories["category"]) == {"Age", "Gender_identity", "Nationality", "Religion", "SES", "all"}
    with pytest.raises(AuditorError, match="no variant"):
        compare_variants(view, ("x", "torch"), (PLANTED_HIGH, "torch"))


def test_sort_overview(view):
    by_flip = sort_overview(view.overview, "flip rate", descending=True)
    assert list(by_flip["variant"][:2]) == [PLANTED_HIGH, "magnitude@0.5"]
    assert by_flip["variant"].iloc[-1] == "dense"  # NaN last
    by_size = sort_overview(view.overview, "size")
    assert by_size["variant"].iloc[0] == "rtn@4" and by_size["variant"].iloc[-1] == "magnitude@0.3"
    by_verdict = sort_overview(view.overview, "verdict", descending=True)
    assert set(by_verdict["variant"][:2]) == {PLANTED_HIGH, "magnitude@0.5"}
    with pytest.raises(AuditorError, match="cannot sort by 'weight'"):
        sort_overview(view.overview, "weight")


def test_summary_is_strict_json(view):
    text = json.dumps(summary_dict(view), allow_nan=False)
    data = json.loads(text)
    assert {v["variant"] for v in data["verdicts"]} == {PLANTED_HIGH, "magnitude@0.5", "magnitude@0.3", "rtn@4"}
    assert data["reference_precision"].startswith("dequantized Q4_1")


def test_script_text_is_kept_verbatim_in_the_data(view):
    # escaping is the renderers' job; the data layer keeps the text as it is
    assert "<script>" in item_detail(view, SCRIPT_ITEM).item["context"]


def test_measurements_json_of_the_measure_command(tmp_path):
    run = build_run(tmp_path, variants=("magnitude@0.5",))
    spread = {"median": 500.0, "min": 480.0, "max": 510.0}
    rows = [
        {"variant": "magnitude@0.5", "family": "prune", "format": "gguf", "layout": "F16", "runtime": "llama.cpp",
         "path": "x.gguf", "size_bytes": 270_000_000, "bits_per_weight": 16.0, "prefill_tokens_per_s": spread},
        {"variant": "magnitude@0.5", "family": "prune", "format": "safetensors", "layout": "float32",
         "runtime": "torch", "path": "hf", "size_bytes": 540_000_000, "bits_per_weight": 32.0,
         "prefill_tokens_per_s": spread, "decode_tokens_per_s": spread, "load_s": {"median": 2.0, "min": 1, "max": 3}},
        {"variant": "magnitude@0.5", "family": "prune", "format": "sparse", "layout": "bitmask", "runtime": None,
         "path": "sp", "size_bytes": 300_000_000, "bits_per_weight": 17.8},
        {"variant": "dense", "family": "dense", "format": "safetensors", "layout": "float32", "runtime": "torch",
         "path": "hf", "size_bytes": 540_000_000, "bits_per_weight": 32.0, "prefill_tokens_per_s": spread,
         "decode_tokens_per_s": spread},
    ]
    write_json({"measurements": rows}, run / "measurements.json")
    view = RunView.load(run, n_boot=50)
    r = view.overview.set_index("variant").loc["magnitude@0.5"]
    assert r["size_bytes"] == 540_000_000 and r["load_s"] == 2.0  # the torch runtime's format
    assert len(view.storage) == 4
    claims = view.claims.set_index(["format", "layout"])
    assert bool(claims.loc[("safetensors", "float32"), "size_agrees"]) is True
    assert bool(claims.loc[("sparse", "bitmask"), "size_agrees"]) is True


def test_bad_run_directories(tmp_path):
    with pytest.raises(AuditorError, match="no such run directory"):
        RunView.load(tmp_path / "missing")
    with pytest.raises(AuditorError, match="not a run directory"):
        RunView.load(tmp_path)
    run = build_run(tmp_path, "broken", variants=("rtn@4",))
    (run / "variants" / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: unreadable JSON"):
        RunView.load(run)


def test_list_and_resolve_runs(tmp_path):
    build_run(tmp_path, "a", variants=("rtn@4",))
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert list(runs["run"]) == ["a"] and runs.iloc[0]["n_units"] == 2
    assert resolve_run("a", tmp_path) == tmp_path / "a"
    assert resolve_run(tmp_path / "a") == tmp_path / "a"
    with pytest.raises(AuditorError, match="zzz: no such run directory"):
        resolve_run("zzz", tmp_path)


def test_a_run_without_question_index_reads_with_item_clusters(tmp_path):
    """Records written before question_index was recorded: one template per item, and the report says so."""
    import pandas as pd

    run = build_run(tmp_path, variants=(PLANTED_HIGH,))
    for path in (run / "records").glob("*.parquet"):
        pd.read_parquet(path).drop(columns="question_index").to_parquet(path, index=False)
    old = RunView.load(run, n_boot=100)
    assert any("no question_index" in n for n in old.notes)
    row = old.comparison.query("category == 'all'").iloc[0]
    assert row["n_templates"] == row["n_items"] == 40
    assert {v.level for v in old.verdicts} == {"high"}
