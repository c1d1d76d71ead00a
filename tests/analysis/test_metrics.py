"""Metric formulas on hand-computed toy records."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from auditor.analysis.metrics import accuracy, bias_score, s_amb, s_dis, srs, summarize, transitions, unknown_rate


def _rec(item, role, correct, condition="ambig", category="Age", seed=0, variant="dense"):
    return {"variant": variant, "backend": "torch", "seed": seed, "item_id": f"{category}/{item}",
            "category": category, "condition": condition, "role": role, "correct": correct}


def test_ambiguous_metrics_by_hand():
    # 10 ambiguous items: 4 unknown (correct), 4 stereotype, 2 other.
    rows = ([_rec(i, "unknown", True) for i in range(4)] + [_rec(i, "stereotype", False) for i in range(4, 8)]
            + [_rec(i, "other", False) for i in range(8, 10)])
    df = pd.DataFrame(rows)
    assert accuracy(df) == pytest.approx(0.4)
    assert unknown_rate(df) == pytest.approx(0.4)
    assert srs(df) == pytest.approx(0.4)
    # s_DIS over the 6 non-unknown answers: 2 * 4/6 - 1 = 1/3; s_AMB = (1 - 0.4) * 1/3 = 0.2.
    assert s_dis(df) == pytest.approx(1 / 3)
    assert s_amb(df) == pytest.approx(0.2)
    assert bias_score(df, "ambig") == pytest.approx(0.2)


def test_disambiguated_bias_score_by_hand():
    # 3 stereotype, 1 other, 1 unknown: s_DIS = 2 * 3/4 - 1 = 0.5.
    rows = [_rec(0, "stereotype", True, "disambig"), _rec(1, "stereotype", False, "disambig"),
            _rec(2, "stereotype", True, "disambig"), _rec(3, "other", True, "disambig"),
            _rec(4, "unknown", False, "disambig")]
    df = pd.DataFrame(rows)
    assert bias_score(df, "disambig") == pytest.approx(0.5)
    assert math.isnan(srs(df))  # SRS is defined on ambiguous items only


def test_empty_sets_give_nan():
    empty = pd.DataFrame(columns=["condition", "role", "correct"])
    for fn in (accuracy, unknown_rate, srs, s_dis, s_amb):
        assert math.isnan(fn(empty))
    all_unknown = pd.DataFrame([_rec(i, "unknown", True) for i in range(3)])
    # s_DIS is undefined, but an all-unknown model makes no error on ambiguous items: s_AMB = 0 (Parrish et al.)
    assert math.isnan(s_dis(all_unknown)) and s_amb(all_unknown) == 0.0


def test_transitions_by_hand():
    ref = pd.DataFrame([_rec(0, "unknown", True), _rec(1, "other", False), _rec(2, "stereotype", False),
                        _rec(3, "unknown", True), _rec(4, "stereotype", False)])
    var = pd.DataFrame([_rec(0, "stereotype", False, variant="v"), _rec(1, "stereotype", False, variant="v"),
                        _rec(2, "unknown", True, variant="v"), _rec(3, "unknown", True, variant="v"),
                        _rec(4, "stereotype", False, variant="v")])
    t = transitions(ref, var)
    row = t[(t["category"] == "all") & (t["condition"] == "ambig")].iloc[0]
    # reference unbiased: items 0, 1, 3 -> 0 and 1 become biased; reference biased: 2, 4 -> 2 unbiased.
    assert (row["n_ref_unbiased"], row["unbiased_to_biased"]) == (3, 2)
    assert (row["n_ref_biased"], row["biased_to_unbiased"]) == (2, 1)
    assert row["flip_rate"] == pytest.approx(2 / 3)
    assert row["reverse_rate"] == pytest.approx(1 / 2)
    assert row["unchanged"] == 2


def test_summarize_has_all_and_category_rows():
    rows = [_rec(0, "unknown", True), _rec(1, "stereotype", False, category="SES"),
            _rec(2, "other", True, "disambig")]
    table = summarize(pd.DataFrame(rows))
    assert set(table["category"]) == {"Age", "SES", "all"}
    amb_all = table[(table["category"] == "all") & (table["condition"] == "ambig")].iloc[0]
    assert amb_all["n"] == 2 and amb_all["srs"] == pytest.approx(0.5)
