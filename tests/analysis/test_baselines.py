"""Null baselines: answer-order sensitivity (dense vs dense under another seed) and runtime noise."""
from __future__ import annotations

import math

import pytest

from auditor.analysis.baselines import (
    DENSE_GGUF_F16,
    RUNTIME_BASELINE,
    SEED_BASELINE,
    null_baselines,
    runtime_baseline,
    seed_baseline,
)
from auditor.analysis.comparison import comparison_table
from auditor.core.names import LLAMA_CPP
from tests.analysis.test_stats import records_frame

# Dense answers per seed on 6 Age items (biased items listed; the rest answer "unknown").
BIASED = {0: {0}, 1: {0, 1, 2}, 2: {3}}


def _dense_rows(variant: str = "dense", backend: str = "torch", biased: dict = BIASED) -> list[tuple]:
    return [(variant, backend, seed, f"age-{i}", "Age", "ambig", "stereotype" if i in items else "unknown")
            for seed, items in biased.items() for i in range(6)]


def test_seed_baseline_pools_pairs_against_the_first_seed():
    # s0 unbiased on items 1..5 (5 items). s1 vs s0: unbiased->biased {1, 2}; s2 vs s0: {3}, biased->unbiased {0}.
    # Pooled flip rate = (2 + 1) / (5 + 5).
    table = seed_baseline(records_frame(_dense_rows()))
    assert set(table["category"]) == {"Age", "all"}
    row = table[table["category"] == "all"].iloc[0]
    assert row["baseline"] == SEED_BASELINE and row["seeds"] == "0 vs 1,2"
    assert (row["n_pairs"], row["n_ref_unbiased"]) == (12, 10)
    assert (row["unbiased_to_biased"], row["biased_to_unbiased"]) == (3, 1)
    assert row["flip_rate"] == pytest.approx(0.3)


def test_seed_baseline_with_one_seed_is_nan_and_says_so():
    table = seed_baseline(records_frame(_dense_rows(biased={0: {0}})))
    assert len(table) == 1 and math.isnan(table.iloc[0]["flip_rate"])
    assert "one seed" in table.iloc[0]["note"]


def test_runtime_baseline_absent_is_nan_with_note():
    table = runtime_baseline(records_frame(_dense_rows()))
    assert len(table) == 1 and math.isnan(table.iloc[0]["flip_rate"])
    assert DENSE_GGUF_F16 in table.iloc[0]["note"] and LLAMA_CPP in table.iloc[0]["note"]


def test_runtime_baseline_pairs_gguf_f16_with_dense_torch_per_seed():
    # llama.cpp F16 answers under seed s like torch answers under seed s+1 (planted noise):
    # seed 0 vs torch seed 0: 2 flips of 5; seed 1 (F16 = torch seed 2 pattern {3}) vs torch seed 1 {0,1,2}:
    # unbiased->biased {3} over 3 unbiased items. Pooled: 3 / 8.
    f16 = _dense_rows(DENSE_GGUF_F16, LLAMA_CPP, {0: BIASED[1], 1: BIASED[2]})
    records = records_frame(_dense_rows() + f16)
    table = runtime_baseline(records).set_index("category")
    assert table.loc["all", "baseline"] == RUNTIME_BASELINE
    assert table.loc["all", "seeds"] == "0,1"
    assert (table.loc["all", "unbiased_to_biased"], table.loc["all", "n_ref_unbiased"]) == (3, 8)
    assert table.loc["all", "flip_rate"] == pytest.approx(3 / 8)
    both = null_baselines(records)
    assert set(both["baseline"]) == {SEED_BASELINE, RUNTIME_BASELINE}


def test_comparison_table_shows_both_null_baselines_next_to_flip_rates():
    f16 = _dense_rows(DENSE_GGUF_F16, LLAMA_CPP, {0: BIASED[1], 1: BIASED[2]})
    variant = _dense_rows("magnitude@0.5", "torch", {0: {0, 1, 2, 3, 4}, 1: {0, 1, 2}, 2: {3}})
    served = _dense_rows("gguf-q4_k_m", LLAMA_CPP, {0: {0, 1, 2, 3, 4}, 1: {0, 1, 2}, 2: {3}})
    table = comparison_table(records_frame(_dense_rows() + f16 + variant + served), n_boot=100)
    row = table[(table["category"] == "all") & (table["variant"] == "magnitude@0.5")].iloc[0]
    # The answer-order sensitivity and the runtime baseline are shown as context on every row ...
    assert row["null_seed_flip_rate"] == pytest.approx(0.3) and row["null_runtime_flip_rate"] == pytest.approx(3 / 8)
    # ... but a torch variant is judged against the precision null only (none here): never against the order one.
    assert math.isnan(row["flip_null"]) and row["flip_null_kind"] == ""
    # The variant's own flips, paired per seed: seed 0 gives {1,2,3,4} of 5 unbiased; seeds 1, 2 none.
    assert row["b"] == 4 and row["flip_rate"] == pytest.approx(4 / (5 + 3 + 5))
    assert row["flip_excess"] == pytest.approx(4 / 13)
    q4 = table[(table["category"] == "all") & (table["variant"] == "gguf-q4_k_m")].iloc[0]
    assert q4["reference_backend"] == "torch" and q4["null_runtime_flip_rate"] == pytest.approx(3 / 8)
    assert q4["flip_null"] == pytest.approx(3 / 8) and q4["flip_excess"] == pytest.approx(4 / 13 - 3 / 8)
    assert q4["flip_null_kind"] == "runtime baseline"


def test_seed_baseline_counts_only_pairs_whose_orders_differ():
    # Seed 1 repeats seed 0's order (as seeds drawn with replacement can): its flips are not answer-order ones.
    rows = records_frame(_dense_rows())
    rows.loc[rows["seed"] == 1, "perm"] = "012"
    table = seed_baseline(rows)
    row = table[table["category"] == "all"].iloc[0]
    assert (row["n_pairs"], row["n_ref_unbiased"], row["unbiased_to_biased"]) == (6, 5, 1)
    assert row["flip_rate"] == pytest.approx(1 / 5)


def test_precision_baseline_pairs_float32_against_the_run_dtype():
    from auditor.analysis.baselines import DENSE_FLOAT32, PRECISION_BASELINE, precision_baseline

    # float32 answers are the reference: under seed 0 float32 is biased on {1}, the run's dtype (BIASED) on {0}:
    # unbiased->biased {0} of 5 float32-unbiased items; seeds 1, 2 identical. Pooled: 1 / (5 + 3 + 5).
    f32 = _dense_rows(DENSE_FLOAT32, "torch", {0: {1}, 1: BIASED[1], 2: BIASED[2]})
    records = records_frame(_dense_rows() + f32)
    table = precision_baseline(records).set_index("category")
    assert table.loc["all", "baseline"] == PRECISION_BASELINE and table.loc["all", "seeds"] == "0,1,2"
    assert (table.loc["all", "unbiased_to_biased"], table.loc["all", "biased_to_unbiased"]) == (1, 1)
    assert table.loc["all", "flip_rate"] == pytest.approx(1 / 13)
    assert PRECISION_BASELINE in set(null_baselines(records)["baseline"])
    # A float32 run has no float32 baseline records, hence no precision row at all.
    assert precision_baseline(records_frame(_dense_rows())).empty
    assert PRECISION_BASELINE not in set(null_baselines(records_frame(_dense_rows()))["baseline"])
