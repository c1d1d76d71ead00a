"""Run-vs-run diff: shared variants matched by spec and backend, grade and metric changes, the interval rule,
and the variants in one run only (toy tables, then two tiny planted runs with different variant sets)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from auditor.analysis.fidelity import fidelity_table
from auditor.view.diff import CHANGE_COLUMNS, DIFF_INPUT_COLUMNS, diff_rows, exceeds, run_diff
from auditor.view.run import RunView
from tests.helpers_runs import PLANTED_HIGH, build_run

NAN = math.nan


def rows(*specs) -> pd.DataFrame:
    """(variant, backend, verdict, flip, flip CI low, flip CI high, size bytes) rows; other figures NaN."""
    out = pd.DataFrame([{"variant": v, "backend": b, "verdict": g, "flip_rate": f, "flip_rate_ci_low": lo,
                         "flip_rate_ci_high": hi, "size_bytes": s} for v, b, g, f, lo, hi, s in specs])
    for col in DIFF_INPUT_COLUMNS:
        if col not in out.columns:
            out[col] = NAN
    return out[DIFF_INPUT_COLUMNS]


def test_exceeds_rule():
    assert exceeds(0.1, 0.2, 0.25, 0.3) is True  # disjoint
    assert exceeds(0.25, 0.3, 0.1, 0.2) is True
    assert exceeds(0.1, 0.2, 0.2, 0.3) is False  # touching intervals overlap
    assert exceeds(0.1, 0.2, NAN, 0.3) is None


def test_run_diff_on_toy_tables():
    a = rows(("dense", "torch", "reference", NAN, NAN, NAN, 5e8),
             ("wanda@0.5", "torch", "high", 0.50, 0.40, 0.60, 5e8),
             ("gguf-q4_k_m", "llama.cpp", "low", 0.05, 0.02, 0.08, 1.5e8),
             ("magnitude@0.3", "torch", "low", 0.02, 0.0, 0.05, NAN))
    b = rows(("dense", "torch", "reference", NAN, NAN, NAN, 5e8),
             ("wanda@0.5", "torch", "elevated", 0.20, 0.10, 0.30, 5e8),
             ("gguf-q4_k_m", "llama.cpp", "low", 0.07, 0.04, 0.10, 1.5e8),
             ("gguf-q4_k_m", "torch", "low", 0.07, 0.04, 0.10, NAN))  # same spec, another backend: not shared
    d = run_diff(a, b, "old", "new")
    assert [tuple(x) for x in d.grades[["variant", "backend"]].to_numpy()] == [
        ("dense", "torch"), ("wanda@0.5", "torch"), ("gguf-q4_k_m", "llama.cpp")]
    assert d.only_a == (("magnitude@0.3", "torch"),) and d.only_b == (("gguf-q4_k_m", "torch"),)
    g = d.grades.set_index("variant")
    assert g.loc["wanda@0.5", "changed"] and not g.loc["gguf-q4_k_m", "changed"]
    c = d.changes.set_index(["variant", "metric"])
    assert list(d.changes.columns) == CHANGE_COLUMNS
    assert c.loc[("wanda@0.5", "flip_rate"), "change"] == pytest.approx(-0.30)
    assert c.loc[("wanda@0.5", "flip_rate"), "exceeds"] is True  # [0.4, 0.6] vs [0.1, 0.3]
    assert c.loc[("gguf-q4_k_m", "flip_rate"), "exceeds"] is False  # [0.02, 0.08] vs [0.04, 0.10]
    assert c.loc[("wanda@0.5", "size_bytes"), "exceeds"] is None  # no interval for a size
    assert ("dense", "flip_rate") not in c.index  # measured in neither run: no row
    lines = d.lines()
    assert lines[0] == "A = old, B = new: 3 variant(s) in both"
    assert "wanda@0.5 [torch]: grade high -> elevated" in lines
    assert "    flip rate: 50.0% -> 20.0% (-30.0 pts, exceeds both intervals)" in lines
    assert "    flip rate: 5.0% -> 7.0% (+2.0 pts, within the intervals)" in lines
    assert "    size: 500.0 MB -> 500.0 MB (+0.0 MB, no interval)" in lines
    assert lines[-2:] == ["only in A (old): magnitude@0.3 [torch]", "only in B (new): gguf-q4_k_m [torch]"]
    doc = d.to_dict()
    assert doc["only_b"] == [{"variant": "gguf-q4_k_m", "backend": "torch"}]
    assert d.item_note == "" and doc["items"] == ""
    same = run_diff(a, b, items_a=["Age/1", "Age/2"], items_b=["Age/2", "Age/1"])
    assert same.lines()[1] == "items: the same 2 items in both runs"
    other = run_diff(a, b, items_a=["Age/1", "Age/2"], items_b=["Age/2", "Age/3", "Age/4"])
    assert other.item_note.startswith("items differ: 2 in A, 3 in B, 1 in both")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    a = build_run(root, "a", variants=("magnitude@0.3", PLANTED_HIGH, "rtn@4"))
    b = build_run(root, "b", variants=("magnitude@0.5", PLANTED_HIGH, "rtn@4"))
    out = []
    for run in (a, b):
        view = RunView.load(run, n_boot=50)
        out.append(diff_rows(view.overview, fidelity_table(view.records, n_boot=50), protocol=view.protocol))
    return out


def test_diff_of_two_planted_runs(two_runs):
    a, b = two_runs
    d = run_diff(a, b, "a", "b")
    assert set(map(tuple, d.grades[["variant", "backend"]].to_numpy())) == {
        ("dense", "torch"), (PLANTED_HIGH, "torch"), ("rtn@4", "torch")}
    assert d.only_a == (("magnitude@0.3", "torch"),) and d.only_b == (("magnitude@0.5", "torch"),)
    # the same planted answers in both runs: no grade moves, no metric change, no interval separates them
    assert not d.grades["changed"].any()
    assert (d.changes["change"].dropna().abs() < 1e-12).all()
    assert not d.changes["exceeds"].dropna().astype(bool).any()
    c = d.changes.set_index(["variant", "metric"])
    # rtn@4 answers as dense: same top on every prompt, KL 0; the planted variant's fidelity is measured too
    assert c.loc[("rtn@4", "same_top_share"), "a"] == 1.0
    assert c.loc[(PLANTED_HIGH, "same_top_share"), "a"] < 1.0
    assert c.loc[(PLANTED_HIGH, "flip_rate"), "exceeds"] is False


def test_changes_vs_dense_read_in_points():
    a = rows(("wanda@0.5", "torch", "high", NAN, NAN, NAN, NAN)).assign(
        srs_change=0.25, srs_change_ci_low=0.20, srs_change_ci_high=0.30)
    b = a.assign(srs_change=0.05, srs_change_ci_low=-0.01, srs_change_ci_high=0.11)
    lines = run_diff(a, b).lines()
    assert "    SRS change vs dense: +25.0 pts -> +5.0 pts (-20.0 pts, exceeds both intervals)" in lines
