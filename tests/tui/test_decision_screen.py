"""The TUI's decision screen (`d`), driven headless with Textual's pilot: the recommendation under the study's
[decision] constraints on top, every variant with whether it meets them, enter compares with dense."""
from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import DataTable, Static

from auditor.tui.app import AuditorApp
from auditor.tui.screens.compare import CompareScreen
from auditor.tui.screens.decision import COLUMNS, NO_CONSTRAINTS, DecisionScreen
from auditor.tui.screens.help import HelpScreen
from auditor.tui.screens.variants import VariantsScreen
from auditor.view.deployable import nearest_format
from tests.helpers_decision import with_decision
from tests.helpers_runs import MEASURED, build_run
from tests.tui.test_app import column, ready, snapshot, until

# (bytes, variant) of the smallest real file: rtn@4's planted size is simulated (RTN writes float32 weights)
SMALLEST = min((v["size_bytes"], k) for k, v in MEASURED.items() if nearest_format(k) is None)


def static_text(app: AuditorApp, selector: str) -> str:
    content = app.screen.query_one(selector, Static).content
    return getattr(content, "plain", str(content))


def test_decision_screen_shows_the_recommendation(tmp_path):
    run = with_decision(build_run(tmp_path / "reports"), {"max_size_bytes": SMALLEST[0] * 1.25})

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports", run)
        async with app.run_test(size=(200, 40)) as pilot:
            await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            await pilot.press("d")
            table = await ready(pilot, app, DecisionScreen, "#decision", rows=5)
            assert isinstance(table, DataTable)
            assert f"constraints size <= {SMALLEST[0] * 1.25 / 1e6:.1f} MB" in static_text(app, "#decision-title")
            assert static_text(app, "#recommendation").startswith(f"ship {SMALLEST[1]} [torch]")
            assert column(table, 0)[0] == SMALLEST[1] and column(table, 2)[0] == "fits (#1)"
            standing = dict(zip(column(table, 0), column(table, 2)))
            assert standing["magnitude@0.3"] == "not judged: size not measured"
            assert standing["magnitude@0.5"].startswith("misses: size")
            grades = dict(zip(column(table, 0), column(table, 3)))
            assert grades["rtn@4"] == "LOW" and grades["dense"] == "reference"
            sizes = dict(zip(column(table, 0), column(table, [k for k, _ in COLUMNS].index("size"))))
            assert sizes["rtn@4"] == "simulated"  # graded LOW, but no file holds its 4-bit weights
            assert "Pareto front" in static_text(app, "#pareto")
            snapshot(app, "decision", tmp_path / "screens")  # docs/screens/decision.svg with AUDITOR_UPDATE_SCREENS=1
            await pilot.press("enter")  # the recommended variant against dense
            await ready(pilot, app, CompareScreen, "#figures")
            await pilot.press("escape")
            await ready(pilot, app, DecisionScreen, "#decision", rows=5)
            await pilot.press("question_mark")
            await ready(pilot, app, HelpScreen, "#help-table")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, DecisionScreen), "help to close")
            await pilot.press("v")  # back to the variants table, and `d` again
            await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            await pilot.press("d")
            await ready(pilot, app, DecisionScreen, "#decision", rows=5)
            await pilot.press("q")

    asyncio.run(scenario())


def test_decision_screen_without_constraints(tmp_path):
    run = build_run(tmp_path / "reports")

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports", run)
        async with app.run_test(size=(200, 40)) as pilot:
            await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            await pilot.press("d")
            table = await ready(pilot, app, DecisionScreen, "#decision", rows=5)
            assert static_text(app, "#recommendation") == NO_CONSTRAINTS
            assert set(column(table, 2)) == {"no constraints"}
            await pilot.press("q")

    asyncio.run(scenario())


def test_decision_key_needs_an_open_run(tmp_path):
    build_run(tmp_path / "reports")

    async def scenario() -> None:
        app = AuditorApp(Path(tmp_path / "reports"))
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            await pilot.press("d")  # nothing open: a warning, no crash
            await pilot.pause()
            assert not isinstance(app.screen, DecisionScreen)
            await pilot.press("q")

    asyncio.run(scenario())


def test_constraints_given_to_the_tui_replace_the_studys(tmp_path):
    """`auditor tui --max-size ...`: the study allows only the smallest file; a 600 MB budget given to the app
    replaces that key, so dense (538 MB) fits as well and the title names the budget given."""
    run = with_decision(build_run(tmp_path / "reports"), {"max_size_bytes": SMALLEST[0] * 1.25})

    async def scenario() -> None:
        app = AuditorApp(tmp_path / "reports", run, {"max_size_bytes": 600e6})
        async with app.run_test(size=(200, 40)) as pilot:
            await ready(pilot, app, VariantsScreen, "#variants", rows=5)
            await pilot.press("d")
            table = await ready(pilot, app, DecisionScreen, "#decision", rows=5)
            assert "constraints size <= 600.0 MB" in static_text(app, "#decision-title")
            standing = dict(zip(column(table, 0), column(table, 2)))
            assert standing["dense"].startswith("fits") and standing[SMALLEST[1]].startswith("fits")
            await pilot.press("q")

    asyncio.run(scenario())


def test_tui_refuses_a_bad_constraint_flag_before_starting(tmp_path, capsys):
    from auditor.cli import main

    build_run(tmp_path / "reports")
    assert main(["tui", "--reports", str(tmp_path / "reports"), "--max-size", "lots"]) == 2
    err = capsys.readouterr().err
    assert "--max-size" in err and "lots" in err
