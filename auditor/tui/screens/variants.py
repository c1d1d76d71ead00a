"""The variants table: headline figures per variant, sortable, with marks for compare."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from auditor.tui.cells import cell, fill, verdict_cell
from auditor.view.deployable import SIMULATED, nearest_format
from auditor.view.format import NOT_MEASURED, fixed, pct, pts, pvalue, size_mb
from auditor.view.run import KIND_VARIANT, SORT_KEYS, RunView, sort_overview

COLUMNS = [("mark", " "), ("variant", "variant"), ("backend", "runtime"), ("verdict", "verdict"),
           ("size", "size"), ("bits", "bits/w"), ("decode", "decode tok/s"), ("ppl", "ppl"),
           ("accuracy", "accuracy"), ("same_top", "same top"), ("srs", "SRS"), ("flip rate", "flip rate"),
           ("null", "same-prompt null"), ("shift", "directed shift"), ("q", "shift q")]
SORT_ORDER = list(SORT_KEYS)  # the `s` key cycles through these; keys 1-7 pick one


def row_key(variant: str, backend: str) -> str:
    return f"{variant}\t{backend}"


class VariantsScreen(Screen[None]):
    """One row per (variant, runtime); the footer line shows why the highlighted variant got its verdict."""

    BINDINGS = [Binding("s", "next_sort", "Sort"), Binding("space", "mark", "Mark"),
                Binding("enter", "compare_dense", "vs dense")] + [
        Binding(str(i + 1), f"sort('{k}')", k, show=False) for i, k in enumerate(SORT_ORDER)]

    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view
        self.sort_key: str | None = None
        self.descending = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="variants-title", classes="title")
        yield DataTable(cursor_type="row", id="variants")
        yield Static("", id="reasons")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_table()

    @property
    def marked(self) -> list[tuple[str, str]]:
        return self.app.marked  # type: ignore[attr-defined]

    def refresh_table(self) -> None:
        o = self.view.overview
        if self.sort_key:
            o = sort_overview(o, self.sort_key, self.descending)
        order = f"sorted by {self.sort_key} ({'descending' if self.descending else 'ascending'})" if self.sort_key else "unsorted"
        status = self.view.status
        incomplete = f"{status.incomplete_text()} - " if status is not None and not status.is_complete else ""
        invalid = self.view.validity is not None and not self.view.validity.valid
        warning = f" - DENSE REFERENCE NOT VALID, verdicts INCONCLUSIVE: {self.view.validity.short}" if invalid else ""
        self.query_one("#variants-title", Static).update(Text(
            f"{incomplete}Run {self.view.name}: {self.view.reference_precision} - {order}; {len(self.marked)}/2 marked"
            f"{warning}"))
        rows = []
        for r in o.itertuples():
            key = (r.variant, r.backend)
            sim = nearest_format(r.variant) is not None  # fake quantization: no file holds its weights
            rows.append((row_key(*key), [
                cell("*" if key in self.marked else ""), r.variant, r.backend, verdict_cell(r.verdict),
                SIMULATED if sim else size_mb(r.size_bytes), SIMULATED if sim else fixed(r.bits_per_weight, 2, NOT_MEASURED),
                SIMULATED if sim else fixed(r.decode_tokens_per_s, 1, NOT_MEASURED), fixed(r.ppl, 2, NOT_MEASURED), pct(r.accuracy),
                pct(r.same_top_share), pct(r.srs), pct(r.flip_rate), pct(r.flip_null), pts(r.directed_shift),
                pvalue(r.q_direction)]))
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        fill(table, COLUMNS, rows)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    def current(self) -> tuple[str, str] | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        variant, backend = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value.split("\t")
        return variant, backend

    def action_sort(self, key: str) -> None:
        self.descending = not self.descending if key == self.sort_key else key in ("flip rate", "verdict", "srs")
        self.sort_key = key
        self.refresh_table()

    def action_next_sort(self) -> None:
        nxt = SORT_ORDER[(SORT_ORDER.index(self.sort_key) + 1) % len(SORT_ORDER)] if self.sort_key else SORT_ORDER[0]
        self.action_sort(nxt)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value in SORT_KEYS:
            self.action_sort(event.column_key.value)

    def action_mark(self) -> None:
        key = self.current()
        if key is None:
            return
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked.append(key)
            del self.marked[:-2]  # two at most: the oldest mark goes
        self.refresh_table()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_compare_dense()

    def action_compare_dense(self) -> None:
        key = self.current()
        ref = self.view.overview[self.view.overview["kind"] == "reference"]
        if key is None or not len(ref):
            return
        self.app.compare(tuple(ref.iloc[0][["variant", "backend"]]), key)  # type: ignore[attr-defined]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        variant, backend = event.row_key.value.split("\t")
        found = [v for v in self.view.verdicts if (v.variant, v.backend) == (variant, backend)]
        text = (f"{variant} [{backend}]: {found[0].level.upper()} - " + "; ".join(found[0].reasons)) if found else (
            f"{variant} [{backend}]: " + ("the dense reference" if (variant, backend) in self._refs() else "null baseline"))
        self.query_one("#reasons", Static).update(cell(text))

    def _refs(self) -> set[tuple[str, str]]:
        o = self.view.overview
        return set(o.loc[o["kind"] != KIND_VARIANT, ["variant", "backend"]].itertuples(index=False, name=None))
