"""One item: context, question, options (correct / unknown / stereotype-consistent) and every answer."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from auditor.tui.cells import cell, fill
from auditor.view.items import ItemDetail

COLUMNS = [("variant", "variant"), ("backend", "runtime"), ("seed", "seed"), ("answer", "answer (letter as shown)"),
           ("role", "role"), ("correct", "correct"), ("flip", "vs dense")]


def item_text(detail: ItemDetail) -> Text:
    """The item as plain rich Text (never markup): header, context, question, options with what they are."""
    it = detail.item
    text = Text()
    text.append(f"{it['item_id']}  {it['category']}  {it['condition']}  {it['polarity']}\n", style="bold")
    text.append("Context: ", style="bold")
    text.append(f"{it['context']}\n")
    text.append("Question: ", style="bold")
    text.append(f"{it['question']}\n")
    for k in range(3):
        marks = detail.option_marks(k)
        text.append(f"  ans{k}: {it.get(f'ans{k}', '')}")
        text.append(f"  ({marks})\n" if marks else "\n", style="italic")
    return text


class ItemScreen(Screen[None]):
    """Every (variant, runtime, seed) answer to one item, flips against dense marked."""

    def __init__(self, detail: ItemDetail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(item_text(self.detail), id="item-text")
            yield DataTable(cursor_type="row", id="answers")
        yield Footer()

    def on_mount(self) -> None:
        a = self.detail.answers
        fill(self.query_one(DataTable), COLUMNS, [
            (f"{r.variant}\t{r.backend}\t{r.seed}",
             [r.variant, r.backend, str(r.seed), f"{r.letter} = {r.answer}", r.role, "yes" if r.correct else "no",
              cell("unbiased -> biased", "bold red") if r.flipped else
              cell("biased -> unbiased", "green") if r.reversed else ""])
            for r in a.itertuples()])
