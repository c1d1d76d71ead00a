"""Progress a log can read (issue #31): unit lines and a heartbeat with finished/total and the time left, plain
text only. Unit level with a fake clock; end to end, a tiny study run with stdout captured (not a terminal)."""
from __future__ import annotations

import io
import re

import pytest

from auditor.cli import main
from auditor.core.errors import AuditorError
from auditor.core.progress import HEARTBEAT_ENV, UnitProgress, heartbeat_interval, start_unit_progress
from tests.study import conftest as study_fixtures

small_study, tiny_model_dir = study_fixtures.small_study, study_fixtures.tiny_model_dir  # the study tests' fixtures


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unit_lines_and_the_estimate_from_the_units_this_process_finished():
    out, clock = io.StringIO(), Clock()
    progress = UnitProgress(total=4, done=1, stream=out, interval_s=0, clock=clock)  # one unit finished earlier
    results = [("a", None), ("b", "llama.cpp cannot convert it"), ("c", None)]
    seen = []
    for result in progress.follow(iter(results), ["a", "b", "c"], label=lambda r: r[0], error=lambda r: r[1]):
        clock.now += 30.0  # each unit takes 30 s, then the caller commits it
        seen.append(result)
        if result[0] == "a":
            progress.heartbeat()  # before "a" counts as finished: the caller has not asked for the next
    progress.heartbeat()
    lines = out.getvalue().splitlines()
    assert lines == [
        "progress: unit a started (1/4 finished)",
        "progress: 1/4 units finished, 0:00:30 elapsed, time left unknown until a unit finishes",
        "progress: unit a finished in 0:00:30 (2/4 finished)",
        "progress: unit b started (2/4 finished)",
        "progress: unit b failed after 0:00:30: llama.cpp cannot convert it",
        "progress: unit c started (2/4 finished)",
        "progress: unit c finished in 0:00:30 (3/4 finished)",
        # 90 s for the 2 units finished here: 45 s per unit, 1 left
        "progress: 3/4 units finished, 0:01:30 elapsed, about 0:00:45 left",
    ]
    # the last unit has run 20 s of its expected 45: 25 s left, not 55 (elapsed over units finished) ...
    clock.now += 20.0
    progress.heartbeat()
    # ... and once it has run longer than a mean unit the estimate stays at nothing more to wait for, not growing
    clock.now += 60.0
    progress.heartbeat()
    assert out.getvalue().splitlines()[-2:] == [
        "progress: 3/4 units finished, 0:01:50 elapsed, about 0:00:25 left",
        "progress: 3/4 units finished, 0:02:50 elapsed, about 0:00:00 left",
    ]


def test_without_labels_only_finished_units_are_said():
    out = io.StringIO()
    progress = UnitProgress(total=2, done=0, stream=out, interval_s=0, clock=Clock())
    list(progress.follow(iter(["x", "y"]), None, label=str, error=lambda r: None))
    assert [line.split(" in ")[0] for line in out.getvalue().splitlines()] == ["progress: unit x finished",
                                                                             "progress: unit y finished"]


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_bad_heartbeat_setting_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(HEARTBEAT_ENV, value)
    with pytest.raises(AuditorError, match=rf"{HEARTBEAT_ENV}='{re.escape(value)}': must be a number of seconds"):
        heartbeat_interval()


def test_the_heartbeat_thread_beats_until_closed(monkeypatch):
    import time

    out = io.StringIO()
    monkeypatch.setenv(HEARTBEAT_ENV, "0.02")
    progress = start_unit_progress(3, 1, stream=out)
    deadline = time.monotonic() + 30
    while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.close()
    beats = out.getvalue().count("\n")
    assert beats >= 2 and out.getvalue().startswith("progress: 1/3 units finished, ")
    time.sleep(0.1)
    assert out.getvalue().count("\n") == beats  # closed: no line after


def test_the_heartbeat_says_where_the_running_units_loop_is(monkeypatch):
    """Before any unit finishes the run's time left is unknown, but the running unit's loop (prompts scored,
    windows) is counted even off a terminal: the heartbeat says done/total and the time left in it."""
    from auditor.core import progress as progress_module

    monkeypatch.delenv("AUDITOR_PROGRESS", raising=False)
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    out = io.StringIO()
    reporter = UnitProgress(total=2, done=0, stream=out, interval_s=0, clock=Clock())
    with progress_module.progress(1200, "prompts") as bar:
        reporter.heartbeat()  # nothing counted yet: no time left to say
        bar.update(300)
        reporter.heartbeat()
    reporter.heartbeat()  # the loop has ended
    beats = out.getvalue().splitlines()
    assert beats[0].endswith("time left unknown until a unit finishes; the running unit: 0/1,200 prompts")
    assert re.search(r"time left unknown until a unit finishes; the running unit: 300/1,200 prompts, "
                     r"about \d+:\d\d:\d\d left in it$", beats[1]), beats[1]
    assert beats[2].endswith("time left unknown until a unit finishes")


def test_a_study_run_into_a_log_says_each_unit_and_beats(small_study, capsys, monkeypatch):
    monkeypatch.setenv(HEARTBEAT_ENV, "0.05")
    study = small_study("logged", variants=("magnitude@0.5",), n_items=4, seeds=(0,))
    assert main(["run", str(study)]) == 0
    captured = capsys.readouterr()  # stdout captured: not a terminal
    text = captured.out + captured.err
    assert "\x1b" not in text and "\r" not in text
    lines = [line for line in captured.err.splitlines() if line.startswith("progress: ")]
    units = ("score:dense-d6a98598__torch", "score:magnitude_0.5-18bb4f08__torch")
    for unit in units:
        assert any(re.fullmatch(rf"progress: unit {re.escape(unit)} started \(\d/2 finished\)", line)
                   for line in lines), lines
        assert any(re.fullmatch(rf"progress: unit {re.escape(unit)} finished in \d+:\d\d:\d\d \(\d/2 finished\)",
                                line) for line in lines), lines
    beats = [line for line in lines if re.fullmatch(r"progress: \d/2 units finished, \d+:\d\d:\d\d elapsed, .+",
                                                    line)]
    assert beats, lines
    assert any("left" in line for line in beats)
    assert lines.index(f"progress: unit {units[0]} started (0/2 finished)") < next(
        i for i, line in enumerate(lines) if line.startswith(f"progress: unit {units[1]} started"))


def test_an_only_run_counts_the_units_it_was_asked_for(small_study, capsys, monkeypatch):
    """`--only SPEC` runs a few of the study's units: the log counts those, so its time left is this run's."""
    monkeypatch.setenv(HEARTBEAT_ENV, "0.05")
    study = small_study("only", variants=("magnitude@0.5", "magnitude@0.3"), n_items=4, seeds=(0,))
    assert main(["run", str(study), "--only", "magnitude@0.5"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress: ")]
    assert "progress: unit score:magnitude_0.5-18bb4f08__torch started (0/1 finished)" in lines, lines
    assert not any("/3 " in line or "/3)" in line for line in lines), lines
