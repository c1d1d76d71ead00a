"""`auditor decide RUN` takes its constraints from the study's [decision] table (the run's manifest, then
`--study FILE`), and the flags override it key by key."""
from __future__ import annotations

import json

import pytest

from auditor.cli import main
from auditor.view.deployable import nearest_format
from tests.helpers_decision import with_decision
from tests.helpers_runs import MEASURED, build_run

# (bytes, variant) of the smallest real file in the planted run (rtn@4's size is simulated)
SMALLEST = min((v["size_bytes"], k) for k, v in MEASURED.items() if nearest_format(k) is None)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    with_decision(build_run(root, "budget"), {"max_size_bytes": SMALLEST[0] * 1.25, "min_accuracy": 0.1})
    build_run(root, "plain")
    return root


@pytest.fixture
def run_json(reports, capsys):
    def call(*args) -> tuple[int, dict]:
        code = main(["decide", *args, "--reports", str(reports), "--json", "--n-boot", "30"])
        return code, json.loads(capsys.readouterr().out)
    return call


def test_the_runs_study_sets_the_constraints(run_json):
    code, doc = run_json("budget")
    assert code == 0
    assert doc["constraints"] == {"max_size_bytes": SMALLEST[0] * 1.25, "min_accuracy": 0.1}
    assert doc["constraints_from"] == "the run's study [decision]"
    assert doc["fits"] == [{"variant": SMALLEST[1], "backend": "torch"}]


def test_flags_override_key_by_key(run_json):
    code, doc = run_json("budget", "--max-size", f"{SMALLEST[0] * 0.5:.0f}")
    assert code == 1  # half the smallest size: nothing fits
    assert doc["constraints"] == {"max_size_bytes": SMALLEST[0] * 0.5, "min_accuracy": 0.1}  # min_accuracy kept
    assert doc["constraints_from"] == "the run's study [decision] < flags"
    assert doc["nearest"]["variant"] == SMALLEST[1]


def test_study_file_overrides_the_run_and_flags_override_both(reports, tmp_path, run_json):
    study = tmp_path / "ship.toml"
    study.write_text('name = "ship"\n[decision]\nmax_size = "1TB"\nmax_grade = "low"\n')
    code, doc = run_json("budget", "--study", str(study))
    assert code == 0
    assert doc["constraints"] == {"max_size_bytes": 1e12, "min_accuracy": 0.1, "max_grade": "low"}
    assert doc["constraints_from"] == f"the run's study [decision] < {study} [decision]"
    fits = {(r["variant"]) for r in doc["fits"]}
    graded = {r["variant"]: r["verdict"] for r in doc["rows"]}
    # rtn@4 is graded low but never fits a size constraint: its size is simulated (RTN writes float32 weights)
    assert fits == {v for v, g in graded.items() if g in ("low", "reference", "baseline") and nearest_format(v) is None}
    code, doc = run_json("budget", "--study", str(study), "--max-grade", "high")
    assert doc["constraints"]["max_grade"] == "high" and doc["constraints_from"].endswith("< flags")


def test_a_run_without_decision_table_has_no_constraints(reports, capsys):
    assert main(["decide", "plain", "--reports", str(reports), "--n-boot", "30"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "decide plain (constraints from none given)"
    assert "constraints: none" in out


def test_bad_study_file_is_one_line_exit_2(reports, tmp_path, capsys):
    study = tmp_path / "bad.toml"
    study.write_text('name = "bad"\n[decision]\nmax_size = "lots"\n')
    assert main(["decide", "budget", "--reports", str(reports), "--study", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{study}: [decision] max_size 'lots': expected a size" in err, err
