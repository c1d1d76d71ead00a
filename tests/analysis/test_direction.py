"""Direction, abstention loss and item-level inference on hand-computed toy records."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from auditor.analysis.comparison import comparison_table
from auditor.analysis.inference import mcnemar_exact
from auditor.analysis.item_inference import cluster_bootstrap_totals, sign_flip_pvalue
from auditor.analysis.verdicts import HIGH, NOT_SHOWN, RiskThresholds, assess
from tests.analysis.test_stats import records_frame

T = RiskThresholds()


def _all_row(rows: list[tuple]):
    table = comparison_table(records_frame(rows), n_boot=300)
    return table[table["category"] == "all"].iloc[0]


def _verdict(row):
    return assess(row.to_dict(), T)


def _dense_unknown(n_items: int, seeds=(0,)) -> list[tuple]:
    return [("dense", "torch", s, f"it-{i}", "Age", "ambig", "unknown") for s in seeds for i in range(n_items)]


def test_abstention_loss_without_direction_is_not_a_shift_toward_the_stereotype():
    # The case: dense answers unknown on 200 items; the variant on 100, and splits the rest evenly.
    variant = [("rand@0.7", "torch", 0, f"it-{i}", "Age", "ambig",
                "unknown" if i < 100 else "stereotype" if i < 150 else "other") for i in range(200)]
    row = _all_row(_dense_unknown(200) + variant)
    assert (row["b"], row["c"], row["b_anti"]) == (50, 0, 50)
    assert row["flip_rate"] == pytest.approx(0.25) and row["srs_change"] == pytest.approx(0.25)
    assert row["p_shift"] == pytest.approx(2 * 0.5 ** 50)  # one order per item: McNemar's exact test
    assert row["directed_shift"] == 0 and row["p_direction"] == pytest.approx(1.0)  # U->S = U->O
    assert row["unknown_change"] == pytest.approx(-0.5) and row["p_abstention"] == pytest.approx(2 * 0.5 ** 100)
    v = _verdict(row)
    # not stereotyping, but a 50-pt loss of "unknown" answers: low risk is not shown either
    assert not v.stereotype_shift and v.abstention_loss and v.level == NOT_SHOWN
    assert v.abstention.startswith("abstention loss: unknown-rate 100.0% -> 50.0%")


def test_a_directional_shift_is_a_shift_toward_the_stereotype():
    variant = [("wanda@0.5", "torch", 0, f"it-{i}", "Age", "ambig", "unknown" if i < 150 else "stereotype")
               for i in range(200)]
    row = _all_row(_dense_unknown(200) + variant)
    assert (row["b"], row["c"], row["b_anti"]) == (50, 0, 0)
    assert row["directed_shift"] == pytest.approx(0.25) and row["p_direction"] == pytest.approx(2 * 0.5 ** 50)
    v = _verdict(row)
    assert v.stereotype_shift and v.level == HIGH  # +25 pts, its CI far above the 10-pt margin


def test_a_null_repeated_identically_across_5_orders_is_not_significant():
    # 20 items; the variant moves 6 items to the stereotype and 2 away, the same way under all 5 orders.
    seeds = range(5)
    dense = [("dense", "torch", s, f"it-{i}", "Age", "ambig", "stereotype" if i in (6, 7) else "unknown")
             for s in seeds for i in range(20)]
    variant = [("magnitude@0.5", "torch", s, f"it-{i}", "Age", "ambig", "stereotype" if i < 6 else "unknown")
               for s in seeds for i in range(20)]
    row = _all_row(dense + variant)
    assert (row["b"], row["c"]) == (30, 10)
    # Pooled McNemar counts each item five times: p = 0.0022, "significant".
    assert row["mcnemar_p"] == pytest.approx(mcnemar_exact(30, 10)) and row["mcnemar_p"] < 0.01
    # Item level: d = (5,5,5,5,5,5,-5,-5); P(|sum of 8 random signs| >= 4) = 2 (28 + 8 + 1) / 256.
    assert row["p_shift"] == pytest.approx(74 / 256)


def test_sign_flip_with_one_order_is_mcnemar():
    for b, c in [(5, 1), (9, 1), (0, 6), (3, 3), (12, 4)]:
        d = [1] * b + [-1] * c + [0] * 7
        assert sign_flip_pvalue(d) == pytest.approx(mcnemar_exact(b, c), rel=1e-9)


def test_sign_flip_matches_enumeration():
    d = [2, 3, -1, 4, 1, 1, -2, 0]
    t = sum(d)
    signs = list(itertools.product((1, -1), repeat=len(d)))
    sums = [sum(s * abs(x) for s, x in zip(sign, d)) for sign in signs]
    assert sign_flip_pvalue(d) == pytest.approx(sum(abs(x) >= abs(t) for x in sums) / len(signs))
    assert sign_flip_pvalue(d, "greater") == pytest.approx(sum(x >= t for x in sums) / len(signs))
    assert sign_flip_pvalue(d, "less") == pytest.approx(sum(x <= t for x in sums) / len(signs))
    assert sign_flip_pvalue([0, 0]) == 1.0
    with pytest.raises(ValueError, match="integer"):
        sign_flip_pvalue([0.5, 1])


def test_template_sign_flip_sums_templates_first():
    from auditor.analysis.item_inference import template_sign_flip_pvalue

    # two templates of three items each: the test sees two sums (3, 3), so p = P(|T| >= 6) = 2 / 4
    assert template_sign_flip_pvalue([1, 1, 1, 1, 1, 1], list("aaabbb")) == pytest.approx(0.5)
    assert template_sign_flip_pvalue([1] * 6, list("abcdef")) == pytest.approx(2 / 64)
    # non-integer sums: Monte Carlo, seeded, close to the exact enumeration of 8 signs
    d = [0.5, 1.5, 2.5, 0.25, 1.0, 3.0, -0.75, 2.0]
    t = sum(d)
    import itertools as it
    sums = [sum(s * abs(x) for s, x in zip(sign, d)) for sign in it.product((1, -1), repeat=len(d))]
    exact = sum(abs(x) >= abs(t) - 1e-9 for x in sums) / len(sums)
    assert template_sign_flip_pvalue(d, range(8)) == pytest.approx(exact, abs=0.01)
    assert template_sign_flip_pvalue(d, range(8)) == template_sign_flip_pvalue(d, range(8))


def test_cluster_bootstrap_resamples_whole_templates():
    # One item per template: the item bootstrap (every replicate has n items).
    totals = cluster_bootstrap_totals(np.ones((6, 1)), list("abcdef"), n_boot=50, seed=0)
    assert (totals[:, 0] == 6).all()
    # 10 templates of 10 items whose outcome is the template's: the CI is as wide as 10 units, not 100.
    outcome = np.repeat([1.0] * 3 + [0.0] * 7, 10)
    per_item = np.column_stack([np.ones(100), outcome])
    clusters = np.repeat(np.arange(10), 10)
    clustered = cluster_bootstrap_totals(per_item, clusters, n_boot=2000, seed=0)
    flat = cluster_bootstrap_totals(per_item, np.arange(100), n_boot=2000, seed=0)
    width = lambda t: np.subtract(*np.quantile(t[:, 1] / t[:, 0], [0.975, 0.025]))  # noqa: E731
    assert width(clustered) / width(flat) == pytest.approx(math.sqrt(10), rel=0.3)


def test_sign_flip_on_thousands_of_items_matches_mcnemar():
    # 2,900 discordant items: the FFT path of the exact distribution, checked against the binomial test
    d = [1] * 1500 + [-1] * 1400 + [0] * 100
    assert sign_flip_pvalue(d) == pytest.approx(mcnemar_exact(1500, 1400), rel=1e-9)
    assert sign_flip_pvalue([5] * 700 + [-5] * 600) == pytest.approx(mcnemar_exact(700, 600), rel=1e-9)
