"""Category breakdown: flip rate, significance and SRS change per variant and BBQ category."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from auditor.tui.cells import fill
from auditor.view.format import ci, count, num, pct, pts, pvalue
from auditor.view.run import RunView

COLUMNS = [("category", "category"), ("variant", "variant"), ("backend", "runtime"), ("pairs", "pairs"),
           ("flip", "flip rate"), ("ci", "95% CI (%)"), ("q", "BH q"), ("srs_ref", "SRS dense"),
           ("srs_var", "SRS variant"), ("srs_change", "SRS change"), ("h", "Cohen's h"), ("null", "null flip")]


class CategoriesScreen(Screen[None]):
    """The comparison table by category (ambiguous items), "all" first."""

    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"Run {self.view.name}: per category, ambiguous items vs dense"), classes="title")
        yield DataTable(cursor_type="row", id="categories")
        yield Footer()

    def on_mount(self) -> None:
        c = self.view.comparison.copy()
        c["_all"] = c["category"] != "all"
        c = c.sort_values(["_all", "category", "variant", "backend"], kind="stable")
        fill(self.query_one(DataTable), COLUMNS, [
            (f"{r.category}\t{r.variant}\t{r.backend}",
             [r.category, r.variant, r.backend, count(r.n_pairs), pct(r.flip_rate),
              ci(r.flip_rate_ci_low, r.flip_rate_ci_high), pvalue(r.q_bh), pct(r.srs_ref), pct(r.srs_var),
              pts(r.srs_change), num(r.cohens_h), pct(r.null_seed_flip_rate)])
            for r in c.itertuples()])
