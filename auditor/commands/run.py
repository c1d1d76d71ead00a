"""`auditor run STUDY.toml`: run (or resume) a study; finished units are skipped.

Exit status: 0 when every unit finished; 3 (INCOMPLETE_EXIT) when some units failed (their
reasons are in the report, in `auditor status` and in failed/<unit>.json) and the rest ran;
2 (bad input) when a unit's predicted peak memory exceeds the machine's available memory (or
--memory-limit): refused before anything runs (auditor.study.memory_plan).
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
from auditor.core.progress import heartbeat_interval
from auditor.data.rundir import INCOMPLETE, UNIT_FAILED, RunStatus, run_status
from auditor.report.markdown import write_report
from auditor.study.estimate import estimate_plan, format_estimate
from auditor.study.rate_cache import RateCache
from auditor.study.memory_plan import GB, available_memory_bytes, format_memory, plan_memory, refusals
from auditor.study.model_shape import model_shape
from auditor.study.runner import RunPlan, plan_study, run_study, select_units
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
                   help="print the units, each one's predicted peak memory, the tokens each computes and the wall "
                        "time estimated from a short timing of each runtime kind on this machine (on a proxy of the "
                        "model built from its config: no weight is read); run nothing, write nothing in the run. "
                        "Each kind's timing is kept per machine ($AUDITOR_CACHE_DIR, default ~/.cache/auditor), so "
                        "a later plan of the same model shape takes seconds")
    p.add_argument("--retime", action="store_true",
                   help="with --plan: time every runtime kind anew instead of reading this machine's kept timings")
    p.add_argument("--only", action="append", default=None, metavar="SPEC",
                   help="run (or --plan) only this variant's units now, e.g. wanda@0.7 or dense-float32; repeat "
                        "for more. The rest stay pending: a later run without --only does them")
    p.add_argument("--plan-groups", type=int, default=None, metavar="N",
                   help="items timed per runtime kind by --plan, in the run's own forward passes of batch_size "
                        "items (default: four passes)")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                   help="memory the run may use, in GB (10^9 bytes), instead of what this machine has available "
                        "now: a unit whose predicted peak exceeds it is refused before anything runs")
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
    status = status or run_status(run_dir)
    if status.report_problems:  # a plot, report.md or an input changed since the report was written
        return "; ".join(status.report_problems)
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "summary.json is missing or unreadable"
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


def check_memory(plans: Iterable[RunPlan], limit_gb: float | None, *, show: bool = False) -> dict:
    """Predict every unit's peak memory from its model's config (no weights read) and refuse the run, before
    anything starts, when a unit exceeds `limit_gb` (default: the memory available now). Returns each run
    directory's ModelShape, for --plan. With `show`, prints the predicted peaks (--plan)."""
    if limit_gb is not None and not limit_gb > 0:
        raise AuditorError(f"--memory-limit must be a positive number of GB, got {limit_gb}")
    available = limit_gb * GB if limit_gb is not None else available_memory_bytes()
    shapes, refused = {}, []
    for plan in plans:
        ctx = plan.context
        shapes[plan.run_dir] = shape = model_shape(ctx.source, trust_remote_code=ctx.trust_remote_code)
        memory = plan_memory(plan, shape)
        if show:
            print(format_memory(memory, available, limit_gb is not None))
        refused += refusals(memory, available, limit_given=limit_gb is not None)
    for line in refused:
        print(f"auditor: refused: {line}", file=sys.stderr)
    if refused:
        raise AuditorError(f"{len(refused)} unit(s) refused: predicted peak memory above {available / GB:.1f} GB; "
                           "nothing was run")
    return shapes


def run(args) -> int:
    heartbeat_interval()  # AUDITOR_HEARTBEAT_S is input too: refused before any run directory exists
    study = load_study(args.study)
    execution = study.execution
    if args.executor:
        execution = replace(execution, executor=args.executor)
    if args.ray_address:
        execution = replace(execution, ray_address=args.ray_address)
    study = replace(study, execution=execution, trust_remote_code=args.trust_remote_code)
    if args.out:
        study = replace(study, output_dir=os.path.abspath(args.out))
    if args.retime and not args.plan:
        raise AuditorError("--retime applies to --plan only (it re-measures the plan's timings)")
    if args.plan:
        if args.plan_groups is not None and args.plan_groups < 2:
            raise AuditorError(f"--plan-groups must be >= 2, got {args.plan_groups}")
        plans = [replace(plan, units=select_units(plan, args.only)) for plan in plan_study(study)]
        shapes = check_memory(plans, args.memory_limit, show=True)
        cache = RateCache()
        for plan in plans:
            print(format_estimate(estimate_plan(plan, n_groups=args.plan_groups, shape=shapes[plan.run_dir],
                                                cache=cache, retime=args.retime)))
        return 0
    try:
        check_memory([replace(plan, units=select_units(plan, args.only)) for plan in plan_study(study)],
                     args.memory_limit)
        run_dirs = run_and_report(study, force=args.force, only=args.only)
    except AuditorError as exc:  # name the flag the user gave, not the study key it overrode
        if not args.out:
            raise
        raise AuditorError(str(exc).replace(f"check output_dir in {study.source}", "check --out")) from None
    for run_dir in run_dirs:
        print(f"run directory: {run_dir}\nreport: {run_dir / 'report.md'}")
    return completion_exit(run_dirs, partial=args.only is not None)
