"""Two variants side by side: headline figures, per-category figures, and the items they answer differently."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from auditor.tui.cells import cell, fill, verdict_cell
from auditor.view.format import NOT_MEASURED, fixed, pct, pts, pvalue, size_mb
from auditor.view.items import VariantComparison

FIGURES = (
    ("verdict", "verdict", None), ("size", "size_bytes", size_mb),
    ("bits / weight", "bits_per_weight", lambda x: fixed(x, 2, NOT_MEASURED)),
    ("decode tokens/s (measured)", "decode_tokens_per_s", lambda x: fixed(x, 1, NOT_MEASURED)),
    ("same top letter as dense", "same_top_share", pct), ("3-letter KL from dense", "kl_mean",
                                                           lambda x: fixed(x, 4, NOT_MEASURED)),
    ("perplexity", "ppl", lambda x: fixed(x, 2, NOT_MEASURED)), ("accuracy", "accuracy", pct),
    ("accuracy (ambiguous)", "accuracy_ambig", pct), ("accuracy (disambiguated)", "accuracy_disambig", pct),
    ("SRS", "srs", pct), ("SRS change vs dense", "srs_change", pts), ("flip rate vs dense", "flip_rate", pct),
    ("same-prompt null (flip rate)", "flip_null", pct), ("answer-order sensitivity (context)", "null_seed_flip_rate", pct),
    ("directed shift toward the stereotype", "directed_shift", pts),
    ("directed shift q (template-level, BH)", "q_direction", pvalue),
    ("selective abstention", "selective_abstention", pts), ("abstention", "abstention", str),
)


def label(row: dict) -> str:
    return f"{row['variant']} [{row['backend']}]"


class CompareScreen(Screen[None]):
    """A vs B. Figures come from the run's tables; nothing is recomputed here."""

    BINDINGS = [Binding("enter", "open", "Open item")]
    AUTO_FOCUS = "#differing"

    def __init__(self, comparison: VariantComparison) -> None:
        super().__init__()
        self.comparison = comparison

    def compose(self) -> ComposeResult:
        a, b = self.comparison.a, self.comparison.b
        yield Header()
        with VerticalScroll():
            yield Static(cell(f"Compare  A = {label(a)}   B = {label(b)}", "bold"), id="compare-title")
            yield DataTable(cursor_type="row", id="figures")
            yield Static("Per category (ambiguous items, vs dense)", classes="title")
            yield DataTable(cursor_type="row", id="compare-categories")
            yield Static("", id="differing-title", classes="title")
            yield DataTable(cursor_type="row", id="differing")
        yield Footer()

    def on_mount(self) -> None:
        c = self.comparison
        a, b = c.a, c.b
        fill(self.query_one("#figures", DataTable), [("figure", "figure"), ("a", f"A: {label(a)}"), ("b", f"B: {label(b)}")],
             [(name, [name, *(verdict_cell(r[col]) if col == "verdict" else fmt(r[col]) for r in (a, b))])
              for name, col, fmt in FIGURES])
        fill(self.query_one("#compare-categories", DataTable),
             [("category", "category"), ("flip_a", "flip A"), ("flip_b", "flip B"), ("srs_a", "SRS change A"),
              ("srs_b", "SRS change B"), ("q_a", "BH q A"), ("q_b", "BH q B")],
             [(r.category, [r.category, pct(r.flip_rate_a), pct(r.flip_rate_b), pts(r.srs_change_a),
                            pts(r.srs_change_b), pvalue(r.q_bh_a), pvalue(r.q_bh_b)])
              for r in c.categories.itertuples()])
        d = c.differing
        self.query_one("#differing-title", Static).update(f"{len(d)} (item, seed) pairs answered differently")
        fill(self.query_one("#differing", DataTable),
             [("item", "item"), ("seed", "seed"), ("condition", "condition"), ("a", "A answer"), ("b", "B answer"),
              ("question", "question")],
             [(f"{r.item_id}\t{r.seed}", [r.item_id, str(r.seed), r.condition, f"{r.answer_a} ({r.role_a})",
                                          f"{r.answer_b} ({r.role_b})", r.question]) for r in d.itertuples()])

    def action_open(self) -> None:
        table = self.query_one("#differing", DataTable)
        if table.row_count:
            item_id = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value.split("\t")[0]
            self.app.open_item(item_id)  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "differing":
            self.app.open_item(event.row_key.value.split("\t")[0])  # type: ignore[attr-defined]
