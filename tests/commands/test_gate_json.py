"""`auditor gate RUN --json`: one JSON object on stdout with each variant's checks (threshold, bound, compared
value, outcome) and the exit code, which is the code the command returns, as without --json."""
from __future__ import annotations

import json

import pytest

from auditor.cli import main
from auditor.commands.gate import EXIT_INCOMPLETE, EXIT_INVALID_REFERENCE
from auditor.data.rundir import SCORE, Unit
from tests.helpers_faults import build_planned_run
from tests.helpers_runs import PLANTED_HIGH, build_run


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    build_run(root, "planted")
    build_run(root, "position", position_driven_dense=True, seeds=(0, 1, 2))
    return root


def gate(capsys, *args) -> tuple[int, dict, str]:
    code = main(["gate", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out), out  # json.loads of the whole of stdout: nothing else is printed


def test_json_verdict_matches_the_text_verdict(reports, capsys):
    args = ("planted", "--reports", str(reports), "--max-flip-rate", "0.6", "--min-accuracy", "0.3")
    text_code = main(["gate", *args])
    text = capsys.readouterr().out
    code, doc, _ = gate(capsys, *args)
    assert code == text_code == doc["exit_code"] == 1 and doc["exit_reason"] == "threshold" and not doc["passed"]
    assert doc["lines"] == text.splitlines()  # the same verdict, line for line
    assert doc["thresholds"] == {"max_flip_rate": 0.6, "min_accuracy": 0.3}
    by_name = {v["variant"]: v for v in doc["variants"]}
    assert by_name[PLANTED_HIGH]["passed"] is False and by_name[PLANTED_HIGH]["name"] == f"{PLANTED_HIGH} [torch]"
    assert f"FAIL {PLANTED_HIGH} [torch]" in text and "PASS magnitude@0.5 [torch]" in text
    assert by_name["magnitude@0.5"]["passed"] is True
    for v in doc["variants"]:
        checks = {c["threshold"]: c for c in v["checks"]}
        assert set(checks) == {"max_flip_rate", "min_accuracy"}
        flips, acc = checks["max_flip_rate"], checks["min_accuracy"]
        assert flips["bound"] == 0.6 and flips["passed"] == (flips["value"] <= 0.6)
        assert flips["value"] >= flips["estimate"]  # the upper CI bound is compared, not the point estimate
        assert acc["bound"] == 0.3 and acc["passed"] == (acc["value"] >= 0.3) and acc["value"] <= acc["estimate"]
        assert v["passed"] == all(c["passed"] for c in v["checks"])
        assert all(c["text"] for c in v["checks"])
    assert doc["n_passed"] == sum(v["passed"] for v in doc["variants"]) and doc["n_variants"] == 4


def test_json_exit_0_when_every_variant_passes(reports, capsys):
    code, doc, _ = gate(capsys, "planted", "--reports", str(reports), "--min-accuracy", "0.1")
    assert code == doc["exit_code"] == 0 and doc["passed"] and doc["exit_reason"] == "pass"
    assert doc["reference"] == {"valid": True, "accepted": False, "findings": [], "missing": None}


def test_json_invalid_reference_exit_3(reports, capsys):
    code, doc, _ = gate(capsys, "position", "--reports", str(reports), "--max-flip-rate", "1")
    assert code == doc["exit_code"] == EXIT_INVALID_REFERENCE
    assert doc["exit_reason"] == "invalid_reference" and doc["reference"]["valid"] is False
    assert doc["reference"]["findings"]
    code, doc, _ = gate(capsys, "position", "--reports", str(reports), "--max-flip-rate", "1",
                        "--accept-invalid-reference")
    assert doc["reference"]["accepted"] is True and code == doc["exit_code"] != EXIT_INVALID_REFERENCE


def test_json_bad_input_is_still_one_line_on_stderr(reports, capsys):
    assert main(["gate", "planted", "--reports", str(reports), "--max-flip-rate", "2", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "--max-flip-rate" in captured.err


def test_json_incomplete_run_exit_4(tmp_path, capsys):
    run = build_planned_run(tmp_path, variants=("magnitude@0.5", "rtn@4"))
    unit = Unit(SCORE, "rtn@4", "rtn@4", "torch")
    unit.commit_path(run).unlink()  # its records stay, but nothing vouches for them
    code, doc, _ = gate(capsys, str(run), "--max-flip-rate", "1")
    assert code == doc["exit_code"] == EXIT_INCOMPLETE and doc["exit_reason"] == "incomplete"
    assert doc["complete"] is False and doc["missing_units"] == [unit.id]


def test_help_shows_json_and_the_interval_wording(capsys):
    """argparse formats "%" in a help text: the thresholds' "95% CI" must not break `auditor gate --help`."""
    with pytest.raises(SystemExit) as exc:
        main(["gate", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--json" in out and "upper 95% CI bound" in " ".join(out.split())
