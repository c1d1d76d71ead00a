"""Statistics: hand-computed McNemar, Cohen's h and corrections; item bootstrap; planted dose-response."""
from __future__ import annotations

import math
import subprocess
import sys
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from auditor.analysis.comparison import comparison_table
from auditor.analysis.dose_response import dose_response, dose_response_table, spec_level
from auditor.analysis.inference import adjust, bootstrap_ci, cohens_h, mcnemar_exact
from auditor.analysis.metrics import summarize
from auditor.analysis.paradox import paradox_table
from auditor.data.records import COLUMNS

# Dataset answer indices used by every synthetic record: 0 = stereotype-consistent, 1 = other, 2 = unknown.
CHOICE = {"stereotype": 0, "other": 1, "unknown": 2}
# Answer order per seed: the three cyclic rotations, so every seed shows an item in its own order.
ROTATIONS = ("012", "120", "201")


def records_frame(rows: list[tuple]) -> pd.DataFrame:
    """Records in the real schema from (variant, backend, seed, item_id, category, condition, role[, logprobs])."""
    out = []
    for row in rows:
        variant, backend, seed, item_id, category, condition, role, *lp = row
        logprobs = lp[0] if lp else (0.0, 0.0, 0.0)
        chosen = CHOICE[role]
        out.append({
            "variant": variant, "backend": backend, "seed": seed, "item_id": item_id, "category": category,
            "example_id": 0, "condition": condition, "polarity": "neg", "perm": ROTATIONS[seed % 3], "chosen": chosen,
            "role": role, "correct": chosen == 2 if condition == "ambig" else chosen == 0,
            "label": 2 if condition == "ambig" else 0,
            "stereotype_index": 0, "unknown_index": 2,
            "logprob_0": logprobs[0], "logprob_1": logprobs[1], "logprob_2": logprobs[2],
        })
    return pd.DataFrame(out, columns=list(COLUMNS))


# --- McNemar, Cohen's h, corrections: by hand ----------------------------------------------------------

def test_mcnemar_matches_hand_computed_values():
    # b=1, c=9: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 2 * 11 / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(0.021484375, abs=1e-15)
    assert mcnemar_exact(9, 1) == pytest.approx(0.021484375, abs=1e-15)
    # b=0, c=6: p = 2 / 2^6.
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125, abs=1e-15)
    # b=5, c=1: p = 2 * (1 + 6) / 64.
    assert mcnemar_exact(5, 1) == pytest.approx(0.21875, abs=1e-15)
    # Balanced: 2 * sum_{k<=5} C(10,k) / 1024 > 1, capped at 1.
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


@pytest.mark.parametrize("b,c", [(0, 1), (2, 7), (3, 3), (12, 30), (40, 17)])
def test_mcnemar_agrees_with_scipy_binomtest(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    expected = min(1.0, 2 * sum(comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c))
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_cohens_h_by_hand():
    # asin(sqrt(.5)) = pi/4, asin(sqrt(.25)) = pi/6: h = pi/2 - pi/3 = pi/6.
    assert cohens_h(0.5, 0.25) == pytest.approx(math.pi / 6)
    assert cohens_h(0.25, 0.5) == pytest.approx(-math.pi / 6)
    assert cohens_h(1.0, 0.0) == pytest.approx(math.pi)
    assert cohens_h(0.3, 0.3) == 0.0
    assert math.isnan(cohens_h(float("nan"), 0.3))
    with pytest.raises(ValueError):
        cohens_h(1.2, 0.3)


def test_holm_and_bh_by_hand_with_nan_kept_out():
    p = [0.01, float("nan"), 0.04, 0.03, 0.2]
    # Holm on the 4 finite values, sorted .01 .03 .04 .2: x4 = .04, x3 = .09, x2 = .08 -> running max .09, x1 = .2.
    holm = adjust(p, "holm")
    np.testing.assert_allclose(holm[[0, 2, 3, 4]], [0.04, 0.09, 0.09, 0.2])
    # BH: p(i) * 4 / i = .04, .06, .0533.., .2; step-up minimum from the top: .04, .0533, .0533, .2.
    bh = adjust(p, "fdr_bh")
    np.testing.assert_allclose(bh[[0, 2, 3, 4]], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert math.isnan(holm[1]) and math.isnan(bh[1])
    assert np.isnan(adjust([float("nan")], "holm")).all()
    with pytest.raises(ValueError, match="unknown adjustment"):
        adjust(p, "bonferoni")


# --- bootstrap over items --------------------------------------------------------------------------------

def _ratio(t: np.ndarray) -> np.ndarray:
    return t[:, 0] / t[:, 1]


def test_bootstrap_ci_matches_binomial_width_and_is_seeded():
    # 400 items, 120 "successes": the percentile CI of a proportion is close to p +- 1.96 sqrt(p(1-p)/n).
    per_item = np.array([[1.0, 1.0]] * 120 + [[0.0, 1.0]] * 280)
    low, high = bootstrap_ci(per_item, _ratio, n_boot=2000, seed=1)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 400)
    assert low == pytest.approx(0.3 - half, abs=0.01)
    assert high == pytest.approx(0.3 + half, abs=0.01)
    assert bootstrap_ci(per_item, _ratio, n_boot=2000, seed=1) == (low, high)
    assert bootstrap_ci(per_item, _ratio, n_boot=2000, seed=2) != (low, high)


def test_bootstrap_resamples_items_so_seeds_move_together():
    # 100 items x 4 seeds that always agree vs 400 independent items with the same totals:
    # resampling items must see only 100 independent units, so the CI is ~sqrt(4) = 2x wider.
    clustered = np.array([[4.0, 4.0]] * 30 + [[0.0, 4.0]] * 70)
    independent = np.array([[1.0, 1.0]] * 120 + [[0.0, 1.0]] * 280)
    lc, hc = bootstrap_ci(clustered, _ratio, n_boot=2000, seed=0)
    li, hi = bootstrap_ci(independent, _ratio, n_boot=2000, seed=0)
    assert 1.6 < (hc - lc) / (hi - li) < 2.4


def test_bootstrap_empty_and_undefined():
    assert all(math.isnan(x) for x in bootstrap_ci(np.empty((0, 2)), _ratio))
    # Every replicate has a zero denominator: no finite replicate, NaN interval.
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([[0.0, 0.0]] * 5), _ratio))


# --- comparison table on hand-planted records ------------------------------------------------------------

def _planted_run() -> pd.DataFrame:
    rows = []
    # Age, 10 ambiguous items: dense biased on {0, 1}; variant biased on {1..6}.
    for i in range(10):
        rows.append(("dense", "torch", 0, f"age-{i}", "Age", "ambig", "stereotype" if i in (0, 1) else "unknown"))
        rows.append(("magnitude@0.5", "torch", 0, f"age-{i}", "Age", "ambig",
                     "stereotype" if 1 <= i <= 6 else "unknown"))
    # Race, 4 ambiguous items: both always unknown.
    for i in range(4):
        for v in ("dense", "magnitude@0.5"):
            rows.append((v, "torch", 0, f"race-{i}", "Race_ethnicity", "ambig", "unknown"))
    # A disambiguated item that flips: must not enter the (ambiguous) table.
    rows.append(("dense", "torch", 0, "age-d", "Age", "disambig", "other"))
    rows.append(("magnitude@0.5", "torch", 0, "age-d", "Age", "disambig", "stereotype"))
    return records_frame(rows)


def test_comparison_table_hand_computed():
    table = comparison_table(_planted_run(), n_boot=500).set_index("category")
    assert list(table.index) == ["Age", "Race_ethnicity", "all"]
    age, race, both = table.loc["Age"], table.loc["Race_ethnicity"], table.loc["all"]
    assert (age["n_pairs"], age["b"], age["c"], age["n_ref_unbiased"]) == (10, 5, 1, 8)
    assert age["flip_rate"] == pytest.approx(5 / 8)
    assert age["mcnemar_p"] == pytest.approx(0.21875)
    assert (age["srs_ref"], age["srs_var"]) == (pytest.approx(0.2), pytest.approx(0.6))
    assert age["srs_change"] == pytest.approx(0.4)
    assert age["cohens_h"] == pytest.approx(2 * math.asin(math.sqrt(0.6)) - 2 * math.asin(math.sqrt(0.2)))
    assert (race["b"], race["c"], race["flip_rate"], race["mcnemar_p"], race["cohens_h"]) == (0, 0, 0.0, 1.0, 0.0)
    assert (both["n_pairs"], both["b"], both["c"]) == (14, 5, 1)
    assert both["flip_rate"] == pytest.approx(5 / 12)
    assert both["srs_var"] == pytest.approx(6 / 14)
    # p = [.21875, 1, .21875]. The verdict family is the one "all" row (q = p); the category rows are their own
    # exploratory family: Holm .4375, 1; BH .21875 * 2 / 1 = .4375, 1.
    np.testing.assert_allclose(table["p_holm"], [0.4375, 1.0, 0.21875])
    np.testing.assert_allclose(table["q_bh"], [0.4375, 1.0, 0.21875])
    assert list(table["verdict_family"]) == [False, False, True]
    for _, row in table.iterrows():
        assert row["flip_rate_ci_low"] <= row["flip_rate"] <= row["flip_rate_ci_high"]
        assert row["srs_change_ci_low"] <= row["srs_change"] <= row["srs_change_ci_high"]
    # One seed and no llama.cpp or float32 records: no null is measured, so the excess is the flip rate itself.
    assert table["null_seed_flip_rate"].isna().all() and table["null_runtime_flip_rate"].isna().all()
    assert table["flip_null"].isna().all() and (table["flip_excess"] == table["flip_rate"]).all()


def test_comparison_table_reference_backend_and_baseline_variants():
    base = _planted_run()
    ambig = base[(base["variant"] == "magnitude@0.5") & (base["condition"] == "ambig")]
    gguf = ambig.assign(variant="gguf-q4_k_m", backend="llama.cpp")
    f16 = ambig.assign(variant="dense-gguf-f16", backend="llama.cpp")
    table = comparison_table(pd.concat([base, gguf, f16], ignore_index=True), n_boot=50)
    assert set(table["variant"]) == {"magnitude@0.5", "gguf-q4_k_m"}  # the null-baseline variant is not compared
    q4 = table[(table["variant"] == "gguf-q4_k_m") & (table["category"] == "all")].iloc[0]
    assert q4["reference_backend"] == "torch" and q4["b"] == 5
    # dense-gguf-f16 answers like the planted variant: runtime null flip rate = 5/12 on "all".
    assert q4["null_runtime_flip_rate"] == pytest.approx(5 / 12)


def test_comparison_table_empty_has_columns():
    only_dense = _planted_run().query("variant == 'dense'")
    table = comparison_table(only_dense)
    assert table.empty and "q_bh" in table.columns and "null_seed_flip_rate" in table.columns


# --- dose-response ---------------------------------------------------------------------------------------

LEVELS = {"dense": 0.0, "magnitude@0.3": 0.3, "magnitude@0.5": 0.5, "magnitude@0.7": 0.7}


def _simulated(a: float, b: float, sigma: float, n_items: int, n_seeds: int, shared: bool, seed: int) -> pd.DataFrame:
    """logit P(biased) = a + b * level + u_item; shared=True: every seed of an item gives the same answer."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, sigma, n_items) if sigma > 0 else np.zeros(n_items)
    rows = []
    for variant, level in LEVELS.items():
        p = 1 / (1 + np.exp(-(a + b * level + u)))
        draws = rng.random((n_items, 1 if shared else n_seeds)) < p[:, None]
        for i in range(n_items):
            for s in range(n_seeds):
                biased = draws[i, 0 if shared else s]
                rows.append((variant, "torch", s, f"it-{i}", "Age", "ambig", "stereotype" if biased else "unknown"))
    # Not part of the magnitude regression: a chain, another method, another backend.
    rows.append(("magnitude@0.5+gguf-q4_k_m", "llama.cpp", 0, "it-0", "Age", "ambig", "stereotype"))
    rows.append(("rtn@4", "torch", 0, "it-0", "Age", "ambig", "stereotype"))
    return records_frame(rows)


def test_dose_response_recovers_planted_slope_with_clustered_se():
    # No random effect: the marginal model is exactly logit-linear, so the CI must cover b.
    # The 3 seeds of an item repeat its answer: clustered SE ~ sqrt(3) x the naive one.
    records = _simulated(a=-1.5, b=3.0, sigma=0.0, n_items=200, n_seeds=3, shared=True, seed=11)
    fit = dose_response(records, "magnitude")
    assert fit.levels == (0.0, 0.3, 0.5, 0.7)
    assert fit.n_obs == 200 * 4 * 3 and fit.n_items == 200
    assert fit.slope_ci_low < 3.0 < fit.slope_ci_high
    assert fit.slope_se > 1.4 * fit.slope_se_naive
    assert fit.p_value < 1e-6


def test_dose_response_with_item_random_effect_covers_population_slope():
    # With a random intercept u ~ N(0, 1) the GLM estimates the population-averaged slope, which is
    # attenuated. Its target: the GLM fitted to the exact marginal P(biased | level) (Gauss-Hermite).
    a, b, sigma = -1.0, 3.0, 1.0
    records = _simulated(a, b, sigma, n_items=300, n_seeds=2, shared=False, seed=5)
    fit = dose_response(records, "magnitude")
    import statsmodels.api as sm

    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    levels = np.array(sorted(LEVELS.values()))
    marginal = np.array([(weights * 1 / (1 + np.exp(-(a + b * x + sigma * nodes)))).sum() / weights.sum()
                         for x in levels])
    target = sm.GLM(marginal, sm.add_constant(levels), family=sm.families.Binomial()).fit().params[1]
    assert target < b  # attenuation is real
    assert fit.slope_ci_low < target < fit.slope_ci_high
    # No SE-order assertion here: the level varies WITHIN items, so a shared intercept acts like pairing
    # and the clustered SE of the slope can be smaller than the naive one (it is, for this draw).


def test_dose_response_table_and_degenerate_cases():
    records = _simulated(a=-1.0, b=2.0, sigma=0.0, n_items=50, n_seeds=1, shared=True, seed=0)
    table = dose_response_table(records).set_index("method")
    assert list(table.index) == ["magnitude", "rtn"]
    assert table.loc["magnitude", "levels"] == "0,0.3,0.5,0.7"
    assert math.isnan(table.loc["rtn", "slope"]) and "fewer than two levels" in table.loc["rtn", "note"]
    flat = records.assign(role="unknown")
    assert "no variation" in dose_response(flat, "magnitude").note


def test_spec_level_parses_without_importing_torch():
    assert spec_level("dense").level == 0.0
    assert spec_level("wanda@2:4").level == 0.5
    assert (spec_level("rtn@3:g64").level, spec_level("rtn@3:g64").family) == (3.0, "quantize")
    assert spec_level("wanda@0.5+gguf-q4_k_m").n_steps == 2
    # structure is part of the method key: never pooled on one level axis
    assert [spec_level(s).method for s in ("wanda@0.5", "wanda@2:4", "rtn@3", "rtn@3:g64", "rtn@4:g128")] == [
        "wanda", "wanda:2:4", "rtn", "rtn:g64", "rtn"]
    code = ("import sys; from auditor.analysis.dose_response import spec_level; spec_level('wanda@0.5'); "
            "spec_level('bnb-nf4'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    from auditor.core.errors import SpecError

    with pytest.raises(SpecError, match="Did you mean"):
        spec_level("wandda@0.5")


# --- paradox table ---------------------------------------------------------------------------------------

def test_paradox_table_by_hand():
    metrics = summarize(_planted_run(), by=("variant", "backend"))
    table = paradox_table(metrics, {"dense": 20.0, "magnitude@0.5": 21.0})
    row = table.iloc[0]
    assert row["variant"] == "magnitude@0.5"
    assert row["ppl_change_pct"] == pytest.approx(5.0)
    # SRS on all 14 ambiguous items: 2/14 -> 6/14, i.e. +200 %.
    assert row["srs_change"] == pytest.approx(4 / 14)
    assert row["srs_change_pct"] == pytest.approx(200.0)
    missing = paradox_table(metrics, pd.DataFrame({"variant": ["dense"], "ppl": [20.0]}))
    assert math.isnan(missing.iloc[0]["ppl_change_pct"])


def test_dose_response_keeps_structures_apart():
    rows = []
    for variant, biased in (("dense", {0}), ("wanda@0.5", {0, 1}), ("wanda@2:4", {0, 1, 2, 3, 4, 5})):
        rows += [(variant, "torch", 0, f"age-{i}", "Age", "ambig", "stereotype" if i in biased else "unknown")
                 for i in range(10)]
    table = dose_response_table(records_frame(rows)).set_index("method")
    assert set(table.index) == {"wanda", "wanda:2:4"}
    assert table.loc["wanda", "levels"] == "0,0.5" and table.loc["wanda", "n_obs"] == 20
