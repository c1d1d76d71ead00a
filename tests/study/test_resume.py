"""Acceptance: a study killed with SIGKILL in the middle of a unit resumes to the records of an uninterrupted run."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from auditor.cli import EXIT_TERMINATED, main
from auditor.commands.gate import EXIT_INCOMPLETE
from auditor.data.rundir import merged_records
from auditor.study.units import SLOW_UNIT_ENV

VARIANTS = ("magnitude@0.5", "random@0.5")  # 3 variants x 2 shards = 6 units


def _kill_during_third_unit(study, run_dir, sig: int = signal.SIGKILL) -> list[str]:
    """Run `auditor run` in a subprocess; send `sig` while the third unit sleeps before being written."""
    env = {**os.environ, SLOW_UNIT_ENV: "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "auditor.cli", "-v", "run", str(study)], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stderr:
            lines.append(line)
            written = sum(": written (" in x for x in lines)
            if written == 2 and "test hook sleeping" in line:
                proc.send_signal(sig)
                break
            assert time.monotonic() < deadline, "the study never reached its third unit"
        if sig != signal.SIGKILL:
            lines += proc.stderr.read().splitlines(keepends=True)  # what it says while it stops
            proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    expected = EXIT_TERMINATED if sig == signal.SIGTERM else -sig
    assert proc.returncode == expected, "".join(lines[-20:])
    return lines


def test_sigterm_mid_unit_stops_cleanly_as_interrupted(small_study, capsys, tmp_path):
    """A cancelled CI job sends SIGTERM: the run records "interrupted", says so in one line and exits 143."""
    study = small_study("terminated", variants=VARIANTS, shards=2)
    run_dir = tmp_path / "reports" / "terminated"
    lines = _kill_during_third_unit(study, run_dir, signal.SIGTERM)
    assert lines[-1] == "auditor: terminated (SIGTERM)\n" and not any("Traceback" in x for x in lines)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "interrupted" and state["n_finished"] == 2
    assert len(list((run_dir / "records").glob("*.parquet"))) == 2
    assert main(["status", str(run_dir)]) == 0
    assert "units: 2/6 finished" in capsys.readouterr().out


def test_sigkill_mid_unit_then_resume_equals_uninterrupted_run(small_study, capsys, caplog, tmp_path):
    study = small_study("killed", variants=VARIANTS, shards=2)
    run_dir = tmp_path / "reports" / "killed"
    lines = _kill_during_third_unit(study, run_dir)

    # Killed mid-unit: two units finished, the third computed but never written, nothing looks complete.
    in_progress = [x for x in lines if "test hook sleeping" in x][-1].split("unit score:")[1].split(":")[0]
    assert len(list((run_dir / "records").glob("*.parquet"))) == 2
    assert not (run_dir / "records" / f"{in_progress}.parquet").exists()
    assert not (run_dir / "report.md").exists()
    assert json.loads((run_dir / "state.json").read_text())["state"] == "running"
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert "state: interrupted" in status and "units: 2/6 finished" in status
    finished_before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "records").glob("*.parquet")}
    # A killed run fails the gate, whatever the thresholds: 4 planned units were never scored.
    junit = tmp_path / "gate.xml"
    # (The tiny random model answers by position: its reference's validity finding is accepted here.)
    assert main(["gate", str(run_dir), "--max-flip-rate", "1", "--accept-invalid-reference",
                 "--junit", str(junit)]) == EXIT_INCOMPLETE
    assert "incomplete: 2 of 6 units finished (interrupted)" in capsys.readouterr().out
    assert 'failures="4"' in junit.read_text() and junit.read_text().count('type="IncompleteRun"') == 4

    # Resume: the two finished units are kept as they are, the other four are computed.
    caplog.set_level(logging.INFO, logger="auditor.study.runner")
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    assert caplog.text.count("finished earlier, skipped") == 2
    for name, mtime in finished_before.items():
        assert (run_dir / "records" / name).stat().st_mtime_ns == mtime
    assert json.loads((run_dir / "state.json").read_text())["state"] == "complete"

    # An uninterrupted run of the same study elsewhere: same rows, same values.
    reference_study = small_study("reference", variants=VARIANTS, shards=2)
    assert main(["run", str(reference_study)]) == 0, capsys.readouterr().err
    resumed, reference = merged_records(run_dir), merged_records(tmp_path / "reports" / "reference")
    assert len(resumed) == 3 * 2 * 12
    pd.testing.assert_frame_equal(resumed, reference, check_exact=True)
