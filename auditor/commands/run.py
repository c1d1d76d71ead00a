"""`auditor run STUDY.toml`: run (or resume) a study; finished units are skipped.

Exit status: 0 when every unit finished; 3 (INCOMPLETE_EXIT) when some units failed (their
reasons are in the report, in `auditor status` and in failed/<unit>.json) and the rest ran.
With `--only`, 0 when the named variants' units finished: the others stay pending, the run reads
"incomplete" (and a gate fails it) until a run without --only does them.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from auditor.core.errors import AuditorError
from auditor.data.rundir import INCOMPLETE, UNIT_FAILED, RunStatus, run_status
from auditor.report.markdown import write_report
from auditor.study.estimate import estimate_plan, format_estimate
from auditor.study.runner import plan_study, run_study, select_units
from auditor.study.spec import Study, load_study

log = logging.getLogger(__name__)

def register(sub) -> None:
    p = sub.add_parser("run", help="run or resume a study file (models x compressor specs x seeds)")
    p.add_argument("study", help="study file (TOML); see docs/study.md and studies/*.toml")
    p.add_argument("--force", action="store_true",
                   help="reuse a run directory made by a changed study: keep its units whose definition is "
                        "unchanged, move the rest to superseded/ and redo them")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="override the study's execution.executor")
    p.add_argument("--ray-address", default=None, help="override execution.ray_address (default: a local cluster)")
    p.add_argument("--out", default=None, help="override output_dir (a relative path here is relative to the "
                                               "current folder)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code shipped in a model directory (off by default; a study file cannot enable it)")
    p.add_argument("--plan", action="store_true",
                   help="print the units, the tokens each computes and the wall time estimated from a short timing "
                        "of each runtime kind on this machine; run nothing, write nothing")
    p.add_argument("--only", action="append", default=None, metavar="SPEC",
                   help="run (or --plan) only this variant's units now, e.g. wanda@0.7 or dense-float32; repeat "
                        "for more. The rest stay pending: a later run without --only does them")
    p.add_argument("--plan-groups", type=int, default=None, metavar="N",
                   help="items timed per runtime kind by --plan (default: twice the study's batch_size)")
    p.set_defaults(func=run)


def run_and_report(study: Study, *, force: bool, only: list[str] | None = None) -> list[Path]:
    """Run `study` (the variants in `only`, when given), then write each run's report (with the thresholds its
    manifest records) where it is missing or stale.

    The runner removes a run's report whenever it computes a unit, so a missing report is a stale one; a
    report written by `auditor report` while the run was going describes the units finished then, and is
    stale too (`stale_report`).
    """
    run_dirs = run_study(study, force=force, only=only)
    report_missing(run_dirs)
    return run_dirs


INCOMPLETE_EXIT = 3


def completion_exit(run_dirs: Iterable[Path], *, partial: bool = False) -> int:
    """0 when every run finished all its units, INCOMPLETE_EXIT (after saying which) otherwise.

    `partial` (a run with --only): units left pending are expected; only failed units make it incomplete.
    """
    code = 0
    for run_dir in run_dirs:
        status = run_status(run_dir)
        if partial and status.state == INCOMPLETE and not any(u.state == UNIT_FAILED for u in status.units):
            print(f"{run_dir}: {len(status.missing)} of {len(status.units)} planned units left for a later "
                  "run without --only", file=sys.stderr)
        elif status.state == INCOMPLETE:
            print(f"{run_dir}: run incomplete: {status.detail}", file=sys.stderr)
            code = INCOMPLETE_EXIT
    return code


def stale_report(run_dir: Path, status: RunStatus | None = None) -> str:
    """Why the run's report does not describe the run as it is now ("" when it does).

    summary.json, written with report.md, records the completeness the report saw (state, planned and
    finished units, what was missing); a report written while a process ran the study, or before a unit
    was redone, differs from the run's status now.
    """
    if not (run_dir / "report.md").is_file():
        return "no report.md"
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "summary.json is missing or unreadable"
    status = status or run_status(run_dir)
    seen = summary.get("completeness") if isinstance(summary, dict) else "?"
    now = None if not status.units else {
        "state": status.state, "n_planned": len(status.units), "n_finished": status.n_finished,
        "missing": [{"unit": u.id, "state": u.state, "problem": u.problem} for u in status.missing]}
    if seen != now:
        said = seen.get("state") if isinstance(seen, dict) else "unknown"
        return f"written when the run was {said}"
    return ""


def report_missing(run_dirs: Iterable[Path]) -> None:
    """Write each run's report where it is missing or stale (`stale_report`)."""
    for run_dir in run_dirs:
        why = stale_report(run_dir)
        if why:
            log.info("%s: writing the report (%s)", run_dir, why)
            write_report(run_dir)


def run(args) -> int:
    study = load_study(args.study)
    execution = study.execution
    if args.executor:
        execution = replace(execution, executor=args.executor)
    if args.ray_address:
        execution = replace(execution, ray_address=args.ray_address)
    study = replace(study, execution=execution, trust_remote_code=args.trust_remote_code)
    if args.out:
        study = replace(study, output_dir=os.path.abspath(args.out))
    if args.plan:
        if args.plan_groups is not None and args.plan_groups < 2:
            raise AuditorError(f"--plan-groups must be >= 2, got {args.plan_groups}")
        for plan in plan_study(study):
            plan = replace(plan, units=select_units(plan, args.only))
            print(format_estimate(estimate_plan(plan, n_groups=args.plan_groups)))
        return 0
    try:
        run_dirs = run_and_report(study, force=args.force, only=args.only)
    except AuditorError as exc:  # name the flag the user gave, not the study key it overrode
        if not args.out:
            raise
        raise AuditorError(str(exc).replace(f"check output_dir in {study.source}", "check --out")) from None
    for run_dir in run_dirs:
        print(f"run directory: {run_dir}\nreport: {run_dir / 'report.md'}")
    return completion_exit(run_dirs, partial=args.only is not None)
