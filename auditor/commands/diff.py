"""`auditor diff RUN_A RUN_B`: the variants two runs share, with the change of every grade, key metric
(accuracy, SRS, unknown-rate, flip rate, fidelity) and measurement (size, decode speed), and whether each change
exceeds its interval (the two runs' 95% intervals do not overlap; ``auditor.view.diff``); then the variants
present in only one of the runs.

Exit codes: 0 (a report, not a verdict); 2 bad input.
"""
from __future__ import annotations

import json
from pathlib import Path

from auditor.analysis.fidelity import fidelity_table
from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.view.diff import diff_rows, run_diff
from auditor.view.run import RunView
from auditor.view.runs import resolve_run


def register(sub) -> None:
    p = sub.add_parser("diff", help="compare two runs: shared variants' grade, metric and measurement changes, "
                                    "and the variants in one run only",
                       epilog="A change exceeds its interval when the two runs' 95%% intervals do not overlap. "
                              "Python API: docs/api.md")
    p.add_argument("run_a", metavar="RUN_A", help="the first (baseline) run directory, or a run name under --reports")
    p.add_argument("run_b", metavar="RUN_B", help="the second run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    p.add_argument("--json", action="store_true", help="print the diff as JSON")
    p.add_argument("--n-boot", dest="n_boot", default="1000", metavar="N",
                   help="bootstrap replicates of each run's intervals (default 1000)")
    p.set_defaults(func=run)


def _rows(run_dir: Path, n_boot: int):
    view = RunView.load(run_dir, n_boot=n_boot)
    return view, diff_rows(view.overview, fidelity_table(view.records, n_boot=n_boot), protocol=view.protocol)


def _item_ids(view: RunView) -> list[str]:
    """The items a run scored (its records), else its item table."""
    frame = view.records if len(view.records) else view.items
    return list(frame["item_id"].unique()) if "item_id" in frame.columns else []


def run(args) -> int:
    try:
        n_boot = int(args.n_boot)
    except ValueError:
        n_boot = 0
    if n_boot < 1:
        raise AuditorError(f"--n-boot {args.n_boot!r}: expected a whole number >= 1")
    dir_a, dir_b = resolve_run(args.run_a, Path(args.reports)), resolve_run(args.run_b, Path(args.reports))
    view_a, rows_a = _rows(dir_a, n_boot)
    view_b, rows_b = _rows(dir_b, n_boot)
    if view_a.protocol != view_b.protocol:
        raise AuditorError(f"{dir_a} was analysed on protocol {view_a.protocol}, {dir_b} on {view_b.protocol}: "
                           "runs are compared on one protocol")
    diff = run_diff(rows_a, rows_b, str(dir_a), str(dir_b), items_a=_item_ids(view_a), items_b=_item_ids(view_b))
    if args.json:
        print(json.dumps(json_safe(diff.to_dict()), indent=2, allow_nan=False))
    else:
        for line in diff.lines():
            print(line)
    return 0
