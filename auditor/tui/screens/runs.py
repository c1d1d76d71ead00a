"""The runs list: every run directory under the reports folder; enter opens one."""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from auditor.tui.cells import fill
from auditor.view.runs import list_runs


class RunsScreen(Screen[None]):
    """Run directories, newest first."""

    BINDINGS = [Binding("enter", "open", "Open run", show=True), Binding("R", "reload", "Reload")]

    def __init__(self, reports_dir: Path) -> None:
        super().__init__()
        self.reports_dir = reports_dir

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"Runs in {self.reports_dir}"), classes="title")
        yield DataTable(cursor_type="row", id="runs")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        runs = list_runs(self.reports_dir)
        self.paths = dict(zip(runs["run"], runs["path"]))
        fill(self.query_one(DataTable),
             [("run", "run"), ("created", "created (UTC)"), ("model", "model"), ("precision", "reference precision"),
              ("items", "items"), ("units", "units"), ("sample", "data"), ("state", "state")],
             [(r.run, [r.run, r.created_utc, r.model, r.reference_precision, r.n_items,
                       f"{r.n_units}/{r.n_planned:.0f}" if r.n_planned == r.n_planned and r.n_planned else r.n_units,
                       "SAMPLE" if r.is_sample else "BBQ", r.state]) for r in runs.itertuples()])
        if not len(runs):
            self.query_one(Static).update(Text(f"No run directories in {self.reports_dir} (run `auditor audit` first)"))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            self.app.open_run(Path(self.paths[key]))  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(Path(self.paths[event.row_key.value]))  # type: ignore[attr-defined]
