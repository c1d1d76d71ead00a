"""report.html: one self-contained file (inline CSS, PNG plots base64-embedded, no scripts, no external URLs).

Every piece of text goes through `html.escape`, and a Content-Security-Policy
meta tag forbids scripts and remote loads, so item text such as `<script>` shows
as text and could not run even if an escape were missed.
"""
from __future__ import annotations

import base64
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
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _table(t: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = []
    for i, row in enumerate(t.rows):
        cls = f' class="{_e(t.row_classes[i])}"' if i < len(t.row_classes) and t.row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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
    if isinstance(block, Para):
        label = f"<strong>{_e(block.label)}</strong> " if block.label else ""
        cls = f' class="{_e(block.kind)}"' if block.kind != "p" else ""
        return f"<p{cls}>{label}{_e(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li><strong>{_e(label)}</strong>: {_e(text)}</li>" if label else f"<li>{_e(text)}</li>"
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
        f"<title>{_e(doc.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(doc.title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )
