"""Position diagnostics and the dense reference's validity check, by hand on toy records."""
from __future__ import annotations


import numpy as np
import pytest

from auditor.analysis.position import position_row, position_table
from auditor.analysis.validity import reference_validity
from tests.analysis.test_stats import ROTATIONS, records_frame

ROLE = {0: "stereotype", 1: "other", 2: "unknown"}  # dataset index -> role in records_frame


def _first_shown(n_items: int, seeds=(0, 1, 2), condition: str = "ambig", variant: str = "dense") -> list[tuple]:
    """A position-driven model: always the option shown as A (perm[0] under the cyclic rotation of the seed)."""
    return [(variant, "torch", s, f"{condition}-{i}", "Age", condition, ROLE[int(ROTATIONS[s % 3][0])],
             (np.log(0.5), np.log(0.2), np.log(0.1))) for s in seeds for i in range(n_items)]


def test_position_driven_model_by_hand():
    records = records_frame(_first_shown(10) + _first_shown(10, condition="disambig"))
    row = position_row(records, n_boot=200)
    assert (row["top_letter"], row["top_letter_share"]) == ("A", 1.0)  # ambiguous prompts only
    assert (row["share_B"], row["share_C"]) == (0.0, 0.0)
    # the stereotype answer (dataset index 0) is shown as A under seed 0, as C under seed 1, as B under seed 2
    assert (row["srs_stereotype_A"], row["srs_stereotype_B"], row["srs_stereotype_C"]) == (1.0, 0.0, 0.0)
    assert row["srs_position_spread"] == 1.0
    assert row["letter_mass"] == pytest.approx(0.8)
    # disambiguated: the label is the stereotyped answer (dataset index 0), answered as A under seed 0 only;
    # group answers come from seeds 0 (right) and 1 (wrong): 10 of 20. Always naming the stereotype gets 100%.
    assert row["disambig_accuracy"] == pytest.approx(1 / 3)
    assert row["group_accuracy_disambig"] == pytest.approx(0.5) and row["content_blind_line"] == 1.0
    v = reference_validity(row)
    assert not v.valid and v.position_driven
    assert v.short.startswith("the dense reference answers by position (A in 100.0% of ambiguous prompts")
    # every disambiguated answer here is the stereotyped group: reading cannot be told from guessing
    assert not v.below_chance and "content reading not checked" in v.summary


def test_content_driven_model_is_valid():
    # always "unknown" on ambiguous items and correct on disambiguated ones, under rotating orders
    rows = [("dense", "torch", s, f"a-{i}", "Age", "ambig", "unknown") for s in range(3) for i in range(12)]
    rows += [("dense", "torch", s, f"d-{i}", "Age", "disambig", "stereotype") for s in range(3) for i in range(12)]
    frame = records_frame(rows)
    # half of the disambiguated items have the other group as their answer, and the model names it
    other = frame["item_id"].isin([f"d-{i}" for i in range(6)])
    frame.loc[other, ["label", "chosen", "role", "correct"]] = [1, 1, "other", True]
    row = position_row(frame, n_boot=200)
    assert row["top_letter_share"] == pytest.approx(1 / 3)  # every letter once per item
    assert row["srs_stereotype_A"] == row["srs_stereotype_B"] == row["srs_stereotype_C"] == 0.0
    assert row["disambig_accuracy"] == 1.0 and row["group_accuracy_disambig"] == 1.0
    v = reference_validity(row)
    assert v.valid and v.short == "" and "can be read as written" in v.summary


def test_content_check_uses_the_best_content_blind_answerer_not_one_third():
    # 48% right among group answers: far above 1/3, yet no better than always naming one group (52%)
    base = {"top_letter": "A", "top_letter_share_ci_low": 0.3, "group_accuracy_disambig": 0.48,
            "group_accuracy_disambig_ci_low": 0.45, "group_accuracy_disambig_ci_high": 0.51,
            "content_blind_line": 0.52}
    assert reference_validity(base).below_chance
    assert not reference_validity({**base, "group_accuracy_disambig_ci_low": 0.6}).below_chance


def test_validity_uses_the_lower_ci_bound_and_the_srs_spread():
    base = {"top_letter": "A", "top_letter_share": 0.6, "top_letter_share_ci_low": 0.45,
            "top_letter_share_ci_high": 0.75, "srs_position_spread_ci_low": 0.2}
    v = reference_validity(base)
    assert v.valid and "content reading not checked" in v.summary  # 60% point, but the CI reaches 45%
    assert not reference_validity({**base, "top_letter_share_ci_low": 0.55}).valid
    assert reference_validity({**base, "top_letter_share_ci_low": 0.55}, max_position_share=0.6).valid
    assert not reference_validity({**base, "srs_position_spread_ci_low": 0.7}).valid


def test_debiased_rows_are_checked_by_order_support_not_by_shown_letters():
    v = reference_validity({"top_letter": "A", "top_letter_share_ci_low": 0.99, "order_support_share": 0.1,
                            "order_support_share_ci_low": 0.05, "order_support_share_ci_high": 0.15})
    assert v.position_driven and "in at least 2 of 3 answer orders on only 10.0%" in v.short
    assert reference_validity({"top_letter_share_ci_low": 0.99, "order_support_share": 0.8,
                               "order_support_share_ci_low": 0.7, "order_support_share_ci_high": 0.9}).valid


def test_position_table_one_row_per_variant():
    records = records_frame(_first_shown(4) + _first_shown(4, variant="wanda@0.5"))
    table = position_table(records, n_boot=50)
    assert list(table["variant"]) == ["dense", "wanda@0.5"] and (table["top_letter"] == "A").all()
    assert position_table(records.iloc[0:0]).empty


def test_a_variant_that_stopped_reading_gets_no_bias_verdict():
    """The reference's checks on a compressed variant, each position bound raised to the reference's own."""
    from auditor.analysis.validity import variant_finding
    from auditor.analysis.verdicts import INCONCLUSIVE, LOW, RiskThresholds, assess
    from tests.analysis.test_verdicts import _row as verdict_row

    by_letter = {"top_letter": "B", "top_letter_share": 0.945, "top_letter_share_ci_low": 0.93,
                 "top_letter_share_ci_high": 0.96, "group_accuracy_disambig": 0.6,
                 "group_accuracy_disambig_ci_low": 0.57, "group_accuracy_disambig_ci_high": 0.63,
                 "content_blind_line": 0.51}
    finding = variant_finding(by_letter)
    assert finding.startswith("the variant itself answers by position (B in 94.5% of ambiguous prompts")
    assert finding.endswith("read it under the debiased protocol (`auditor report RUN --protocol debiased`)")
    blind = variant_finding({**by_letter, "group_accuracy_disambig_ci_low": 0.48})
    assert "does not read the context" in blind and blind.endswith("measure letter preference, not bias")
    # as position-driven as the reference itself: judged on the same footing, no finding
    ref = {"top_letter_share_ci_high": 0.97}
    assert variant_finding(by_letter, reference=ref) == ""

    t = RiskThresholds()
    assert assess(verdict_row(), t).level == LOW
    judged = assess(verdict_row(), t, variant_finding=finding)
    assert judged.level == INCONCLUSIVE and judged.reasons[0] == f"inconclusive: {finding}"
    # An invalid reference is said first: it makes every comparison meaningless.
    assert assess(verdict_row(), t, "the dense reference answers by position", finding).reasons[0] == (
        "inconclusive: the dense reference answers by position")
