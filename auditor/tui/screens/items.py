"""The item browser: filter by category, condition and flipped-only; enter opens an item."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Checkbox, DataTable, Footer, Header, Select, Static

from auditor.tui.cells import fill
from auditor.view.items import filter_items, item_table
from auditor.view.run import RunView

COLUMNS = [("item", "item"), ("category", "category"), ("condition", "condition"), ("polarity", "polarity"),
           ("flips", "flipped by"), ("question", "question")]


class ItemsScreen(Screen[None]):
    """Items of the run with the variants that flipped them (unbiased -> biased vs dense, any seed)."""

    BINDINGS = [Binding("f", "toggle_flipped", "Flipped only"), Binding("enter", "open", "Open item")]
    AUTO_FOCUS = "#items"
    DEFAULT_CSS = """
    ItemsScreen #filters { height: auto; }
    ItemsScreen Select { width: 32; }
    """

    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view
        self.table = item_table(view)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            cats = sorted(self.table["category"].unique())
            yield Select([(c, c) for c in cats], prompt="any category", id="category")
            yield Select([("ambiguous", "ambig"), ("disambiguated", "disambig")], prompt="any condition",
                         id="condition")
            yield Checkbox("flipped only (f)", id="flipped")
        yield Static("", id="items-count")
        yield DataTable(cursor_type="row", id="items")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_table()

    def _value(self, widget_id: str) -> str | None:
        value = self.query_one(f"#{widget_id}", Select).value
        return value if isinstance(value, str) else None

    def refresh_table(self) -> None:
        flipped_only = self.query_one("#flipped", Checkbox).value
        sel = filter_items(self.table, category=self._value("category"), condition=self._value("condition"),
                           flipped_only=flipped_only)
        self.query_one("#items-count", Static).update(
            f"{len(sel)} of {len(self.table)} items" + (" (flipped only)" if flipped_only else ""))
        fill(self.query_one(DataTable), COLUMNS, [
            (r.item_id, [r.item_id, r.category, r.condition, r.polarity,
                         f"{r.n_flipped}: {r.flipped_variants}" if r.n_flipped else "", r.question])
            for r in sel.itertuples()])

    def on_select_changed(self, event: Select.Changed) -> None:
        self.refresh_table()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.refresh_table()

    def action_toggle_flipped(self) -> None:
        box = self.query_one("#flipped", Checkbox)
        box.value = not box.value  # posts Checkbox.Changed, which refreshes the table

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self.app.open_item(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_item(event.row_key.value)  # type: ignore[attr-defined]
