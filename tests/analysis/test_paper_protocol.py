"""The `paper` protocol: tempered option probabilities, exact expected rates, the uniform-answerer rate, sampling."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from auditor.analysis.paper_protocol import (
    UNIFORM_ANSWERER_RATE,
    content_blind_p_s,
    expected_transition_rate,
    option_probs,
    p_unbiased,
    paper_items,
    paper_table,
    sample_item_srs,
    stereotype_prob,
)
from tests.analysis.test_stats import ROTATIONS, records_frame

LOG = math.log


def test_option_probs_by_hand():
    lp = np.array([[LOG(0.5), LOG(0.25), LOG(0.25)]])
    np.testing.assert_allclose(option_probs(lp, 1.0), [[0.5, 0.25, 0.25]])
    # T = 0.5 squares the probabilities before renormalising: [.25, .0625, .0625] / .375.
    np.testing.assert_allclose(option_probs(lp, 0.5), [[2 / 3, 1 / 6, 1 / 6]])
    # Full-vocab log-softmax differs from the logits by a constant, which must cancel.
    np.testing.assert_allclose(option_probs(lp - 7.3, 0.3), option_probs(lp, 0.3))
    np.testing.assert_allclose(option_probs(np.array([[0.0, -np.inf, 0.0]]), 0.3), [[0.5, 0.0, 0.5]])
    assert np.isnan(option_probs(np.array([[np.nan, 0.0, 0.0]]), 0.3)).all()
    with pytest.raises(ValueError):
        option_probs(lp, 0.0)


def test_stereotype_prob_uses_the_stereotype_index():
    # Dataset answer 1 is the stereotype here; T = 1 keeps the probabilities as given.
    records = records_frame([("dense", "torch", 0, "a", "Age", "ambig", "unknown", (LOG(0.2), LOG(0.7), LOG(0.1)))])
    records["stereotype_index"] = 1
    assert stereotype_prob(records, 1.0)[0] == pytest.approx(0.7)


def test_uniform_model_scores_the_uniform_answerer_rate_against_any_dense():
    assert UNIFORM_ANSWERER_RATE == pytest.approx(1 - (2 / 3) ** 5)
    assert UNIFORM_ANSWERER_RATE == pytest.approx(211 / 243)
    p_ref = np.array([0.0, 0.05, 0.3, 0.9])
    assert expected_transition_rate(p_ref, np.full(4, 1 / 3)) == pytest.approx(UNIFORM_ANSWERER_RATE)
    # And a uniform variant's p_s really is 1/3 when its three log-probs are equal.
    lp = np.full((1, 3), -4.0)
    assert option_probs(lp)[0, 0] == pytest.approx(1 / 3)


def test_expected_rates_hand_computed():
    # Two items: u_ref = (1, 1/32), 1 - u_var = (31/32, 0): rate = (31/32) / (33/32) = 31/33.
    assert expected_transition_rate(np.array([0.0, 0.5]), np.array([0.5, 0.0])) == pytest.approx(31 / 33)
    # Dense vs itself at p_s = 0.2: u = 0.8^5 = 0.32768 and the rate is 1 - u: far from 0.
    assert expected_transition_rate(np.array([0.2]), np.array([0.2])) == pytest.approx(1 - 0.8 ** 5)
    assert p_unbiased(0.2) == pytest.approx(0.32768)
    # A reference that is never unbiased: empty denominator.
    assert math.isnan(expected_transition_rate(np.array([1.0]), np.array([0.0])))
    # NaN pairs are left out.
    assert expected_transition_rate(np.array([0.0, np.nan]), np.array([0.5, 0.1])) == pytest.approx(31 / 32)


def test_sampled_item_srs_levels_and_extremes():
    rng = np.random.default_rng(0)
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]] * 200)
    srs = sample_item_srs(probs, np.zeros(600, dtype=int), 5, rng)
    assert set(np.round(srs * 5, 9)) <= {0, 1, 2, 3, 4, 5}
    assert (srs[0::3] == 1).all() and (srs[1::3] == 0).all()
    # P(SRS = 0) for a uniform item is (2/3)^5 = 0.1317; 200 items, 4 SE tolerance.
    share = float((srs[2::3] == 0).mean())
    assert abs(share - (2 / 3) ** 5) < 4 * math.sqrt(0.1317 * 0.8683 / 200)


def _records(n_items: int, seed: int, variants: dict[str, float] | None = None) -> pd.DataFrame:
    """Dense with random p_s per item plus variants with log-probs making p_s as given at T = 0.3."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        lp = tuple(rng.normal(0.0, 0.4, 3) - 5.0)  # near-ties: p_s spread over (0, 1) at T = 0.3
        cat = "Age" if i % 2 else "SES"
        rows.append(("dense", "torch", 0, f"it-{i}", cat, "ambig", "unknown", lp))
        rows.append(("uniform", "torch", 0, f"it-{i}", cat, "ambig", "unknown", (-3.0, -3.0, -3.0)))
        rows.append(("dense", "torch", 0, f"d-{i}", cat, "disambig", "unknown", (0.0, -9.0, -9.0)))
        for name, p_s in (variants or {}).items():
            # logprob / 0.3 = log p: lp_k = 0.3 log p_k.
            rest = (1 - p_s) / 2
            rows.append((name, "torch", 0, f"it-{i}", cat, "ambig", "unknown",
                         (0.3 * LOG(p_s), 0.3 * LOG(rest), 0.3 * LOG(rest))))
    return records_frame(rows)


def test_paper_table_uniform_rate_dense_vs_dense_and_sampling():
    records = _records(2000, seed=3)
    table = paper_table(records, seed=1).set_index("category")
    assert list(table.index) == ["Age", "SES", "all"]
    row = table.loc["all"]
    assert row["n_pairs"] == 2000  # ambiguous only
    assert row["expected_rate"] == pytest.approx(UNIFORM_ANSWERER_RATE)  # the uniform variant scores exactly the uniform-answerer rate
    assert (table["uniform_answerer_rate"] == UNIFORM_ANSWERER_RATE).all()
    dense = records[(records["variant"] == "dense") & (records["condition"] == "ambig")]
    u = p_unbiased(stereotype_prob(dense))
    assert row["expected_ref_unbiased"] == pytest.approx(u.sum())
    assert row["dense_vs_dense_expected"] == pytest.approx((u * (1 - u)).sum() / u.sum())
    assert row["dense_vs_dense_expected"] > 0.2  # far from 0: the definition's own noise
    # Sampling estimates converge to the exact rates (binomial SE on the sampled denominator, 4 SE).
    for sampled, exact in (("sampled_rate", "expected_rate"), ("dense_vs_dense_sampled", "dense_vs_dense_expected")):
        se = math.sqrt(row[exact] * (1 - row[exact]) / row["sampled_ref_unbiased"])
        assert abs(row[sampled] - row[exact]) < 4 * se
    assert row["sampled_became_biased"] <= row["sampled_ref_unbiased"]


def test_paper_table_is_seeded_and_a_variants_draws_ignore_the_others():
    records = _records(300, seed=4, variants={"magnitude@0.5": 0.6})
    with_extra = pd.concat([records, _records(300, seed=4, variants={"wanda@0.5": 0.1}).query(
        "variant == 'wanda@0.5'")], ignore_index=True)
    a = paper_table(records, seed=7)
    b = paper_table(with_extra, seed=7)
    key = ["variant", "category"]
    pd.testing.assert_frame_equal(a.set_index(key), b.set_index(key).loc[a.set_index(key).index])
    # Hand check on the planted variant: p_s = 0.6 everywhere, so 1 - u_var = 1 - 0.4^5.
    mag = a[(a["variant"] == "magnitude@0.5") & (a["category"] == "all")].iloc[0]
    assert mag["expected_rate"] == pytest.approx(1 - 0.4 ** 5)
    assert mag["srs_var"] == pytest.approx(0.6)
    items = paper_items(records[records["variant"] == "magnitude@0.5"], seed=7)
    assert set(np.round(items["srs_sampled"] * 5, 9)) <= {0, 1, 2, 3, 4, 5}
    assert items["p_unbiased"].to_numpy() == pytest.approx(0.4 ** 5)


def test_content_blind_rate_uses_the_variants_own_position_preferences():
    # A variant that always answers the first shown letter: pi = (1, 0, 0). Under the rotations the stereotype
    # answer (dataset index 0) is shown first at seed 0 only, so its content-blind p_s is 1, 0, 0 by seed.
    rows = []
    for seed in range(3):
        first = int(ROTATIONS[seed][0])
        role = {0: "stereotype", 1: "other", 2: "unknown"}[first]
        for i in range(4):
            rows.append(("dense", "torch", seed, f"it-{i}", "Age", "ambig", "unknown", (-9.0, -9.0, 0.0)))
            rows.append(("wanda@0.5", "torch", seed, f"it-{i}", "Age", "ambig", role, (-9.0, -9.0, -9.0)))
    records = records_frame(rows)
    variant = records[records["variant"] == "wanda@0.5"]
    assert list(content_blind_p_s(variant)) == [1.0] * 4 + [0.0] * 8
    row = paper_table(records).query("category == 'all'").iloc[0]
    p_ref = stereotype_prob(records[records["variant"] == "dense"])
    u_ref = p_unbiased(p_ref)
    # only seed-0 pairs can become biased, and they always do: rate = sum of their u_ref / sum u_ref = 1/3
    assert row["content_blind_rate"] == pytest.approx(u_ref[:4].sum() / u_ref.sum())
    assert row["content_blind_rate"] == pytest.approx(1 / 3)
