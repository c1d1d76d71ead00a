"""A unit that cannot be built fails alone: the others run, the report and status say why, exit 3."""
from __future__ import annotations

import json

from auditor.cli import main
from auditor.commands.run import INCOMPLETE_EXIT


def test_a_unit_that_cannot_be_built_fails_alone(small_study, capsys, monkeypatch, tmp_path):
    # No llama.cpp converter here: the GGUF variant cannot be built, the torch variants can.
    monkeypatch.setenv("AUDITOR_LLAMA_CONVERTER", str(tmp_path / "no-converter"))
    study = small_study("partial", variants=("magnitude@0.5", "gguf-q8_0"), n_items=6, seeds=(0,))
    assert main(["run", str(study)]) == INCOMPLETE_EXIT
    err = capsys.readouterr().err
    assert "run incomplete: 1 unit(s) failed" in err and "auditor setup" in err
    run_dir = tmp_path / "reports" / "partial"
    [failed] = list((run_dir / "failed").glob("*.json"))
    doc = json.loads(failed.read_text())
    assert doc["variant"] == "gguf-q8_0" and doc["backend"] == "llama.cpp" and "auditor setup" in doc["reason"]
    assert {p.stem.split("-")[0] for p in (run_dir / "records").glob("*.parquet")} == {"dense", "magnitude_0.5"}
    report = (run_dir / "report.md").read_text()
    assert "gguf-q8_0 on llama.cpp) FAILED" in report and "the llama.cpp units cannot be built" in report
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "state: incomplete" in out and "failed" in out and "auditor setup" in out
    # The failed unit is tried again by the next run (and fails again the same way); finished ones are kept.
    stamps = {p.name: p.stat().st_mtime_ns for p in (run_dir / "records").glob("*.parquet")}
    assert main(["run", str(study)]) == INCOMPLETE_EXIT
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "records").glob("*.parquet")} == stamps
    assert len(list((run_dir / "failed").glob("*.json"))) == 1


def test_the_score_and_perplexity_units_of_one_variant_fail_separately(small_study, capsys, monkeypatch, tmp_path):
    from tests.conftest import FIXTURE_CORPUS

    monkeypatch.setenv("AUDITOR_LLAMA_CONVERTER", str(tmp_path / "no-converter"))
    study = small_study("both-kinds", variants=("gguf-q8_0",), n_items=4, seeds=(0,),
                        perplexity={"corpus": str(FIXTURE_CORPUS), "max_length": 32, "stride": 32, "max_tokens": 64})
    assert main(["run", str(study)]) == INCOMPLETE_EXIT
    capsys.readouterr()
    run_dir = tmp_path / "reports" / "both-kinds"
    ids = sorted(json.loads(p.read_text())["id"] for p in (run_dir / "failed").glob("*.json"))
    assert [i.split(":")[0] for i in ids] == ["ppl", "score"]
    assert ids[0].split(":")[1] == ids[1].split(":")[1]  # the same unit name, once per kind
    report = (run_dir / "report.md").read_text()
    assert "(pending)" not in report  # both are reported as failed, neither as merely pending
