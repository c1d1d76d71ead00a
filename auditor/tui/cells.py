"""Table cells for the TUI: every string becomes a rich Text, so item text is never read as markup."""
from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.widgets import DataTable

VERDICT_STYLES = {"high": "bold white on dark_red", "elevated": "bold black on dark_orange",
                  "not shown": "bold black on yellow", "low": "black on green",
                  "inconclusive": "bold black on grey70", "reference": "italic",
                  "baseline": "italic"}


def cell(value: object, style: str = "") -> Text:
    return Text(str(value), style=style, no_wrap=True)


def verdict_cell(level: str) -> Text:
    return cell(level.upper() if level in ("high", "elevated", "not shown", "low", "inconclusive") else level,
                VERDICT_STYLES.get(level, ""))


def fill(table: DataTable, columns: Iterable[tuple[str, str]], rows: Iterable[tuple[str, list]]) -> None:
    """Replace the table's content: columns are (key, label), rows (row key, cells)."""
    table.clear(columns=True)
    for key, label in columns:
        table.add_column(label, key=key)
    for key, cells in rows:
        table.add_row(*[c if isinstance(c, Text) else cell(c) for c in cells], key=key)
