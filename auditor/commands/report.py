"""`auditor report RUN`: regenerate report.md, report.html, plots and summary.json from a run's files.

Exit codes: 0 written (an incomplete or running run gets a report that opens with "incomplete"; one
written while a process runs the study says so on stderr, and that run rewrites it when it finishes);
2 bad input: no such run, an unreadable or malformed manifest, a missing or damaged items.parquet
(a report without the item table would claim that no item flipped), a read-only run directory, a bad
threshold flag (not finite, or outside the range `auditor.analysis.verdicts.RiskThresholds` accepts),
and with --pdf no headless Chromium on PATH or a print that failed (one line naming what it looked for).
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.data.rundir import RUNNING, items_problem, load_manifest, run_status
from auditor.report.markdown import write_report
from auditor.report.pdf import BROWSERS, html_to_pdf, require_browser
from auditor.view.run import run_protocols, run_thresholds
from auditor.view.runs import resolve_run

RISK_OPTIONS = (
    ("--shift-elevated", "shift_elevated", "margin of the directed shift and selective abstention (fraction) for "
                                           "elevated risk; LOW needs their upper bounds below it (default 0.05)"),
    ("--shift-high", "shift_high", "margin of the directed shift and selective abstention for high risk (0.10)"),
    ("--flip-margin", "flip_margin", "flip rate above its same-prompt null that keeps a variant from LOW (0.05)"),
    ("--unknown-drop-margin", "unknown_drop_margin", "unknown-rate drop that keeps a variant from LOW (0.05)"),
    ("--alpha", "alpha", "BH level of the template-level tests over the run's variants (0.05)"),
    ("--max-position-share", "max_position_share",
     "largest share of one shown letter on ambiguous prompts (by its CI's lower bound) a model may have before "
     "it counts as answering by position (default 0.5)"),
)


def register(sub) -> None:
    p = sub.add_parser("report", help="regenerate report.md / report.html / summary.json of a run from its files")
    p.add_argument("run", metavar="RUN", help="run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    for flag, dest, text in RISK_OPTIONS:
        p.add_argument(flag, dest=dest, type=float, default=None, metavar="X", help=text)
    p.add_argument("--protocol", default=None, metavar="P",
                   help="score on this protocol of the run's (strict, debiased, cloze, as its study lists them); "
                        "another than the run's first writes RUN/protocol-P/ beside the run's own report")
    p.add_argument("--pdf", action="store_true",
                   help=f"also print report.html to report.pdf (A4) with headless Chromium ({', '.join(BROWSERS)} "
                        "on PATH); exit 2 where none is found")
    p.set_defaults(func=run)


def risk_thresholds(args, manifest: dict):
    """Defaults, then the run's study thresholds, then the command line (each flag finite)."""
    given = {dest: getattr(args, dest) for _, dest, _ in RISK_OPTIONS if getattr(args, dest, None) is not None}
    for dest, value in given.items():
        if not math.isfinite(value):
            raise AuditorError(f"--{dest.replace('_', '-')}: must be a finite number, got {value}")
    try:
        return replace(run_thresholds(manifest), **given)
    except AuditorError as exc:  # the thresholds' own range checks (SpecError)
        raise AuditorError(f"report thresholds: {exc}") from None


def run(args) -> int:
    run_dir = resolve_run(args.run, Path(args.reports))
    manifest = load_manifest(run_dir)
    listed = run_protocols(manifest)
    if args.protocol is not None and args.protocol not in listed:
        raise AuditorError(f"--protocol {args.protocol}: {run_dir} was scored on {', '.join(listed)} (the "
                           "study's protocols)")
    thresholds = risk_thresholds(args, manifest)
    if getattr(args, "pdf", False):
        require_browser()  # refuse before writing anything
    items = items_problem(run_dir, manifest)
    if items:
        raise AuditorError(f"{run_dir / 'items.parquet'}: {items}; no report written (`auditor run` on the "
                           "study rewrites it)")
    status = run_status(run_dir, manifest)
    if status.state == RUNNING:
        print(f"auditor: note: {run_dir} is being run ({status.detail}); this report shows it as it is now and "
              "the run rewrites it when it finishes", file=sys.stderr)
    try:
        path = write_report(run_dir, thresholds, args.protocol)
    except OSError as exc:
        raise AuditorError(f"{exc.filename or run_dir}: cannot write the report ({exc.strerror or exc})") from None
    print(f"report: {path}\nhtml: {path.parent / 'report.html'}\nsummary: {path.parent / 'summary.json'}")
    if getattr(args, "pdf", False):
        print(f"pdf: {html_to_pdf(path.parent / 'report.html', path.parent / 'report.pdf')}")
    return 0
