"""The measurement unit ([measure] in a study): planned after the scoring units, committed like them, skipped when
finished, redone when killed or damaged; its files are the ones `auditor measure --out RUN` writes, and the decision
rows carry a measured deployable artifact for every variant or say "simulated" (RTN)."""
from __future__ import annotations

import json
import logging
import math

import pytest

from auditor.cli import main
from auditor.core.errors import SpecError
from auditor.data.rundir import ARTIFACTS_DIR, MEASURE, MEASURE_UNIT, SCORE, run_status, sealed_json_problem
from auditor.study import runner
from auditor.study.spec import load_study
from auditor.view.decision import run_decision
from auditor.view.run import RunView
from tests.study.conftest import write_study

#: Fast settings: one round, torch artifacts only, 2 decode tokens, no BBQ latency.
MEASURE_TABLE = {"repeats": 1, "formats": ["safetensors"], "new_tokens": 2, "bbq_items": 0}


class Crash(BaseException):
    """A process death in the runner (a BaseException, as a SIGKILL is invisible to `except Exception`)."""


def _study(small_study, name: str, variants=("magnitude@0.5", "rtn@4")):
    return small_study(name, variants=variants, n_items=6, seeds=(0,), measure=MEASURE_TABLE)


@pytest.mark.parametrize("table, message", [
    ({"repeat": 2}, "measure.repeat: unknown key; valid keys here: bbq_items, enabled, formats, new_tokens, "
                    "repeats, threads"),
    ({"repeats": 0}, "measure.repeats: must be positive, got 0"),
    ({"formats": ["onnx"]}, "measure.formats: unknown format 'onnx'; valid: safetensors, gguf, sparse"),
    ({"formats": []}, "measure.formats: needs distinct formats"),
    ({"new_tokens": "16"}, "measure.new_tokens: expected an integer, got str '16'"),
    ({"enabled": 1}, "measure.enabled: expected true or false, got int 1"),
    ({"new-tokens": 16}, "measure.new-tokens: unknown key (spell it new_tokens)"),
])
def test_bad_measure_table_names_file_and_key(tmp_path, capsys, table, message):
    study = write_study(tmp_path / "bad.toml", {"name": "bad"}, measure=table)
    with pytest.raises(SpecError) as exc:
        load_study(study)
    assert str(exc.value).startswith(f"{study}: {message}")
    assert main(["run", str(study)]) == 2  # one line, exit 2, before any work
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_measure_table_kept_in_manifest_but_not_in_the_hash(tmp_path):
    plain = load_study(write_study(tmp_path / "a.toml", {"name": "a"}))
    measured = load_study(write_study(tmp_path / "b.toml", {"name": "a"}, measure={"repeats": 2}))
    assert plain.measure is None and measured.measure.repeats == 2 and measured.measure.enabled
    assert plain.hash == measured.hash  # adding [measure] to a study keeps its finished units
    assert measured.to_json()["measure"] == {"enabled": True, "repeats": 2, "formats": ["safetensors", "gguf", "sparse"],
                                             "new_tokens": 16, "threads": None, "bbq_items": 8}


def test_unit_planned_last_and_selected_by_only(small_study):
    study = load_study(_study(small_study, "plan"))
    plan = runner.plan_study(study)[0]
    assert plan.units[-1].kind == MEASURE and plan.units[-1].id == f"{MEASURE}:{MEASURE_UNIT}"
    assert [u.kind for u in plan.units[:-1]] == [SCORE] * 3
    assert plan.context.measured == ("dense", "magnitude@0.5")  # rtn@4 has no deployable file: not measured
    assert plan.context.measure.repeats == 1 and plan.context.measure.formats == ("safetensors",)
    assert [u.kind for u in runner.select_units(plan, [MEASURE_UNIT])] == [MEASURE]
    assert MEASURE not in {u.kind for u in runner.select_units(plan, ["rtn@4"])}
    disabled = load_study(small_study("off", measure={**MEASURE_TABLE, "enabled": False}))
    assert MEASURE not in {u.kind for u in runner.plan_study(disabled)[0].units}


def test_measured_committed_skipped_then_redone_when_damaged(small_study, tmp_path, capsys, caplog):
    study = _study(small_study, "measured")
    run_dir = tmp_path / "reports" / "measured"
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    status = run_status(run_dir)
    assert status.is_complete and status.units[-1].id == f"{MEASURE}:{MEASURE_UNIT}"
    doc = json.loads((run_dir / "measurements.json").read_text())
    assert not sealed_json_problem(run_dir / "measurements.json", "measurements.json")
    assert {r["variant"] for r in doc["measurements"]} == {"dense", "magnitude@0.5"}  # rtn@4 is simulated
    assert doc["settings"]["repeats"] == 1 and doc["settings"]["new_tokens"] == 2
    commit = json.loads((run_dir / "commits" / f"{MEASURE}__{MEASURE_UNIT}.json").read_text())
    assert set(commit["files"]) == {"measurements.json", *(f"measurements/{p.name}" for p in
                                                          (run_dir / "measurements").glob("*.json"))}
    assert len(commit["files"]) == 3  # measurements.json + one torch row per measured variant
    assert not (run_dir / ARTIFACTS_DIR).exists()  # the measurement's scratch folder is gone

    # Every variant has measured figures of its deployable artifact, or is simulated (RTN: float32 weights).
    decision = run_decision(RunView.load(run_dir, n_boot=20))
    rows = decision.table.set_index("variant")
    for variant in ("dense", "magnitude@0.5"):
        assert rows.loc[variant, "size_bytes"] > 0 and rows.loc[variant, "decode_tokens_per_s"] > 0
        assert rows.loc[variant, "artifact"] == "safetensors float32 (torch)" and rows.loc[variant, "simulated"] == ""
    assert rows.loc["rtn@4", "simulated"] == "gguf-q4_k_m" and math.isnan(rows.loc["rtn@4", "size_bytes"])
    assert rows.loc["rtn@4", "artifact"] == "simulated: nearest gguf-q4_k_m"
    stored = {r["variant"]: r["size_bytes"] for r in doc["measurements"]}
    assert rows.loc["magnitude@0.5", "size_bytes"] == stored["magnitude@0.5"]
    assert main(["decide", str(run_dir), "--max-size", "1TB", "--n-boot", "20"]) in (0, 1)
    out = capsys.readouterr().out
    assert "size simulated (no deployable file; nearest gguf-q4_k_m)" in out  # never passes on figures it lacks

    # A rerun skips it, files untouched.
    before = (run_dir / "measurements.json").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="auditor.study.runner")
    assert main(["run", str(study)]) == 0
    assert f"unit {MEASURE}:{MEASURE_UNIT}: finished earlier, skipped" in caplog.text
    assert (run_dir / "measurements.json").stat().st_mtime_ns == before

    # A damaged measurement file: status names the unit, the next run moves it aside and measures again.
    damaged = sorted((run_dir / "measurements").glob("*.json"))[0]
    damaged.write_text(damaged.read_text().replace('"size_bytes": ', '"size_bytes": 1', 1))
    assert main(["status", str(run_dir)]) == 0
    assert f"damaged   {MEASURE}:{MEASURE_UNIT}" in capsys.readouterr().out
    caplog.clear()
    assert main(["run", str(study)]) == 0
    assert caplog.text.count("finished earlier, skipped") == 3  # the scoring units
    assert run_status(run_dir).is_complete
    assert len(list((run_dir / "superseded").rglob(damaged.name))) == 1  # nothing lost


def test_killed_before_its_commit_only_the_measurement_is_redone(small_study, tmp_path, capsys, caplog, monkeypatch):
    study = _study(small_study, "killed", variants=("rtn@4",))
    run_dir = tmp_path / "reports" / "killed"
    original = runner._write_commit

    def crash_on_measure(run, unit, *args, **kwargs):
        if unit.kind == MEASURE:
            raise Crash()  # measurements.json written, its commit record not: a process killed in between
        return original(run, unit, *args, **kwargs)

    monkeypatch.setattr(runner, "_write_commit", crash_on_measure)
    with pytest.raises(Crash):
        main(["run", str(study)])
    monkeypatch.setattr(runner, "_write_commit", original)
    assert (run_dir / "measurements.json").is_file()
    status = run_status(run_dir)
    assert [u.id for u in status.missing] == [f"{MEASURE}:{MEASURE_UNIT}"]
    assert "without a commit record" in status.missing[0].problem
    capsys.readouterr()

    caplog.set_level(logging.INFO, logger="auditor.study.runner")
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    assert caplog.text.count("finished earlier, skipped") == 2  # dense and rtn@4 scoring: kept
    assert f"unit {MEASURE}:{MEASURE_UNIT}: written" in caplog.text
    assert run_status(run_dir).is_complete
    assert len(list((run_dir / "superseded").rglob("measurements.json"))) == 1


def test_plan_lists_the_measurement_unit_and_its_estimate(small_study, tmp_path, capsys):
    study = _study(small_study, "planned")
    assert main(["run", str(study), "--plan", "--plan-groups", "2"]) == 0
    out = capsys.readouterr().out
    rows = [x.split() for x in out.splitlines() if x.startswith(MEASURE_UNIT + " ")]  # memory plan, estimate
    estimate = next(r for r in rows if r[1] == "measure")  # unit, kind, tokens, estimated seconds
    assert int(estimate[2].replace(",", "")) > 0 and float(estimate[3]) > 0
    assert "measurement: " in out and "1 rounds of one fresh worker per timed artifact" in out
    assert main(["run", str(study), "--plan", "--plan-groups", "2", "--only", MEASURE_UNIT]) == 0
    units = [x.split()[0] for x in capsys.readouterr().out.splitlines() if x.startswith(("dense__", MEASURE_UNIT))]
    assert MEASURE_UNIT in units and not any(u.startswith("dense__") for u in units)
    assert not (tmp_path / "reports").exists()
