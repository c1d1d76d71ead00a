"""The fault catalogue: every way a run can be damaged or stopped, and what the tool must then say and do.

A gate never passes what was not scored; nothing is lost (files that no longer count
move to superseded/) and nothing is half-counted (the view reads only units whose
commit record verifies). Stopped runs and crashes are simulated in-process: a
`Crash` (a BaseException, so the runner's `except Exception` does not see it, as it
would not see a SIGKILL) leaves state.json at "running" with no process holding the
lock, exactly what a killed process leaves. tests/study/test_resume.py does the
same with a real SIGKILL in a subprocess.
"""
from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from auditor.cli import EXIT_INTERRUPTED, main
from auditor.commands.gate import EXIT_INCOMPLETE
from auditor.data.records import read_records
from auditor.data.rundir import merged_records
from auditor.study import runner
from auditor.study.units import UnitWorker
from auditor.view.run import RunView

VARIANTS = ("magnitude@0.5",)  # dense + magnitude: 2 units


class Crash(BaseException):
    """A process death in the middle of the runner (not an Exception: nothing in the runner handles it)."""


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _gate(capsys, run_dir: Path, *extra) -> tuple[int, str]:
    # The tiny random model answers by position, so its dense reference is not valid (exit 3); these
    # tests are about completeness, which is checked first, so the validity finding is accepted here.
    code, out, err = _cli(capsys, "gate", run_dir, "--max-flip-rate", "0.9", "--accept-invalid-reference", *extra)
    return code, out + err


def _junit_failures(path: Path) -> dict[str, str]:
    suite = ET.parse(path).getroot().find("testsuite")
    return {case.get("name"): case.find("failure").get("type") for case in suite.iter("testcase")
            if case.find("failure") is not None}


def _magnitude_records(run_dir: Path) -> Path:
    return next((run_dir / "records").glob("magnitude*.parquet"))


def test_truncated_records_are_named_by_status_failed_by_gate_and_recomputed_by_run(small_study, capsys, tmp_path,
                                                                                      caplog):
    study = small_study("damaged", variants=VARIANTS)
    run_dir = tmp_path / "reports" / "damaged"
    assert _cli(capsys, "run", study)[0] == 0
    uninterrupted = merged_records(run_dir)
    damaged = _magnitude_records(run_dir)
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[: size // 2])  # what a crash before fsync can leave

    code, out, _ = _cli(capsys, "status", run_dir)
    assert code == 0
    assert "units: 1/2 finished" in out and "state: incomplete" in out
    line = next(x for x in out.splitlines() if x.lstrip().startswith("damaged"))
    assert f"records/{damaged.name} has {size // 2} bytes, committed with {size}" in line

    # The gate fails it as incomplete, names the unit, and JUnit has a failure for it.
    junit = tmp_path / "gate.xml"
    code, out = _gate(capsys, run_dir, "--junit", junit)
    assert code == EXIT_INCOMPLETE, out
    assert "incomplete: 1 of 2 units finished" in out and f"MISSING score:{damaged.stem} (damaged" in out
    failures = _junit_failures(junit)
    assert failures[f"score:{damaged.stem}"] == "IncompleteRun"
    assert failures.get("magnitude@0.5 [torch]") in (None, "ThresholdExceeded")  # unscored: n/a never passes

    # The report opens with it, and reads only the verified unit (the damaged file is never parsed).
    assert _cli(capsys, "report", run_dir)[0] == 0
    report = (run_dir / "report.md").read_text().split("\n")
    first_block = next(x for x in report[1:] if x.strip())
    assert first_block.startswith("> **incomplete: 1 of 2 units finished")
    assert set(RunView.load(run_dir).records["variant"]) == {"dense"}

    # `auditor run` recomputes it, keeps the damaged file in superseded/, and the records are as before.
    caplog.set_level(logging.WARNING, logger="auditor.study.runner")
    assert _cli(capsys, "run", study)[0] == 0
    assert f"unit score:{damaged.stem} is damaged" in caplog.text
    kept = list((run_dir / "superseded").rglob(damaged.name))
    assert len(kept) == 1 and kept[0].stat().st_size == size // 2
    pd.testing.assert_frame_equal(merged_records(run_dir), uninterrupted, check_exact=True)
    code, out = _gate(capsys, run_dir)
    assert code in (0, 1) and "complete: 2 of 2 units finished and verified" in out


def test_crash_between_rename_and_commit_record(small_study, capsys, tmp_path, monkeypatch):
    """Records renamed into place, process dead before the commit record: not counted, not lost, redone."""
    study = small_study("crash", variants=VARIANTS)
    run_dir = tmp_path / "reports" / "crash"
    original = runner._write_commit
    calls = {"n": 0}

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "_write_commit", crash_on_second)
    with pytest.raises(Crash):
        main(["run", str(study)])
    monkeypatch.setattr(runner, "_write_commit", original)
    capsys.readouterr()
    orphan = _magnitude_records(run_dir)  # its records file is in place, complete, but uncommitted
    assert len(read_records([orphan])) == 2 * 12

    code, out, _ = _cli(capsys, "status", run_dir)
    assert "state: interrupted" in out and "units: 1/2 finished" in out
    assert "without a commit record" in next(x for x in out.splitlines() if orphan.stem in x)
    assert set(RunView.load(run_dir).records["variant"]) == {"dense"}  # nothing half-counted
    assert _gate(capsys, run_dir)[0] == EXIT_INCOMPLETE

    assert _cli(capsys, "run", study)[0] == 0
    assert len(list((run_dir / "superseded").rglob(orphan.name))) == 1  # nothing lost
    assert _cli(capsys, "run", small_study("reference", variants=VARIANTS))[0] == 0
    pd.testing.assert_frame_equal(merged_records(run_dir), merged_records(tmp_path / "reports" / "reference"),
                                  check_exact=True)


def test_ctrl_c_gives_one_line_exit_130_and_state_interrupted(small_study, capsys, tmp_path, monkeypatch):
    study = small_study("ctrlc", variants=VARIANTS)
    run_dir = tmp_path / "reports" / "ctrlc"
    original = UnitWorker.execute

    def interrupt_second(self, unit):
        if unit.variant != "dense":
            raise KeyboardInterrupt
        return original(self, unit)

    monkeypatch.setattr(UnitWorker, "execute", interrupt_second)
    code, out, err = _cli(capsys, "run", study)
    assert code == EXIT_INTERRUPTED
    # One line (a model loader's progress bar may come before it), no traceback.
    assert err.splitlines()[-1] == "auditor: interrupted" and "Traceback" not in err
    assert json.loads((run_dir / "state.json").read_text())["state"] == "interrupted"
    code, out, _ = _cli(capsys, "status", run_dir)
    assert "state: interrupted" in out and "units: 1/2 finished" in out
    code, out = _gate(capsys, run_dir)
    assert code == EXIT_INCOMPLETE and "incomplete: 1 of 2 units finished (interrupted)" in out
    # --allow-incomplete judges what was scored, and cannot waive the planned variant that never was (issue 32).
    code, out = _gate(capsys, run_dir, "--allow-incomplete")
    assert code == EXIT_INCOMPLETE and "NOT JUDGED magnitude@0.5 [torch]: no finished unit (pending)" in out


def test_disk_full_while_writing_the_commit_record(small_study, capsys, tmp_path, monkeypatch):
    """ENOSPC on the last write of a unit: one line, exit 2, the unit not finished, the rerun completes it."""
    import errno

    study = small_study("fullcommit", variants=VARIANTS)
    run_dir = tmp_path / "reports" / "fullcommit"
    original = runner.write_json

    def full_disk(obj, path):
        if Path(path).parent.name == "commits" and "magnitude" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(obj, path)

    monkeypatch.setattr(runner, "write_json", full_disk)
    code, _, err = _cli(capsys, "run", study)
    assert code == 2 and "Traceback" not in err
    last = err.splitlines()[-1]  # one line (a model loader's progress bar may come before it)
    assert last.startswith("auditor: error: ") and "error" not in "".join(err.splitlines()[:-1]).lower()
    assert "/commits/score__magnitude" in last and "cannot write (No space left on device)" in last
    assert "units: 1/2 finished" in _cli(capsys, "status", run_dir)[1]
    assert _gate(capsys, run_dir)[0] == EXIT_INCOMPLETE
    monkeypatch.setattr(runner, "write_json", original)
    assert _cli(capsys, "run", study)[0] == 0
    assert "units: 2/2 finished" in _cli(capsys, "status", run_dir)[1]
