"""report.html: one self-contained file (inline CSS, PNG plots base64-embedded, no scripts, no external URLs).

Every piece of text goes through `html.escape`, and a Content-Security-Policy
meta tag forbids scripts and remote loads, so item text such as `<script>` shows
as text and could not run even if an escape were missed. Text in `backticks`
(commands, options) is shown as code after escaping, so no raw Markdown shows.

Print (PRINT_STYLE, and `auditor report RUN --pdf` through auditor.report.pdf): A4 pages,
tables fit the page width by wrapping their cells (long digests and paths break
anywhere), the first screen (warnings, Summary) stands on page 1 and the body and
each appendix section start on a new page.
"""
from __future__ import annotations

import base64
import re
from html import escape

from auditor.report.document import Bullets, Document, Figure, Heading, ItemCard, Para, Table

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
nav { background: #f5f5f5; padding: .5rem 1rem; border-radius: 4px; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .86rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eee; }
tr.verdict-high td { background: #fde7e7; }
tr.verdict-elevated td { background: #fff3e0; }
tr.verdict-low td { background: #e8f5e9; }
tr.verdict-inconclusive td { background: #eeeeee; }
.warning { background: #fff8e1; border-left: 4px solid #f9a825; padding: .5rem 1rem; }
.note { color: #555; font-style: italic; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #555; }
section.item { border: 1px solid #ccc; border-radius: 4px; padding: .2rem 1rem; margin: 1rem 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dt { font-weight: bold; }
dd { margin: 0; }
.table-wrap { overflow-x: auto; max-width: 100%; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: .85em; }
code { background: #f2f2f2; padding: 0 .2em; border-radius: 3px; }
pre code { font-size: inherit; background: none; padding: 0; }
td.long { overflow-wrap: anywhere; }
pre.code { background: #f6f6f6; border: 1px solid #ddd; padding: .5rem .8rem; white-space: pre-wrap;
           overflow-wrap: anywhere; }
"""

# Sections that start a new printed page: the body after the first screen, then the appendix-like sections.
PAGE_BREAK_ANCHORS = ("verdicts", "categories", "positions", "items", "paper", "limitations", "methodology",
                      "provenance")

PRINT_STYLE = """
@page { size: A4; margin: 12mm 10mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; line-height: 1.3; }
  h1 { font-size: 15pt; margin: 0 0 .4rem; }
  h2 { font-size: 12.5pt; margin-top: 1rem; }
  h3 { font-size: 10.5pt; }
  h2, h3 { break-after: avoid; }
  nav { display: none; }
  .table-wrap { overflow: visible; }
  table { width: 100%; table-layout: auto; font-size: 7.5pt; }
  thead { display: table-header-group; }
  tr, figure, section.item, pre.code { break-inside: avoid; }
  th, td { padding: .1rem .25rem; overflow-wrap: break-word; }
  td.long { overflow-wrap: anywhere; }  /* digests and paths: break anywhere rather than widen the table */
  figure img { max-height: 120mm; }
  tr.verdict-high td, tr.verdict-elevated td, tr.verdict-low td, tr.verdict-inconclusive td, .warning, th {
    -webkit-print-color-adjust: exact; print-color-adjust: exact; }
""" + "".join(f"  h2#{a} {{ break-before: page; }}\n" for a in PAGE_BREAK_ANCHORS) + "}\n"

LONG_WORD = 24  # characters: longer than any grade, number or variant name the tables print
_CODE = re.compile(r"`([^`\n]+)`")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _t(text: object) -> str:
    """Escaped text with `backtick spans` shown as code (the spans are escaped like the rest)."""
    return _CODE.sub(r"<code>\1</code>", _e(text))


def _table(t: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = []
    for i, row in enumerate(t.rows):
        cls = f' class="{_e(t.row_classes[i])}"' if i < len(t.row_classes) and t.row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td{_cell_class(c)}>{_t(c)}</td>" for c in row) + "</tr>")
    # the wrapper scrolls a wide table on screen; in print the cells wrap instead (PRINT_STYLE)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _cell_class(text: str) -> str:
    """' class="long"' for a cell holding an unbreakable run (a sha256, a path): it may wrap anywhere, where
    ordinary words keep whole (breaking "INCONCLUSIVE" to save width would make every table harder to read)."""
    return ' class="long"' if any(len(word) >= LONG_WORD for word in str(text).split()) else ""


def _figure(block: Figure) -> str:
    plot = block.plot
    if plot.png is None:
        return f'<p class="note">Figure not drawn ({_e(plot.title)}): {_e(plot.reason)}.</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    note = f" Note: {_e(plot.reason)}." if plot.reason else ""
    return (f'<figure><img alt="{_e(plot.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(plot.title)}.{note}</figcaption></figure>")


def _item(card: ItemCard) -> str:
    fields = "".join(f"<dt>{_e(label)}</dt><dd>{_e(text)}</dd>" for label, text in card.fields)
    options = "".join(f"<li>{_e(opt)}" + (f" <em>({_e(marks)})</em>" if marks else "") + "</li>"
                      for opt, marks in card.options)
    return (f'<section class="item"><h3>{_e(card.title)}</h3><dl>{fields}</dl><ul>{options}</ul>'
            f"{_table(card.answers)}</section>")


def _block(block) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{_e(block.anchor)}"' if block.anchor else ""
        return f"<h{block.level}{anchor}>{_e(block.text)}</h{block.level}>"
    if isinstance(block, Para) and block.kind == "code":  # a command or a file's text, verbatim
        label = f"<p><strong>{_e(block.label)}</strong></p>" if block.label else ""
        return f'{label}<pre class="code"><code>{_e(block.text)}</code></pre>'
    if isinstance(block, Para):
        label = f"<strong>{_e(block.label)}</strong> " if block.label else ""
        cls = f' class="{_e(block.kind)}"' if block.kind != "p" else ""
        return f"<p{cls}>{label}{_t(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li><strong>{_e(label)}</strong>: {_t(text)}</li>" if label else f"<li>{_t(text)}</li>"
                        for label, text in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, ItemCard):
        return _item(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(doc: Document) -> str:
    """The whole document as one HTML page."""
    nav = "".join(f'<a href="#{_e(b.anchor)}">{_e(b.text)}</a>' for b in doc.blocks
                  if isinstance(b, Heading) and b.anchor)
    body = "\n".join(_block(b) for b in doc.blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(doc.title)}</title>\n<style>{STYLE}{PRINT_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(doc.title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def first_screen(doc: Document, anchor: str = "summary") -> Document:
    """The blocks a reader sees first: everything up to the end of the `anchor` section (the warnings before
    it included), i.e. what must fit the first printed page. The whole document when it has no such section."""
    blocks = list(doc.blocks)
    start = next((i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.anchor == anchor), None)
    if start is None:
        return doc
    end = next((i for i in range(start + 1, len(blocks))
                if isinstance(blocks[i], Heading) and blocks[i].level <= blocks[start].level), len(blocks))
    return Document(doc.title, tuple(blocks[:end]))
