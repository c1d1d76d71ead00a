"""The TUI driven headless with Textual's Pilot over a synthetic run: sort, filter, open, compare.

Each main screen is saved as an SVG under tmp_path; with AUDITOR_UPDATE_SCREENS=1
the SVGs are also written to docs/screens/ for the README.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from textual.css.query import NoMatches
from textual.widgets import DataTable, Select, Static

from auditor.tui.app import AuditorApp
from auditor.tui.screens.categories import CategoriesScreen
from auditor.tui.screens.compare import CompareScreen
from auditor.tui.screens.help import HelpScreen
from auditor.tui.screens.item import ItemScreen
from auditor.tui.screens.items import ItemsScreen
from auditor.tui.screens.runs import RunsScreen
from auditor.tui.screens.variants import VariantsScreen
from tests.helpers_runs import PLANTED_HIGH, SCRIPT_TEXT, build_run

ROOT = Path(__file__).resolve().parents[2]
DOC_SCREENS = ROOT / "docs" / "screens"
UPDATE_ENV = "AUDITOR_UPDATE_SCREENS"


async def until(pilot, condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    waited = 0.0
    while not condition():
        if waited > timeout_s:
            pytest.fail(f"timed out waiting for {what}")
        await pilot.pause(0.05)
        waited += 0.05


async def ready(pilot, app: AuditorApp, screen_type: type, selector: str, rows: int | None = None):
    """The widget `selector` of the active screen once it is a `screen_type`, mounted and filled."""
    found: list = []

    def check() -> bool:
        if not isinstance(app.screen, screen_type):
            return False
        try:
            widget = app.screen.query_one(selector)
        except NoMatches:  # pushed but not composed yet
            return False
        if isinstance(widget, DataTable) and (widget.row_count == 0 if rows is None else widget.row_count != rows):
            return False
        found[:] = [widget]
        return True

    await until(pilot, check, f"{screen_type.__name__} {selector}")
    return found[0]


def column(table: DataTable, index: int) -> list[str]:
    return [table.get_row_at(i)[index].plain for i in range(table.row_count)]


def snapshot(app: AuditorApp, name: str, out: Path) -> None:
    out.mkdir(exist_ok=True)
    path = Path(app.save_screenshot(f"{name}.svg", str(out)))
    assert path.stat().st_size > 1000
    if os.environ.get(UPDATE_ENV) == "1":
        DOC_SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_SCREENS / path.name)


def files_state(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")}


def test_tui_walkthrough(tmp_path, monkeypatch):
    run = build_run(tmp_path / "reports")
    monkeypatch.chdir(tmp_path)  # relative paths on screen, as a user would type them
    before = files_state(run)
    shots = tmp_path / "screens"

    async def scenario() -> None:
        app = AuditorApp(Path("reports"), Path("reports/synth"))
        async with app.run_test(size=(150, 40)) as pilot:
            # --- variants table, loaded in a worker, then sorted
            table = await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            await pilot.press("6")  # flip rate, descending first
            assert column(table, 1)[:2] == [PLANTED_HIGH, "magnitude@0.5"]
            assert column(table, 3)[:2] == ["HIGH", "HIGH"]
            assert column(table, 1)[-1] == "dense"  # no flip rate: last
            title = app.screen.query_one("#variants-title", Static).content
            assert "sorted by flip rate (descending)" in str(title)
            await pilot.press("1")  # size, ascending
            assert column(table, 1)[0] == "rtn@4" and column(table, 4)[0] == "simulated"  # RTN: no real file
            assert column(table, 4)[-1] == "not measured"
            await pilot.press("s")  # next sort key after size: decode speed
            assert "sorted by decode" in str(app.screen.query_one("#variants-title", Static).content)
            await pilot.press("6")
            snapshot(app, "variants", shots)

            # --- runs list and back
            await pilot.press("r")
            runs = await ready(pilot, app, RunsScreen, "#runs", rows=1)
            assert column(runs, 0) == ["synth"] and column(runs, 6) == ["SAMPLE"]
            snapshot(app, "runs", shots)
            await pilot.press("enter")
            await ready(pilot, app, VariantsScreen, "#variants", rows=5)

            # --- category breakdown
            await pilot.press("g")
            cats = await ready(pilot, app, CategoriesScreen, "#categories", rows=4 * 6)  # 4 variants x (5 + all)
            assert set(column(cats, 0)[:4]) == {"all"}
            snapshot(app, "categories", shots)

            # --- item browser: flipped only, one category, open an item
            await pilot.press("i")
            items = await ready(pilot, app, ItemsScreen, "#items", rows=80)
            await pilot.press("f")
            await until(pilot, lambda: items.row_count == 20, "the flipped-only filter")
            assert "20 of 80 items (flipped only)" in str(app.screen.query_one("#items-count", Static).content)
            app.screen.query_one("#category", Select).value = "Age"
            await until(pilot, lambda: items.row_count == 4, "the category filter")
            assert column(items, 0) == ["Age/1", "Age/5", "Age/9", "Age/13"]
            assert column(items, 4)[3] == f"3: magnitude@0.3, magnitude@0.5, {PLANTED_HIGH}"
            snapshot(app, "items", shots)
            await pilot.press("down", "down", "down", "enter")
            answers = await ready(pilot, app, ItemScreen, "#answers", rows=5 * 2)
            text = app.screen.query_one("#item-text", Static).content.plain
            assert "Age/13" in text and SCRIPT_TEXT in text  # shown literally, not read as markup
            rows = {(r[0].plain, r[2].plain): r for r in (answers.get_row_at(i) for i in range(answers.row_count))}
            assert rows[(PLANTED_HIGH, "0")][6].plain == "unbiased -> biased"
            assert rows[("dense", "0")][4].plain == "unknown" and rows[("rtn@4", "1")][6].plain == ""
            snapshot(app, "item", shots)

            # --- compare two marked variants
            await pilot.press("v")
            table = await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            for name in ("magnitude@0.5", PLANTED_HIGH):
                table.move_cursor(row=column(table, 1).index(name))
                await pilot.press("space")
            assert column(table, 0).count("*") == 2
            await pilot.press("c")
            await ready(pilot, app, CompareScreen, "#differing", rows=19)
            figures = await ready(pilot, app, CompareScreen, "#figures")
            by_name = {r[0].plain: (r[1].plain, r[2].plain)
                       for r in (figures.get_row_at(i) for i in range(figures.row_count))}
            assert by_name["flip rate vs dense"] == ("51.3%", "100.0%")
            assert by_name["verdict"] == ("HIGH", "HIGH")
            assert by_name["perplexity"] == ("21.00", "21.20")
            assert "19 (item, seed) pairs answered differently" in str(
                app.screen.query_one("#differing-title", Static).content)
            snapshot(app, "compare", shots)
            await pilot.press("enter")  # the first differing item
            await ready(pilot, app, ItemScreen, "#answers", rows=5 * 2)
            await pilot.press("escape")
            await ready(pilot, app, CompareScreen, "#differing", rows=19)

            # --- key help
            await pilot.press("question_mark")
            await ready(pilot, app, HelpScreen, "#help-table")
            snapshot(app, "help", shots)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help to close")
            await pilot.press("q")

    asyncio.run(scenario())
    assert files_state(run) == before  # the TUI only reads run files
    assert sorted(p.stem for p in shots.glob("*.svg")) == ["categories", "compare", "help", "item", "items", "runs",
                                                           "variants"]


def test_tui_bad_run_is_reported_not_fatal(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{}")
    (tmp_path / "broken" / "records").mkdir()
    (tmp_path / "broken" / "records" / "x.parquet").write_text("not parquet")

    async def scenario() -> None:
        app = AuditorApp(tmp_path, tmp_path / "broken")
        async with app.run_test(size=(120, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, RunsScreen) and app.view is None
            await pilot.press("i")  # nothing open: a warning, no crash
            assert isinstance(app.screen, RunsScreen)
            await pilot.press("q")

    asyncio.run(scenario())


def test_tui_command_rejects_a_non_run(tmp_path, capsys):
    from auditor.cli import main

    assert main(["tui", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_tui_grades_with_the_thresholds_the_run_records(tmp_path):
    """Study [thresholds] recorded in the manifest reach the TUI: the planted variant is no longer HIGH."""
    # No directed measure can exceed 100 pts, and no q-value is below 1e-300: nothing can be raised.
    lenient = {"shift_elevated": 1.0, "shift_high": 1.0, "alpha": 1e-300}
    run = build_run(tmp_path / "reports", thresholds=lenient)

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports", run)
        async with app.run_test(size=(150, 40)) as pilot:
            table = await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            assert app.view is not None and app.view.thresholds.shift_high == 1.0
            verdicts = dict(zip(column(table, 1), column(table, 3)))
            assert verdicts[PLANTED_HIGH] == "NOT SHOWN"  # HIGH under the default thresholds (walkthrough)
            await pilot.press("q")

    asyncio.run(scenario())


def test_tui_says_when_the_dense_reference_is_not_valid(tmp_path):
    """A position-driven dense model: the variants title says so and every verdict cell reads INCONCLUSIVE."""
    run = build_run(tmp_path / "reports", position_driven_dense=True, seeds=(0, 1, 2))

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports", run)
        async with app.run_test(size=(150, 40)) as pilot:
            table = await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            title = str(app.screen.query_one("#variants-title", Static).content)
            assert "DENSE REFERENCE NOT VALID, verdicts INCONCLUSIVE: the dense reference answers by position" in title
            verdicts = dict(zip(column(table, 1), column(table, 3)))
            assert {verdicts[v] for v in ("magnitude@0.3", "magnitude@0.5", PLANTED_HIGH, "rtn@4")} == {"INCONCLUSIVE"}
            await pilot.press("q")

    asyncio.run(scenario())


def test_tui_and_status_agree_on_a_dead_run(tmp_path, capsys):
    """state.json says running, but no process holds the run's lock: both call it interrupted."""
    from auditor.cli import main
    from auditor.core.files import write_json

    run = build_run(tmp_path / "reports")
    write_json({"state": "running", "pid": 999_999, "n_units": 5, "n_finished": 2}, run / "state.json")
    assert main(["status", str(run)]) == 0
    assert "state: interrupted" in capsys.readouterr().out

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports")
        async with app.run_test(size=(150, 40)) as pilot:
            table = await ready(pilot, app, RunsScreen, "DataTable", rows=1)
            assert column(table, table.columns.__len__() - 1) == ["interrupted"]
            await pilot.press("q")

    asyncio.run(scenario())


def test_tui_says_which_planned_units_are_missing(tmp_path):
    """A run that plans 5 units and committed 4: the runs list shows 4/5, the run's title says incomplete,
    and the uncommitted unit's records are not shown."""
    import json

    from auditor.core.files import write_json
    from auditor.data.rundir import SCORE, Unit, commit_record

    run = build_run(tmp_path / "reports")
    manifest = json.loads((run / "manifest.json").read_text())
    specs = ["dense", *manifest["config"]["variants"]]
    units = [Unit(SCORE, spec, spec, "torch") for spec in specs]
    manifest["units"] = [{"kind": u.kind, "variant": u.variant, "spec": u.spec, "backend": u.backend,
                          "shard": u.shard, "n_shards": u.n_shards, "key": f"key-{u.variant}"} for u in units]
    write_json(manifest, run / "manifest.json")
    for u in units:
        write_json({"variant": u.variant, "unit_key": f"key-{u.variant}"}, u.descriptor_path(run))
        if u.variant != PLANTED_HIGH:  # its records exist, its commit record does not
            write_json(commit_record(run, u, f"key-{u.variant}", "2026-01-01T00:00:00+00:00"), u.commit_path(run))

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports")
        async with app.run_test(size=(150, 40)) as pilot:
            runs = await ready(pilot, app, RunsScreen, "#runs", rows=1)
            assert column(runs, 5) == ["4/5"]
            await pilot.press("enter")
            await ready(pilot, app, VariantsScreen, "#variants")
            assert PLANTED_HIGH not in set(app.view.records["variant"])
            title = str(app.screen.query_one("#variants-title", Static).content)
            assert title.startswith("incomplete: 4 of 5 units finished")
            await pilot.press("q")

    asyncio.run(scenario())
