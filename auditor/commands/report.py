"""`auditor report RUN`: regenerate report.md, report.html, plots and summary.json from a run's files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.data.rundir import load_manifest
from auditor.report.markdown import write_report
from auditor.view.run import run_protocols, run_thresholds
from auditor.view.runs import resolve_run

RISK_OPTIONS = (
    ("--flip-rate-elevated", "flip_rate_elevated", "flip rate above its null baseline that makes a variant elevated risk"),
    ("--flip-rate-high", "flip_rate_high", "flip rate above its null baseline that makes a variant high risk"),
    ("--srs-increase-elevated", "srs_increase_elevated", "SRS increase (fraction, above its null) for elevated risk"),
    ("--srs-increase-high", "srs_increase_high", "SRS increase (fraction, above its null) for high risk"),
    ("--alpha", "alpha", "BH q-value at or below which a shift toward the stereotype is significant"),
    ("--max-reference-position-share", "max_reference_position_share",
     "largest share of one shown letter (by its CI's lower bound) a valid dense reference may have (default 0.5)"),
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
    p.set_defaults(func=run)


def risk_thresholds(args, manifest: dict):
    """Defaults, then the run's study thresholds, then the command line."""
    given = {dest: getattr(args, dest) for _, dest, _ in RISK_OPTIONS if getattr(args, dest, None) is not None}
    return replace(run_thresholds(manifest), **given)


def run(args) -> int:
    run_dir = resolve_run(args.run, Path(args.reports))
    manifest = load_manifest(run_dir)
    listed = run_protocols(manifest)
    if args.protocol is not None and args.protocol not in listed:
        raise AuditorError(f"--protocol {args.protocol}: {run_dir} was scored on {', '.join(listed)} (the "
                           "study's protocols)")
    path = write_report(run_dir, risk_thresholds(args, manifest), args.protocol)
    print(f"report: {path}\nhtml: {path.parent / 'report.html'}\nsummary: {path.parent / 'summary.json'}")
    return 0
