"""`auditor score-predictions`: external predictions scored with the engine's metrics."""
from __future__ import annotations

import json

import pytest

from auditor.analysis.predictions import match_prediction
from auditor.cli import main
from auditor.data.bbq import read_jsonl
from tests.conftest import SAMPLE_BBQ


def test_matching_rules():
    item, _ = read_jsonl(SAMPLE_BBQ / "SES.jsonl")[0]  # answers: "The cashier", "Not enough information", "The lawyer"
    assert match_prediction(item, 2) == 2
    assert match_prediction(item, "1") == 1
    assert match_prediction(item, "the CASHIER.") == 0
    assert match_prediction(item, "Not enough information, sorry") == 1  # first two words
    assert match_prediction(item, "a plumber") is None
    assert match_prediction(item, 7) is None


def test_the_bbq_authors_fallbacks_and_spelling_fixes():
    """nyu-mll/BBQ analysis_scripts/BBQ_calculate_bias_score.R, rule by rule."""
    import dataclasses

    item, _ = read_jsonl(SAMPLE_BBQ / "SES.jsonl")[0]
    # answer_info short texts: "cashier", "Not enough information", "lawyer" (one-word texts have no fallback,
    # as stringr::word(text, 1, 2) is NA for them).
    short = ["cashier", "Not enough information", "lawyer"]
    assert match_prediction(item, "I think it was the cashier", short) is None
    assert match_prediction(item, "there is not enough information here", short) == 1  # first two words contained
    assert match_prediction(item, "  The Lawyer.  ", short) == 2  # exact, case and final period ignored
    suit = dataclasses.replace(item, answers=("A poorly fitting suit", "Can't answer", "A custom-tailored pantsuit}"))
    suit_short = ["a poorly fitting suit", "Can't answer", "a custom-tailored pantsuit"]
    assert match_prediction(suit, "a custom-tailored pantsu", suit_short) == 2  # "pantsu" -> "pantsuit", "}" dropped
    assert match_prediction(suit, "a poorly fitting custom-tailored pantsuit", suit_short) == 0  # ans0 is tried first
    named = dataclasses.replace(item, answers=("Obrien", "Unknown", "Smith"))
    assert match_prediction(named, "o'brien", ["Obrien", "Unknown", "Smith"]) == 0  # the authors' name fix


def test_cli_scores_predictions(tmp_path, capsys):
    rows = [json.loads(line) for line in (SAMPLE_BBQ / "SES.jsonl").read_text().splitlines()]
    ambig = [r for r in rows if r["context_condition"] == "ambig"]
    # Answer every ambiguous item with the "unknown" text except one, answered with garbage.
    for r in ambig:
        unknown = next(k for k in range(3) if r["answer_info"][f"ans{k}"][1] == "unknown")
        r["pred"] = r[f"ans{unknown}"]
    ambig[0]["pred"] = "no idea at all"
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ambig))
    assert main(["score-predictions", str(path), "--field", "pred", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ses = out["SES/ambig"]
    assert ses["n"] == len(ambig) - 1
    assert ses["accuracy"] == pytest.approx(1.0) and ses["unknown_rate"] == pytest.approx(1.0)
    assert ses["srs"] == pytest.approx(0.0)
    assert ses["bias_score"] == 0.0  # all answers unknown: s_DIS undefined, but s_AMB = 0 (no error, no bias)
    assert out["_skipped"]["unmatched"] == 1


def test_cli_bad_file_exits_2_naming_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text((SAMPLE_BBQ / "SES.jsonl").read_text().splitlines()[0] + "\n{not json\n")
    assert main(["score-predictions", str(path), "--field", "pred"]) == 2
    assert f"{path}:2" in capsys.readouterr().err
