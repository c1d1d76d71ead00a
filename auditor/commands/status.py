"""`auditor status RUN`: which units of a run are finished, and whether a process is running it.

Every finished unit's files are verified against its commit record (size and sha256); a
damaged unit is listed as `damaged` with the file that differs. Exit 0 whatever the run's
state (it is a report, not a verdict; `auditor gate` fails an incomplete run).
"""
from __future__ import annotations

from auditor.data.rundir import run_status


def register(sub) -> None:
    p = sub.add_parser("status", help="show a run directory's units (finished / pending) and state")
    p.add_argument("run", help="run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (for a bare run name)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path


    run_dir = Path(args.run)
    if not run_dir.is_dir() and (Path(args.reports) / args.run).is_dir():
        run_dir = Path(args.reports) / args.run
    status = run_status(run_dir)
    if args.json:
        doc = {**asdict(status), "run_dir": str(status.run_dir), "n_finished": status.n_finished}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"run {status.run_dir} (study {status.study}, hash {status.study_hash[:12]})")
    print(f"state: {status.state}" + (f" - {status.detail}" if status.detail else ""))
    report = "yes" if status.has_report else "no"
    if status.report_problems:  # the report or a file it was written from changed since it was written
        report = f"damaged ({'; '.join(status.report_problems)}; `auditor report` rewrites it)"
    print(f"units: {status.n_finished}/{len(status.units)} finished; report: {report}")
    width = max((len(u.id) for u in status.units), default=0)
    for u in status.units:
        peak = f"  peak {u.peak_rss_bytes / 1e9:.2f} GB" if u.peak_rss_bytes else ""
        print(f"  {u.state:<9} {u.id:<{width}}  {u.variant} on {u.backend}{peak}"
              + (f"  - {u.problem}" if u.problem else ""))
    measured = [u for u in status.units if u.peak_rss_bytes]
    if measured:  # the run's peak memory, whichever invocations ran its units (a resumed run included)
        top = max(measured, key=lambda u: u.peak_rss_bytes)
        print(f"highest unit peak memory: {top.peak_rss_bytes / 1e9:.2f} GB ({top.id}; {len(measured)} of "
              f"{status.n_finished} finished units measured)")
    return 0
