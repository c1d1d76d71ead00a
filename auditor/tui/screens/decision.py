"""Which variant to ship: the recommendation under the study's [decision] constraints, then every variant.

The rows are ``auditor.view.decision.display_rows`` of the run's decision (the
one `auditor decide RUN` prints and the report's decision section shows): the
variants that meet every constraint first, best first, then the rest with what
they miss; grade, fidelity to dense, size, bits/weight, decode speed, peak
memory and accuracy beside it. Enter compares the variant under the cursor with
dense.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from auditor.tui.cells import cell, fill, verdict_cell
from auditor.core.errors import AuditorError
from auditor.view.decision import (DISPLAY_COLUMNS, Constraints, Decision, display_rows, front_text, reference_notes,
                                   run_decision, study_constraints)
from auditor.view.run import KIND_REFERENCE, RunView

#: Narrower headers than the report's, so the table fits a terminal (same keys: DISPLAY_COLUMNS).
SHORT = {"standing": "meets constraints", "same_top": "same top", "kl": "KL", "artifact": "artifact", "bits": "bits/w",
         "decode": "decode tok/s", "peak": "peak mem", "front": "front"}
COLUMNS = [(key, SHORT.get(key, header)) for key, header in DISPLAY_COLUMNS]
NO_CONSTRAINTS = ("no [decision] constraints in the study: nothing is recommended; `auditor decide RUN --max-size "
                  "300MB ...` tries limits")


class DecisionScreen(Screen[None]):
    """The decision of one run; the screen only lays out what ``auditor.view.decision`` decided."""

    BINDINGS = [Binding("enter", "compare_dense", "vs dense")]
    AUTO_FOCUS = "#decision"

    def __init__(self, view: RunView, overrides: dict | None = None) -> None:
        super().__init__()
        self.view = view
        self.problem = ""
        try:
            # The study's [decision], with the constraints given to `auditor tui` replacing its keys.
            study = study_constraints(view.manifest, str(view.run_dir / "manifest.json"))
            constraints = Constraints(**{**study.given(), **(overrides or {})})
            self.decision: Decision | None = run_decision(view, constraints)
        except AuditorError as exc:  # a damaged [decision] in the manifest: say so on the screen
            self.decision, self.problem = None, str(exc)

    def compose(self) -> ComposeResult:
        shown = self.decision.constraints.describe() if self.decision is not None else "not readable"
        yield Header()
        with VerticalScroll():
            yield Static(cell(f"Run {self.view.name}: which variant to ship - constraints {shown}", "bold"),
                         classes="title", id="decision-title")
            yield Static("", id="recommendation")
            yield DataTable(cursor_type="row", id="decision")
            yield Static("", id="pareto")
        yield Footer()

    def on_mount(self) -> None:
        d = self.decision
        if d is None:
            self.query_one("#recommendation", Static).update(cell(f"not decided: {self.problem}", "bold red"))
            return
        headline = d.headline() if d.constraints.given() else NO_CONSTRAINTS
        text = Text(headline, style="bold")
        for note in reference_notes(self.view):
            text.append(f"\nnote: {note}", style="italic")
        self.query_one("#recommendation", Static).update(text)
        fill(self.query_one("#decision", DataTable), COLUMNS,
             [(f"{r['variant']}\t{r['backend']}", [self._cell(r, key) for key, _ in DISPLAY_COLUMNS])
              for r in display_rows(d)])
        self.query_one("#pareto", Static).update(cell(f"Pareto front (size x decode x same-top x risk): "
                                                      f"{front_text(d)}"))

    @staticmethod
    def _cell(row: dict, key: str) -> Text:
        if key == "grade":
            return verdict_cell(row["verdict"]) if row["verdict"] else cell(row["grade"])
        return cell(row[key], "bold green" if key == "standing" and row["fits"] else "")

    def action_compare_dense(self) -> None:
        table = self.query_one("#decision", DataTable)
        o = self.view.overview
        ref = o[o["kind"] == KIND_REFERENCE]
        if not table.row_count or not len(ref):
            return
        variant, backend = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value.split("\t")
        self.app.compare(tuple(ref.iloc[0][["variant", "backend"]]), (variant, backend))  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_compare_dense()
