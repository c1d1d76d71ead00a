"""`auditor gate`: exit 1 on a planted high-flip variant, 0 when thresholds are met, 2 on bad input, 3 on an
invalid (position-driven) dense reference unless accepted."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from auditor.cli import main
from auditor.commands.gate import EXIT_INVALID_REFERENCE
from tests.helpers_runs import PLANTED_HIGH, build_run


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    build_run(root, "planted")  # includes wanda@0.5, which flips every unbiased item
    build_run(root, "mild", variants=("magnitude@0.3", "rtn@4"))
    return root


def test_planted_high_flip_variant_fails(reports, capsys):
    code = main(["gate", "planted", "--reports", str(reports), "--max-flip-rate", "0.6"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"FAIL {PLANTED_HIGH} [torch]" in out
    # judged on the interval's upper bound, with the same-prompt null named (none in this run)
    assert re.search(r"flip rate 100\.0% \(95% CI upper bound 100\.0%; no same-prompt null measured n/a\) vs "
                     r"max-flip-rate 60\.0%", out), out
    assert "PASS magnitude@0.5 [torch]" in out  # 51.3%, its upper bound under 60%
    assert "3 of 4 variants pass" in out


def test_thresholds_met_exit_0(reports, capsys):
    # the limits hold for the upper bounds (40 items: magnitude@0.3's 10.3% flips reach 26.3%)
    code = main(["gate", str(reports / "mild"), "--max-flip-rate", "0.3", "--max-srs-increase", "0.15",
                 "--max-mcnemar-q", "0.05", "--min-accuracy", "0.6", "--max-accuracy-drop", "0.07"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 of 2 variants pass" in out


def test_only_given_thresholds_are_checked(reports, capsys):
    # the planted variant breaks every bias threshold, but only accuracy on disambiguated-heavy data is asked
    assert main(["gate", "planted", "--reports", str(reports), "--min-accuracy", "0.5"]) == 0
    assert "FAIL" not in capsys.readouterr().out
    assert main(["gate", "planted", "--reports", str(reports), "--max-accuracy-drop", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "accuracy drop +24.4 pts (95% CI upper bound +25.0 pts) vs max-accuracy-drop +10.0 pts" in out


def test_significance_threshold(reports, capsys):
    assert main(["gate", "planted", "--reports", str(reports), "--max-shift-q", "0.05"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {PLANTED_HIGH}" in out and "FAIL magnitude@0.5" in out
    assert "PASS magnitude@0.3" in out  # 2 items moved (4 pairs): item-level q = 0.86, not significant
    # the former flag name still works
    assert main(["gate", "planted", "--reports", str(reports), "--max-mcnemar-q", "0.05"]) == 1
    capsys.readouterr()


def test_abstention_loss_threshold(reports, capsys):
    assert main(["gate", "planted", "--reports", str(reports), "--max-unknown-drop", "0.3"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {PLANTED_HIGH}" in out and "unknown-rate drop (abstention loss) +48.8 pts" in out
    assert "PASS magnitude@0.5" in out  # -25 pts


def test_invalid_reference_exits_3_unless_accepted(tmp_path, capsys):
    build_run(tmp_path, "position", position_driven_dense=True, seeds=(0, 1, 2))
    junit = tmp_path / "gate.xml"
    code = main(["gate", "position", "--reports", str(tmp_path), "--max-flip-rate", "1", "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == EXIT_INVALID_REFERENCE == 3
    assert "FAIL invalid dense reference: the dense reference answers by position" in out
    assert "verdicts INCONCLUSIVE: exit 3" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    case = next(c for c in suite.findall("testcase") if c.get("name") == "dense reference validity")
    assert case.find("failure").get("type") == "InvalidReference" and suite.get("failures") == "1"
    assert main(["gate", "position", "--reports", str(tmp_path), "--max-flip-rate", "1",
                 "--accept-invalid-reference", "--junit", str(junit)]) == 0
    assert "ACCEPTED invalid dense reference" in capsys.readouterr().out
    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "dense reference validity")
    assert case.find("failure") is None and "Accepted by --accept-invalid-reference" in case.find("system-out").text


def test_junit_xml(reports, tmp_path, capsys):
    junit = tmp_path / "ci" / "gate.xml"
    assert main(["gate", "planted", "--reports", str(reports), "--max-flip-rate", "0.2", "--junit", str(junit)]) == 1
    capsys.readouterr()
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    variants = {f"{v} [torch]" for v in ("magnitude@0.3", "magnitude@0.5", PLANTED_HIGH, "rtn@4")}
    assert set(cases) == variants | {"dense reference validity"}
    # magnitude@0.3 (10.3%, upper bound 26.3%) fails too: a gate judges what the interval shows
    assert suite.get("tests") == "5" and suite.get("failures") == "3"
    failure = cases[f"{PLANTED_HIGH} [torch]"].find("failure")
    assert "max-flip-rate 20.0%" in failure.get("message") and "95% CI upper bound" in failure.get("message")
    assert cases["rtn@4 [torch]"].find("failure") is None
    assert cases["dense reference validity"].find("failure") is None  # the planted dense model reads the content
    assert cases[f"{PLANTED_HIGH} [torch]"].find("system-out").text.startswith("verdict HIGH: ")


def test_thresholds_from_the_run_and_overrides(tmp_path, capsys):
    build_run(tmp_path, "with-defaults", thresholds={"max_flip_rate": 0.2}, variants=("magnitude@0.5",))
    assert main(["gate", "with-defaults", "--reports", str(tmp_path)]) == 1  # 51.3% > 20% from the manifest
    assert main(["gate", "with-defaults", "--reports", str(tmp_path), "--max-flip-rate", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "--max-flip-rate 0.6" in out


def test_bad_input_exit_2(reports, tmp_path, capsys):
    assert main(["gate", str(tmp_path / "missing"), "--max-flip-rate", "0.1"]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["gate", str(tmp_path / "empty"), "--max-flip-rate", "0.1"]) == 2
    assert "not a run directory (no manifest.json)" in capsys.readouterr().err
    assert main(["gate", "planted", "--reports", str(reports)]) == 2
    assert "no thresholds given" in capsys.readouterr().err
    assert main(["gate", "planted", "--reports", str(reports), "--max-flip-rate", "-1"]) == 2
    assert "--max-flip-rate: must be >= 0" in capsys.readouterr().err
    dense_only = build_run(tmp_path, "dense-only", variants=())
    assert main(["gate", str(dense_only), "--max-flip-rate", "0.1"]) == 2
    assert "no compressed variant" in capsys.readouterr().err


def test_study_file_sets_defaults(reports, tmp_path, capsys):
    study = tmp_path / "study.toml"
    study.write_text('name = "gate-test"\n[compression]\nvariants = ["magnitude@0.5"]\n'
                     "[thresholds]\nmax_flip_rate = 0.2\n")
    assert main(["gate", "planted", "--reports", str(reports), "--study", str(study)]) == 1
    assert "vs max-flip-rate 20.0%" in capsys.readouterr().out
    # the command line wins over the study
    assert main(["gate", "planted", "--reports", str(reports), "--study", str(study), "--max-flip-rate", "1"]) == 0
    capsys.readouterr()
    assert main(["gate", "planted", "--reports", str(reports), "--study", str(tmp_path / "none.toml")]) == 2
    assert "no such study file" in capsys.readouterr().err
