"""Progress: a bar with items/s and ETA for long loops (rich) on a terminal; plain unit lines and a heartbeat
with the estimated time left, and where the running unit's loop is, for a log (`start_unit_progress`), when
stdout is not a terminal."""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence, TextIO, TypeVar

from auditor.core.errors import AuditorError

T = TypeVar("T")


class _Bar:
    """One loop's count: what the rich bar shows on a terminal, and what a log's heartbeat reads (`loop_text`)."""

    def __init__(self, total: int, unit: str, progress=None, task=None) -> None:
        self.total, self.unit, self.done, self.start = total, unit, 0, time.monotonic()
        self._progress, self._task = progress, task

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._progress is not None:
            self._progress.advance(self._task, n)


#: The loops running now, innermost last (a loop's progress() is entered and left on one thread at a time).
_loops: list[_Bar] = []


def loop_text() -> str | None:
    """The innermost running loop as "done/total unit, h:mm:ss left in it" (None when no loop runs): where a
    unit is, for a heartbeat before any unit has finished."""
    running = _loops[-1:]  # one read: the heartbeat's thread may see the loop end meanwhile
    if not running:
        return None
    bar = running[0]
    text = f"{bar.done:,}/{bar.total:,} {bar.unit}"
    if 0 < bar.done < bar.total:
        rate = bar.done / max(time.monotonic() - bar.start, 1e-9)
        text += f", about {_clock_text((bar.total - bar.done) / rate)} left in it"
    return text


@contextmanager
def _running(bar: _Bar) -> Iterator[_Bar]:
    """`bar` among the running loops while the block runs."""
    _loops.append(bar)
    try:
        yield bar
    finally:
        _loops.remove(bar)


@contextmanager
def progress(total: int, unit: str) -> Iterator[_Bar]:
    """Counts a loop of `total` steps (`loop_text` reads it) and shows `done/total unit, unit/s, ETA` on stderr
    when it is a terminal (or AUDITOR_PROGRESS=1)."""
    show = sys.stderr.isatty() or os.environ.get("AUDITOR_PROGRESS") == "1"
    if not show or total <= 0:
        with _running(_Bar(total, unit)) as bar:
            yield bar
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} {unit}/s" if task.speed else f"? {unit}/s")

    with Progress(TextColumn(f"[bold]{unit}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(unit, total=total)
        with _running(_Bar(total, unit, prog, task)) as bar:
            yield bar


#: Seconds between heartbeat lines of `start_unit_progress` (0 turns them off); default DEFAULT_HEARTBEAT_S.
HEARTBEAT_ENV = "AUDITOR_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 60.0


def heartbeat_interval() -> float:
    """The heartbeat interval from AUDITOR_HEARTBEAT_S (seconds, 0 = off), DEFAULT_HEARTBEAT_S when unset."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return DEFAULT_HEARTBEAT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise AuditorError(f"{HEARTBEAT_ENV}={text!r}: must be a number of seconds >= 0 (0 turns the heartbeat off)")
    return value


def _clock_text(seconds: float) -> str:
    """h:mm:ss (whole seconds), as a log reader expects a duration."""
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class UnitProgress:
    """Plain progress lines for a log: one per unit started and finished, and a heartbeat every `interval_s`
    with finished/total and the estimated time left. No terminal control codes (no "\\r", no escapes): what a
    CI log or `nohup` keeps is readable line by line.

    `done` units were finished before this process started (a resume); the estimate uses only the units this
    process finished: their mean wall time (from the start to the last one finished, over their number) times
    the units left, less the time the running unit has had since (at most one mean), "unknown" until the first
    one finishes. Counting the running unit's time as if it were finished work made the estimate grow with every
    heartbeat: by 51 min a minute on the findings study with 2 of its 104 units finished.
    """

    def __init__(self, total: int, done: int, stream: TextIO | None, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.stream, self.interval_s, self.clock = total, done, stream, interval_s, clock
        self.start = clock()
        self.finished_here = 0
        self.last_finish = self.start  # when this process last finished a unit
        self.unit_start: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _say(self, text: str) -> None:
        with self._lock:
            # sys.stderr looked up now: a rich bar on a terminal stderr swaps in a proxy that prints above it
            stream = self.stream or sys.stderr
            try:
                stream.write(f"progress: {text}\n")
                stream.flush()
            except (OSError, ValueError):  # a closed log must not stop the run (nor print a thread's traceback)
                pass

    def started(self, label: str) -> None:
        self.unit_start[label] = self.clock()
        self._say(f"unit {label} started ({self.done}/{self.total} finished)")

    def finished(self, label: str, error: str | None = None) -> None:
        """A unit came back: finished, or failed with `error` (it stays unfinished: the next run retries it)."""
        took = self.clock() - self.unit_start.pop(label, self.start)
        if error is None:
            self.done += 1
            self.finished_here += 1
            self.last_finish = self.clock()
            self._say(f"unit {label} finished in {_clock_text(took)} ({self.done}/{self.total} finished)")
        else:
            self._say(f"unit {label} failed after {_clock_text(took)}: {' '.join(error.splitlines())}")

    def eta_text(self) -> str:
        left = self.total - self.done
        if left <= 0:
            return "nothing left"
        if not self.finished_here:
            return "time left unknown until a unit finishes"
        per_unit = (self.last_finish - self.start) / self.finished_here
        running = min(self.clock() - self.last_finish, per_unit)
        return f"about {_clock_text(per_unit * left - running)} left"

    def heartbeat(self) -> None:
        loop = loop_text()
        self._say(f"{self.done}/{self.total} units finished, {_clock_text(self.clock() - self.start)} elapsed, "
                  f"{self.eta_text()}" + (f"; the running unit: {loop}" if loop else ""))

    def follow(self, results: Iterable[T], labels: Sequence[str] | None, label: Callable[[T], str],
               error: Callable[[T], str | None]) -> Iterator[T]:
        """Yield `results` (units as they come back), saying each one finished once the caller asks for the next
        (so after it committed it) and, with `labels` (the order a sequential executor computes them in), each
        one started before it is computed. `label` and `error` read a result's unit and its failure."""
        it = iter(results)
        pending = list(labels or [])
        while True:
            if pending:
                self.started(pending.pop(0))
            try:
                result = next(it)
            except StopIteration:
                return
            yield result
            self.finished(label(result), error(result))

    def start_heartbeat(self) -> None:
        """A daemon thread saying `heartbeat()` every interval_s (none when it is 0) until `close()`."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="auditor-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.heartbeat()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _NoProgress:
    """`start_unit_progress` on a terminal: the rich bars show progress there."""

    def follow(self, results: Iterable[T], labels: Sequence[str] | None, label: Callable[[T], str],
               error: Callable[[T], str | None]) -> Iterator[T]:
        return iter(results)

    def close(self) -> None:
        pass


def start_unit_progress(total: int, done: int, *, stream: TextIO | None = None,
                        interval_s: float | None = None) -> UnitProgress | _NoProgress:
    """Progress of a study run's units for a log: `UnitProgress` lines on stderr (where the logs go) when stdout
    is not a terminal (or `stream` is given), with a heartbeat thread every `interval_s` (default
    `heartbeat_interval()`) until `close()`; nothing on a terminal, where the per-unit bars show."""
    if stream is None and sys.stdout is not None and sys.stdout.isatty():
        return _NoProgress()
    reporter = UnitProgress(total, done, stream, heartbeat_interval() if interval_s is None else interval_s)
    reporter.start_heartbeat()
    return reporter
