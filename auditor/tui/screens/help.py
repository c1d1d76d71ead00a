"""Key help: every binding of the app and of the screen underneath, in one modal."""
from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = (
    ("Anywhere", (("q", "quit"), ("?", "this help"), ("r", "runs list"), ("v", "variants table"),
                  ("g", "category breakdown"), ("i", "item browser"), ("d", "decision: which variant to ship"),
                  ("c", "compare the two marked variants"),
                  ("escape", "back"))),
    ("Runs", (("enter", "open the run under the cursor"),)),
    ("Variants", (("s", "sort by the next column (size, decode speed, ppl, accuracy, SRS, flip rate, verdict)"),
                  ("1-7", "sort by that column; again to reverse"), ("click a header", "sort by it"),
                  ("space", "mark / unmark a variant for compare (two at most)"),
                  ("enter", "compare the variant under the cursor with dense"))),
    ("Items", (("f", "flipped items only (on / off)"), ("category / condition", "filters at the top"),
               ("enter", "open the item: text and every variant's answer"))),
    ("Decision", (("enter", "compare the variant under the cursor with dense"),)),
    ("Compare", (("enter", "open the item under the cursor"),)),
)


class HelpScreen(ModalScreen[None]):
    """What every key does."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90; height: auto; max-height: 90%; border: thick $accent; background: $surface;
                            padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for section, keys in HELP:
            table.add_row(f"[u]{section}[/u]", "")
            for key, text in keys:
                table.add_row(key, text)
        with Vertical():
            yield Static("Keys", classes="title")
            yield Static(table, id="help-table")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
