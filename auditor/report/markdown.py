"""report.md, report.html, plots/*.png and summary.json for a run directory, computed only from its files.

`write_report(run_dir)` is the one entry point (the audit runner and `auditor
report RUN` call it). The content comes from `auditor.report.document`; this
module renders it as Markdown, `auditor.report.html` as self-contained HTML.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from auditor.analysis.verdicts import RiskThresholds
from auditor.core.files import write_bytes, write_json, write_text
from auditor.core.errors import AuditorError
from auditor.data.rundir import (
    REPORT_RECORD,
    protocol_report_dir,
    report_input_problems,
    report_inputs,
    report_record,
    sealed,
)
from auditor.report.decision_section import decision_section
from auditor.report.document import Bullets, Document, Figure, Heading, ItemCard, Para, Table, build_document
from auditor.report.html import render_html
from auditor.report.plots import Plot, render_plots
from auditor.report.provenance import provenance_section
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


def _md_code(block: Para) -> list[str]:
    """A command or file text, verbatim in a fence longer than any backtick run inside it (so it cannot close it)."""
    longest = max((len(run) for run in re.findall(r"`+", block.text)), default=0)
    fence = "`" * max(3, longest + 1)
    label = [f"**{md(block.label)}**", ""] if block.label else []
    return [*label, fence, block.text, fence, ""]


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
        elif isinstance(block, Para) and block.kind == "code":
            lines += _md_code(block)
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


def full_document(view: RunView, plots: tuple[Plot, ...]) -> Document:
    """The report: every section of `build_document`, the decision section after its Summary, then Provenance."""
    doc = build_document(view, plots, decision=decision_section(view))
    return Document(doc.title, doc.blocks + tuple(provenance_section(view)))


def _write_plots(run_dir: Path, plots: tuple[Plot, ...]) -> list[Path]:
    """plots/<name>.png of each drawn plot; returns their paths."""
    folder = run_dir / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    written = []
    for plot in plots:
        path = folder / f"{plot.name}.png"
        if plot.png is None:
            path.unlink(missing_ok=True)  # a stale figure from an earlier report would contradict this one
            continue
        write_bytes(path, plot.png)
        written.append(path)
    return written


def write_report(run_dir: Path, thresholds: RiskThresholds | None = None, protocol: str | None = None) -> Path:
    """Write plots/*.png, report.md, report.html and summary.json; return the report.md path.

    On the run's first protocol they go into the run directory; on another one (`protocol`) into
    `protocol_report_dir`, so both reports stand side by side. summary.json goes last, sealed, with the
    size and sha256 of every file written and of the inputs no commit record vouches for (measurements.json,
    measurements/*.json, sparse_kernels.json), so `auditor status` and the gate can tell a changed report.
    An input that differs from its seal, or one the run's report was written from that is gone, is refused
    (AuditorError naming it): the new report would silently drop or change what the old one showed.
    """
    run_dir = Path(run_dir)
    problems = report_input_problems(run_dir) if (run_dir / "manifest.json").is_file() else []
    if problems:
        rel = problems[0].split(" ", 1)[0]
        raise AuditorError(f"{run_dir / rel}: {problems[0]}; no report written (`auditor measure ... --out "
                           f"{run_dir}` writes the measurements again; remove {run_dir / 'summary.json'} to write "
                           "a report without them)")
    view = RunView.load(run_dir, thresholds, protocol=protocol)
    out = view.run_dir if protocol in (None, run_protocols(view.manifest)[0]) else protocol_report_dir(
        view.run_dir, view.protocol)
    out.mkdir(exist_ok=True)
    plots = render_plots(view)
    doc = full_document(view, plots)
    written = _write_plots(out, plots)
    path = out / "report.md"
    write_text(path, render_markdown(doc))
    write_text(out / "report.html", render_html(doc))
    record = report_record(out, view.run_dir, [*written, path, out / "report.html"], report_inputs(view.run_dir))
    write_json(sealed({**summary_dict(view), REPORT_RECORD: record}), out / "summary.json")
    log.info("report written to %s", path)
    return path
