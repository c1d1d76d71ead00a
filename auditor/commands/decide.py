"""`auditor decide RUN --max-size 300MB --min-decode-tps 20 --max-grade low --min-same-top 0.8`: which variant
to ship under a budget.

Joins each (variant, backend)'s measured size, bits/weight, decode speed and peak
memory (``auditor measure`` figures in the run), its risk grade and accuracy
(the run's overview) and its fidelity to dense on the same prompts
(``auditor.analysis.fidelity``), then prints the variants that meet every
constraint (ranked), the Pareto front, and, when nothing fits, the nearest
variant and what it misses (``auditor.view.decision``). A figure that was not
measured never passes a constraint.

Exit codes: 0 at least one variant fits; 1 nothing fits; 2 bad input.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.view.decision import GRADE_ORDER, Constraints, decide, decision_rows
from auditor.view.run import RunView
from auditor.view.runs import resolve_run
from auditor.view.tables_csv import run_tables, write_csv_tables

EXIT_NOTHING_FITS = 1

#: Size units (case-insensitive): decimal KB/MB/GB/TB, binary KiB/MiB/GiB/TiB.
SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

#: (flag, Constraints field, parser kind, help).
OPTIONS = (
    ("--max-size", "max_size_bytes", "size", "largest size on disk, e.g. 300MB, 1.5GB, 512MiB (B, KB, MB, GB, KiB, "
                                             "MiB, GiB; a bare number is bytes)"),
    ("--min-decode-tps", "min_decode_tokens_per_s", "number", "smallest decode speed, tokens/s"),
    ("--max-peak-memory", "max_peak_rss_bytes", "size", "largest peak memory (resident set), e.g. 2GB"),
    ("--max-grade", "max_grade", "grade", f"highest risk grade allowed ({', '.join(GRADE_ORDER)}); inconclusive "
                                          "and n/a never meet it"),
    ("--min-same-top", "min_same_top", "share", "smallest share of prompts whose top option equals dense's, "
                                                "e.g. 0.8 or 80%%"),
    ("--max-kl", "max_kl", "number", "largest mean KL(dense || variant) over the three option letters, nats"),
    ("--min-accuracy", "min_accuracy", "share", "smallest accuracy over all items, e.g. 0.6 or 60%%"),
)


def register(sub) -> None:
    p = sub.add_parser("decide", help="which variant to ship: the variants of RUN that meet size, speed, memory, "
                                      "risk and fidelity constraints, ranked, and the Pareto front",
                       epilog="Exit 0 when a variant fits, 1 when none does, 2 on bad input. Python API and the "
                              "rules: docs/api.md")
    p.add_argument("run", metavar="RUN", help="run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    for flag, dest, kind, text in OPTIONS:
        p.add_argument(flag, dest=dest, default=None, metavar={"size": "SIZE", "grade": "GRADE"}.get(kind, "X"),
                       help=text)
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--csv", type=Path, default=None, metavar="DIR",
                   help="also write records, overview, comparison, fidelity and decision tables as CSV into DIR")
    p.add_argument("--n-boot", dest="n_boot", default="1000", metavar="N",
                   help="bootstrap replicates of the run's intervals and the fidelity CIs (default 1000)")
    p.set_defaults(func=run)


def parse_size(text: str, flag: str = "--max-size") -> float:
    """Bytes of "300MB", "1.5 GiB", "4096" (case-insensitive units); AuditorError naming ``flag`` otherwise."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in SIZE_UNITS):
        raise AuditorError(f"{flag} {text!r}: expected a size such as 300MB, 1.5GB or 512MiB "
                           "(units B, KB, MB, GB, KiB, MiB, GiB)")
    return float(match.group(1)) * SIZE_UNITS.get(unit, 1)


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AuditorError(f"{flag} {text!r}: expected a number") from None
    if not value >= 0 or value == float("inf"):
        raise AuditorError(f"{flag} {text!r}: must be a finite number >= 0")
    return value


def _share(text: str, flag: str) -> float:
    stripped = str(text).strip()
    value = _number(stripped[:-1], flag) / 100 if stripped.endswith("%") else _number(stripped, flag)
    if value > 1:
        raise AuditorError(f"{flag} {text!r}: a share is between 0 and 1 (or 0% and 100%)")
    return value


def constraints_from_args(args) -> Constraints:
    """The Constraints of the command line; AuditorError (one line, exit 2) naming the bad option."""
    values = {}
    for flag, dest, kind, _ in OPTIONS:
        text = getattr(args, dest)
        if text is None:
            continue
        if kind == "size":
            values[dest] = parse_size(text, flag)
        elif kind == "share":
            values[dest] = _share(text, flag)
        elif kind == "grade":
            grade = " ".join(str(text).strip().lower().replace("-", " ").replace("_", " ").split())
            if grade not in GRADE_ORDER:
                raise AuditorError(f"{flag} {text!r}: valid grades are {', '.join(GRADE_ORDER)}")
            values[dest] = grade
        else:
            values[dest] = _number(text, flag)
    return Constraints(**values)


def _n_boot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise AuditorError(f"--n-boot {text!r}: expected a whole number >= 1")
    return value


def reference_notes(view: RunView) -> list[str]:
    """Why no compressed variant can meet a max-grade constraint: an invalid dense reference grades all INCONCLUSIVE."""
    validity = view.validity
    if validity is None or validity.valid:
        return []
    return [f"every grade is INCONCLUSIVE because {validity.short or 'the dense reference is not valid'}; "
            "size, speed and fidelity constraints still apply"]


def run(args) -> int:
    constraints = constraints_from_args(args)
    n_boot = _n_boot(args.n_boot)
    run_dir = resolve_run(args.run, Path(args.reports))
    view = RunView.load(run_dir, n_boot=n_boot)
    fidelity = view.fidelity
    rows = decision_rows(view.overview, fidelity, protocol=view.protocol, units=view.units)
    if not len(rows):
        raise AuditorError(f"{run_dir}: no variant with records or measurements to decide on")
    decision = decide(rows, constraints)
    notes = reference_notes(view)
    if args.csv is not None:
        table = decision.table.drop(columns=["risk_rank"])
        write_csv_tables(args.csv, run_tables(view, fidelity, table))
    if args.json:
        print(json.dumps(json_safe({"run": view.name, "notes": notes, **decision.to_dict()}), indent=2,
                         allow_nan=False))
    else:
        print(f"decide {view.name}")
        for note in notes:
            print(f"note: {note}")
        for line in decision.lines():
            print(line)
        if args.csv is not None:
            print(f"csv: {args.csv}")
    return 0 if len(decision.fits) else EXIT_NOTHING_FITS
