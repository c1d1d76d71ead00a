"""The decision view on toy variant tables: constraints, "not measured", grade order, ranking, Pareto front,
the "nothing fits" line with the nearest variant."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.view.decision import DECISION_COLUMNS, Constraints, decide, decision_rows

NAN = math.nan
MB = 1e6


def table(*rows) -> pd.DataFrame:
    """Rows as (variant, size MB, decode tok/s, verdict, same-top, kl, accuracy); backend torch, 4 bits."""
    return pd.DataFrame([{"variant": v, "backend": "torch", "kind": "variant", "size_bytes": s * MB,
                          "bits_per_weight": 4.0, "decode_tokens_per_s": d, "peak_rss_bytes": 2 * s * MB,
                          "verdict": g, "same_top_share": st, "kl": kl, "accuracy": acc}
                         for v, s, d, g, st, kl, acc in rows], columns=DECISION_COLUMNS)


ROWS = table(
    ("a", 100, 30.0, "low", 0.90, 0.002, 0.6),
    ("b", 200, 25.0, "low", 0.95, 0.001, 0.6),
    ("c", 50, 40.0, "high", 0.50, 0.050, 0.5),
    ("d", 150, 28.0, "inconclusive", 0.88, 0.003, 0.6),
    ("e", NAN, 50.0, "low", 0.99, 0.0005, 0.7),
    ("f", 300, 20.0, "low", 0.85, 0.004, 0.6),
    ("g", 120, 26.0, "not shown", 0.93, 0.0015, 0.6),
)


def names(frame: pd.DataFrame) -> list[str]:
    return list(frame["variant"])


def test_fits_ranked_lowest_risk_then_fidelity():
    d = decide(ROWS, Constraints(max_size_bytes=250 * MB, min_decode_tokens_per_s=20, max_grade="low"))
    assert names(d.fits) == ["b", "a"]  # both low: higher same-top first
    assert d.nearest is None
    by = d.table.set_index("variant")
    assert by.loc["c", "misses"] == ["grade high > low"]
    assert by.loc["d", "misses"] == ["grade inconclusive (never meets a max-grade constraint)"]
    assert by.loc["f", "misses"] == ["size 300.0 MB > 250.0 MB"]
    lines = d.lines()
    assert lines[0] == "constraints: size <= 250.0 MB, decode >= 20.0 tok/s, grade <= low"
    assert lines[1] == "2 of 7 variants fit, best first:" and lines[2].startswith("  1. b [torch]: 200.0 MB")


def test_not_measured_never_passes():
    d = decide(ROWS, Constraints(max_size_bytes=250 * MB))
    assert "e" not in names(d.fits)  # the best figures, but its size was not measured
    e = d.table.set_index("variant").loc["e"]
    assert not e["fits"] and e["not_measured"] == ["size not measured"] and e["n_missed"] == 0
    assert "not judged (size not measured): e [torch]" in d.lines()
    missing_grade = table(("x", 10, 50.0, "", 0.99, 0.001, 0.7))
    x = decide(missing_grade, Constraints(max_grade="elevated")).table.iloc[0]
    assert not x["fits"] and x["not_measured"] == ["grade not measured"]


def test_grade_order_and_uncompressed_rows():
    d = decide(ROWS, Constraints(max_grade="not shown"))
    assert set(names(d.fits)) == {"a", "b", "e", "f", "g"}  # low and not shown; high and inconclusive never
    assert set(names(decide(ROWS, Constraints(max_grade="elevated")).fits)) == {"a", "b", "e", "f", "g"}
    assert "c" in names(decide(ROWS, Constraints(max_grade="high")).fits)
    assert "d" not in names(decide(ROWS, Constraints(max_grade="high")).fits)
    dense = table(("dense", 600, 10.0, "reference", 1.0, 0.0, 0.7), ("dense-gguf-f16", 300, 15.0, "baseline",
                                                                     0.91, 0.0008, 0.7))
    assert names(decide(dense, Constraints(max_grade="low")).fits) == ["dense", "dense-gguf-f16"]


def test_nothing_fits_names_nearest_and_misses():
    d = decide(ROWS, Constraints(max_size_bytes=60 * MB, max_grade="low"))
    # c is 50 MB but graded high (3 grade steps over low); a, low, misses the size by 67%: a is nearer
    assert len(d.fits) == 0
    assert d.nearest["variant"] == "a" and d.nearest["misses"] == ["size 100.0 MB > 60.0 MB"]
    line = next(x for x in d.lines() if x.startswith("nothing fits"))
    assert line == ("nothing fits size <= 60.0 MB, grade <= low: the nearest is a [torch], which misses: "
                    "size 100.0 MB > 60.0 MB")
    # a measured miss is nearer than a figure that was not measured, at the same count
    d = decide(ROWS.drop(index=0), Constraints(max_size_bytes=60 * MB, max_grade="low"))
    assert d.nearest["variant"] == "b" and d.table.set_index("variant").loc["e", "not_measured"]
    # e misses only one constraint (its size is not measured), the others two: e is nearest
    d = decide(ROWS, Constraints(max_size_bytes=60 * MB, min_decode_tokens_per_s=45, max_grade="low"))
    assert d.nearest["variant"] == "e" and d.nearest["misses"] == ["size not measured"]
    assert d.table.set_index("variant").loc["a", "misses"] == ["size 100.0 MB > 60.0 MB",
                                                               "decode 30.0 tok/s < 45.0 tok/s"]


def test_pareto_front():
    d = decide(ROWS, Constraints())
    # a dominates d and f (smaller, faster, closer to dense, no riskier); c is smallest and fastest; b has the
    # best measured fidelity; g sits between a and b; e lacks a size
    assert set(names(d.pareto)) == {"a", "b", "c", "g"}
    assert d.pareto_note == ("not on the front (size not measured): e [torch]",)
    assert not d.table.set_index("variant").loc["d", "on_front"]
    assert len(d.fits) == len(ROWS)  # no constraint: everything fits


def test_fidelity_and_accuracy_constraints():
    d = decide(ROWS, Constraints(min_same_top=0.9, max_kl=0.0018, min_accuracy=0.6))
    assert names(d.fits) == ["e", "b", "g"]  # ranked by risk (low before not shown), then same-top
    by = d.table.set_index("variant")
    assert by.loc["a", "misses"] == ["KL 0.0020 > 0.0018"]
    assert by.loc["c", "misses"] == ["same-top 50.0% < 90.0%", "KL 0.0500 > 0.0018", "accuracy 50.0% < 60.0%"]


def test_bad_constraints_and_json():
    with pytest.raises(AuditorError, match="valid grades"):
        Constraints(max_grade="medium")
    with pytest.raises(AuditorError, match="between 0 and 1"):
        Constraints(min_same_top=1.5)
    with pytest.raises(AuditorError, match=">= 0"):
        Constraints(max_size_bytes=-1)
    doc = json.loads(json.dumps(json_safe(decide(ROWS, Constraints(max_size_bytes=40 * MB)).to_dict()),
                                allow_nan=False))
    assert doc["nearest"]["variant"] == "c" and doc["fits"] == []  # c misses by 25%, the next (a) by 150%
    assert next(r for r in doc["rows"] if r["variant"] == "e")["size_bytes"] is None


def test_decision_rows_join_fidelity():
    overview = pd.DataFrame([
        {"variant": "dense", "backend": "torch", "kind": "reference", "size_bytes": 5e8, "bits_per_weight": 16.0,
         "decode_tokens_per_s": 10.0, "peak_rss_bytes": 1e9, "verdict": "reference", "accuracy": 0.7},
        {"variant": "gguf-q4_k_m", "backend": "llama.cpp", "kind": "variant", "size_bytes": 1.5e8,
         "bits_per_weight": 4.9, "decode_tokens_per_s": 30.0, "peak_rss_bytes": NAN, "verdict": "low",
         "accuracy": 0.68},
    ])
    fidelity = pd.DataFrame([{"protocol": "strict", "variant": "gguf-q4_k_m", "backend": "llama.cpp",
                              "same_top_share": 0.887, "kl_mean": 0.0017},
                             {"protocol": "cloze", "variant": "gguf-q4_k_m", "backend": "llama.cpp",
                              "same_top_share": 0.5, "kl_mean": 0.1}])
    rows = decision_rows(overview, fidelity, protocol="strict").set_index("variant")
    assert list(rows.reset_index().columns) == DECISION_COLUMNS
    assert rows.loc["dense", "same_top_share"] == 1.0 and rows.loc["dense", "kl"] == 0.0
    assert rows.loc["gguf-q4_k_m", "same_top_share"] == 0.887 and rows.loc["gguf-q4_k_m", "kl"] == 0.0017
    with pytest.raises(ValueError, match="protocol"):
        decision_rows(overview, fidelity)
    # a measured figure the overview lacks comes from the units table
    units = pd.DataFrame([{"variant": "dense", "backend": "torch", "peak_rss_bytes": 2e9}])
    rows = decision_rows(overview.drop(columns="peak_rss_bytes"), fidelity, protocol="strict", units=units)
    assert rows.set_index("variant").loc["dense", "peak_rss_bytes"] == 2e9
    assert math.isnan(rows.set_index("variant").loc["gguf-q4_k_m", "peak_rss_bytes"])
