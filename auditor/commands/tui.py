"""`auditor tui [RUN]`: browse run directories in the terminal (read-only)."""
from __future__ import annotations

from pathlib import Path

from auditor.commands.decide import add_constraint_flags, flag_constraints
from auditor.core.errors import AuditorError
from auditor.tui.app import AuditorApp
from auditor.view.runs import resolve_run


def register(sub) -> None:
    p = sub.add_parser("tui", help="terminal UI over run directories: variants, categories, items, compare")
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="run directory or name to open (default: runs list)")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    add_constraint_flags(p, "decision screen (`d`) constraints, each replacing the same key of the study's [decision]")
    p.set_defaults(func=run)


def run(args) -> int:
    constraints = flag_constraints(args)  # a typo in a flag is refused before the terminal is taken over
    reports = Path(args.reports)
    run_dir = resolve_run(args.run, reports) if args.run else None
    if run_dir is not None and not (run_dir / "manifest.json").is_file():
        raise AuditorError(f"{run_dir}: not a run directory (no manifest.json)")
    # A run given by path may live outside --reports: list its siblings then.
    AuditorApp(run_dir.parent if run_dir is not None and args.reports == "reports" else reports, run_dir,
               constraints).run()
    return 0
