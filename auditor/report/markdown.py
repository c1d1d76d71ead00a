"""report.md, report.html, plots/*.png and summary.json for a run directory, computed only from its files.

`write_report(run_dir)` is the one entry point (the audit runner and `auditor
report RUN` call it). The content comes from `auditor.report.document`; this
module renders it as Markdown, `auditor.report.html` as self-contained HTML.
"""
from __future__ import annotations

import logging
from pathlib import Path

from auditor.analysis.verdicts import RiskThresholds
from auditor.core.files import write_bytes, write_json, write_text
from auditor.data.rundir import protocol_report_dir
from auditor.report.document import Bullets, Document, Figure, Heading, ItemCard, Para, Table, build_document
from auditor.report.html import render_html
from auditor.report.plots import Plot, render_plots
from auditor.report.summary import summary_dict
from auditor.view.run import RunView, run_protocols

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
_MD_SPECIAL = str.maketrans({"\\": "\\\\", "`": "\\`", "*": "\\*", "[": "\\[", "]": "\\]", "|": "\\|",
                             "<": "&lt;", "\n": " ", "\r": " "})


def md(text: object) -> str:
    """Plain text made inert in Markdown: emphasis, links, table pipes and HTML tags ("<") escaped; one line."""
    return str(text).translate(_MD_SPECIAL)


def _md_table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in t.headers) + " |", "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in t.rows]
    return lines + [""]


def _md_figure(plot: Plot) -> list[str]:
    if plot.png is None:
        return [f"_Figure not drawn ({md(plot.title)}): {md(plot.reason)}._", ""]
    lines = [f"![{md(plot.title)}]({PLOTS_DIR}/{plot.name}.png)", ""]
    if plot.reason:
        lines += [f"_Note: {md(plot.reason)}._", ""]
    return lines


def render_markdown(doc: Document) -> str:
    lines = [f"# {md(doc.title)}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {md(block.text)}", ""]
        elif isinstance(block, Para):
            label = f"**{md(block.label)}** " if block.label else ""
            prefix = "> " if block.kind == "warning" else ""
            text = f"_{md(block.text)}_" if block.kind == "note" else md(block.text)
            lines += [f"{prefix}{label}{text}", ""]
        elif isinstance(block, Bullets):
            lines += [f"- **{md(label)}**: {md(text)}" if label else f"- {md(text)}" for label, text in block.items]
            lines.append("")
        elif isinstance(block, Table):
            lines += _md_table(block)
        elif isinstance(block, Figure):
            lines += _md_figure(block.plot)
        elif isinstance(block, ItemCard):
            lines += [f"### {md(block.title)}", ""]
            lines += [f"**{md(label)}:** {md(text)}  " for label, text in block.fields] + [""]
            lines += [f"- {md(opt)}" + (f" ({md(marks)})" if marks else "") for opt, marks in block.options] + [""]
            lines += _md_table(block.answers)
    return "\n".join(lines)


def _write_plots(run_dir: Path, plots: tuple[Plot, ...]) -> None:
    folder = run_dir / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    for plot in plots:
        path = folder / f"{plot.name}.png"
        if plot.png is None:
            path.unlink(missing_ok=True)  # a stale figure from an earlier report would contradict this one
            continue
        write_bytes(path, plot.png)


def write_report(run_dir: Path, thresholds: RiskThresholds | None = None, protocol: str | None = None) -> Path:
    """Write summary.json, report.md, report.html and plots/*.png; return the report.md path.

    On the run's first protocol they go into the run directory; on another one (`protocol`) into
    `protocol_report_dir`, so both reports stand side by side.
    """
    view = RunView.load(Path(run_dir), thresholds, protocol=protocol)
    out = view.run_dir if protocol in (None, run_protocols(view.manifest)[0]) else protocol_report_dir(
        view.run_dir, view.protocol)
    out.mkdir(exist_ok=True)
    plots = render_plots(view)
    doc = build_document(view, plots)
    _write_plots(out, plots)
    write_json(summary_dict(view), out / "summary.json")
    path = out / "report.md"
    write_text(path, render_markdown(doc))
    write_text(out / "report.html", render_html(doc))
    log.info("report written to %s", path)
    return path
