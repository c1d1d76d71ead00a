"""Issue 29 on the committed Qwen2.5-Coder-1.5B study (docs/findings), measured by its run's measurement unit
(`auditor run docs/findings/qwen2.5-coder-1.5b.toml --only measurements`, committed 2026-12-07): every one of its
18 variants has a measured size and decode speed or is marked simulated; a 1 GB budget with a decode floor names
a variant; the TUI's decision screen, given the same flags, shows that decision."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from auditor.tui.app import AuditorApp
from auditor.tui.screens.decision import DecisionScreen
from auditor.tui.screens.variants import VariantsScreen
from auditor.view.decision import Constraints, run_decision
from auditor.view.run import RunView
from tests.tui.test_app import ready
from tests.tui.test_decision_screen import static_text

FINDINGS = Path(__file__).resolve().parents[2] / "docs" / "findings" / "qwen2.5-coder-1.5b"
# `auditor decide docs/findings/qwen2.5-coder-1.5b --max-size 1GB --min-decode-tps 10`
BUDGET = Constraints(max_size_bytes=1e9, min_decode_tokens_per_s=10.0)


@pytest.fixture(scope="module")
def view():
    return RunView.load(FINDINGS)


def test_every_variant_is_measured_or_simulated(view):
    table = run_decision(view, BUDGET).table
    variants = table[table["kind"] == "variant"]
    assert len(variants) == 18
    for _, row in variants.iterrows():
        if row["simulated"]:  # RTN: no file holds its rounded weights; the nearest real format is named
            assert row["variant"].startswith("rtn@") and row["artifact"].startswith("simulated: nearest gguf-")
        else:
            assert row["size_bytes"] > 0 and row["decode_tokens_per_s"] > 0, row["variant"]


def test_a_1gb_budget_names_a_variant_and_the_tui_shows_it(view):
    decision = run_decision(view, BUDGET)
    assert len(decision.fits) and decision.headline().startswith("ship ")

    async def scenario() -> None:
        app = AuditorApp(FINDINGS.parent, FINDINGS, BUDGET.given())
        async with app.run_test(size=(220, 50)) as pilot:
            await ready(pilot, app, VariantsScreen, "#variants")
            await pilot.press("d")
            await ready(pilot, app, DecisionScreen, "#decision")
            assert f"constraints {BUDGET.describe()}" in static_text(app, "#decision-title")
            assert static_text(app, "#recommendation").startswith(decision.headline())
            await pilot.press("q")

    asyncio.run(scenario())
