"""A progress bar with items/s and ETA for long loops (rich), quiet when not on a terminal."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def update(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


@contextmanager
def progress(total: int, unit: str) -> Iterator[_Bar]:
    """Shows `done/total unit, unit/s, ETA` on stderr when it is a terminal (or AUDITOR_PROGRESS=1)."""
    show = sys.stderr.isatty() or os.environ.get("AUDITOR_PROGRESS") == "1"
    if not show or total <= 0:
        yield _Bar(None, None)
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
        yield _Bar(prog, task)
