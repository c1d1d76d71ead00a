"""The decision under a run's own [decision] constraints: read from the manifest, refused when damaged, and laid
out for the report and the TUI (headline, standing, display rows)."""
from __future__ import annotations

import pytest

from auditor.core.errors import AuditorError
from auditor.view.decision import Constraints, decide, display_rows, standing, study_constraints
from tests.view.test_decision import MB, ROWS, names


def manifest(decision) -> dict:
    return {"study": {"definition": {"decision": decision}}}


def test_study_constraints_from_the_manifest():
    assert study_constraints(manifest({"max_size_bytes": 3e8, "max_grade": "low"})) == Constraints(
        max_size_bytes=3e8, max_grade="low")
    assert study_constraints({}) == Constraints()  # a run made before [decision], or by hand
    assert study_constraints(manifest({})) == Constraints()


@pytest.mark.parametrize("decision, message", [
    ({"max_budget": 1}, "unknown constraint(s) max_budget"),
    ([1], "unknown constraint(s) list"),
    ({"max_grade": "medium"}, "valid grades are"),
    ({"min_same_top": 2.0}, "must be a share between 0 and 1"),
    ({"max_kl": "a lot"}, "study [decision]"),
])
def test_damaged_manifest_constraints_refused_naming_the_file(decision, message):
    with pytest.raises(AuditorError) as exc:
        study_constraints(manifest(decision), "RUN/manifest.json")
    assert str(exc.value).startswith("RUN/manifest.json: study [decision]") and message in str(exc.value)


def test_headline_standing_and_display_rows():
    d = decide(ROWS, Constraints(max_size_bytes=250 * MB, min_decode_tokens_per_s=20, max_grade="low"))
    best = d.fits.iloc[0]
    assert d.headline().startswith(f"ship {best['variant']} [torch]: 200.0 MB, decode 25.0 tok/s, grade low")
    assert d.headline().endswith(f"({len(d.fits) - 1} other variant(s) also fit)")
    rows = display_rows(d)
    assert [r["variant"] for r in rows[:len(d.fits)]] == names(d.fits)  # the fits first, best first
    assert [r["standing"] for r in rows[:2]] == ["fits (#1)", "fits (#2)"]
    by = {r["variant"]: r for r in rows}
    assert by["c"]["standing"] == "misses: grade high > low" and by["c"]["grade"] == "HIGH"
    assert by["e"]["standing"] == "not judged: size not measured" and by["e"]["size"] == "not measured"
    assert standing(d.table.set_index("variant").loc["f"].to_dict()) == "misses: size 300.0 MB > 250.0 MB"
    assert {r["variant"] for r in rows if r["fits"]} == set(names(d.fits))


def test_nothing_fits_headline_and_no_constraints():
    d = decide(ROWS, Constraints(max_size_bytes=10 * MB))
    assert d.headline() == f"nothing fits size <= 10.0 MB: the nearest is {d.nearest['variant']} [torch], " \
                           f"which misses: {'; '.join(d.nearest['misses'])}"
    free = decide(ROWS, Constraints())
    assert {r["standing"] for r in display_rows(free)} == {"no constraints"}
    assert not any(r["fits"] for r in display_rows(free))


def test_speeds_timed_under_competing_load_are_flagged_first():
    """A decision on decode speeds measured while other work took the cores says so before anything else."""
    from types import SimpleNamespace

    from auditor.view.decision import reference_notes

    quiet = SimpleNamespace(validity=None, measure_context={"load_average": {"min": 0.2, "max": 1.1,
                                                                             "competing": False}})
    assert reference_notes(quiet) == []
    busy = SimpleNamespace(validity=None, measure_context={"cpus": "2", "load_average": {
        "min": 3.7, "max": 5.0, "own_threads": 2, "competing": True}})
    (note,) = reference_notes(busy)
    assert "load average 3.7-5.0 on 2 CPUs, 2 threads per runtime" in note and "not settled" in note
    assert "commits/measure__measurements.json" in note
