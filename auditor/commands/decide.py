"""`auditor decide RUN --max-size 300MB --min-decode-tps 20 --max-grade low --min-same-top 0.8`: which variant
to ship under a budget.

Joins each (variant, backend)'s measured size, bits/weight, decode speed and peak
memory (``auditor measure`` figures in the run), its risk grade and accuracy
(the run's overview) and its fidelity to dense on the same prompts
(``auditor.analysis.fidelity``), then prints the variants that meet every
constraint (ranked), the Pareto front, and, when nothing fits, the nearest
variant and what it misses (``auditor.view.decision``). A figure that was not
measured never passes a constraint.

The constraints start from the [decision] table of the study the run was made
from (kept in its manifest), then `--study FILE`'s [decision] table, then the
flags: each later source overrides the keys it sets. The table's keys are the
flags with "_" for "-" (``auditor.study.spec.DECISION_KEYS``), parsed by the same
functions, so a value means the same in both places.

Exit codes: 0 at least one variant fits; 1 nothing fits; 2 bad input.
"""
from __future__ import annotations

import json
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.data.rundir import load_manifest
from auditor.study.spec import DECISION_GRADES, DECISION_KEYS, decision_value, load_study, parse_size
from auditor.view.decision import Constraints, reference_notes, run_decision, study_constraints
from auditor.view.run import RunView
from auditor.view.runs import resolve_run
from auditor.view.tables_csv import run_tables, write_csv_tables

EXIT_NOTHING_FITS = 1

# The command's size syntax is the study file's: `parse_size` is re-exported for callers of this module.
__all__ = ["EXIT_NOTHING_FITS", "OPTIONS", "chosen_constraints", "flag_constraints", "parse_size", "register", "run"]

#: Help of each flag; the flags themselves are the study's [decision] keys with "-" for "_".
HELP = {
    "max_size": "largest size on disk, e.g. 300MB, 1.5GB, 512MiB (B, KB, MB, GB, KiB, MiB, GiB; a bare number is "
                "bytes)",
    "min_decode_tps": "smallest decode speed, tokens/s",
    "max_peak_memory": "largest peak memory (resident set), e.g. 2GB",
    "max_grade": f"highest risk grade allowed ({', '.join(DECISION_GRADES)}); inconclusive and n/a never meet it",
    "min_same_top": "smallest share of prompts whose top option equals dense's, e.g. 0.8 or 80%%",
    "max_kl": "largest mean KL(dense || variant) over the three option letters, nats",
    "min_accuracy": "smallest accuracy over all items, e.g. 0.6 or 60%%",
}
#: (flag, study key, Constraints field, help).
OPTIONS = tuple((f"--{key.replace('_', '-')}", key, field, HELP[key]) for key, (field, _) in DECISION_KEYS.items())


def register(sub) -> None:
    p = sub.add_parser("decide", help="which variant to ship: the variants of RUN that meet size, speed, memory, "
                                      "risk and fidelity constraints, ranked, and the Pareto front",
                       epilog="Exit 0 when a variant fits, 1 when none does, 2 on bad input. Python API and the "
                              "rules: docs/api.md")
    p.add_argument("run", metavar="RUN", help="run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    add_constraint_flags(p)
    p.add_argument("--study", type=Path, default=None, metavar="FILE",
                   help="study TOML whose [decision] table sets the constraints (default: the [decision] table of "
                        "the study the run was made from); flags override it key by key")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--csv", type=Path, default=None, metavar="DIR",
                   help="also write records, overview, comparison, fidelity and decision tables as CSV into DIR")
    p.add_argument("--n-boot", dest="n_boot", default="1000", metavar="N",
                   help="bootstrap replicates of the run's intervals and the fidelity CIs (default 1000)")
    p.set_defaults(func=run)


def add_constraint_flags(parser, title: str | None = None) -> None:
    """--max-size, --min-decode-tps, ... (one per [decision] key) on `parser`, in a group headed `title` if given."""
    where = parser.add_argument_group(title) if title else parser
    for flag, key, field, text in OPTIONS:
        where.add_argument(flag, dest=field, default=None,
                           metavar={"size": "SIZE", "grade": "GRADE"}.get(DECISION_KEYS[key][1], "X"), help=text)


def flag_constraints(args) -> dict:
    """{Constraints field: value} of the flags given, each parsed as its [decision] key is."""
    return {field: decision_value(key, getattr(args, field), flag)
            for flag, key, field, _ in OPTIONS if getattr(args, field) is not None}


def chosen_constraints(args, run_dir: Path, given: dict) -> tuple[Constraints, str]:
    """(constraints, where they came from): the run's study [decision], then --study FILE's, then ``given``
    (``flag_constraints``); a later source overrides the keys it sets."""
    values = study_constraints(load_manifest(run_dir), str(run_dir / "manifest.json")).given()
    sources = ["the run's study [decision]"] if values else []
    if args.study is not None:
        study = load_study(args.study).decision
        values.update(study)
        sources += [f"{args.study} [decision]"] if study else []
    values.update(given)
    sources += ["flags"] if given else []
    return Constraints(**values), " < ".join(sources) or "none given"


def _n_boot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise AuditorError(f"--n-boot {text!r}: expected a whole number >= 1")
    return value


def run(args) -> int:
    given = flag_constraints(args)  # the user's own typo first, before any file is read
    n_boot = _n_boot(args.n_boot)
    run_dir = resolve_run(args.run, Path(args.reports))
    constraints, origin = chosen_constraints(args, run_dir, given)
    view = RunView.load(run_dir, n_boot=n_boot)
    decision = run_decision(view, constraints)
    if not len(decision.table):
        raise AuditorError(f"{run_dir}: no variant with records or measurements to decide on")
    notes = reference_notes(view)
    if args.csv is not None:
        table = decision.table.drop(columns=["risk_rank"])
        write_csv_tables(args.csv, run_tables(view, view.fidelity, table))
    if args.json:
        print(json.dumps(json_safe({"run": view.name, "constraints_from": origin, "notes": notes,
                                    **decision.to_dict()}), indent=2, allow_nan=False))
    else:
        print(f"decide {view.name} (constraints from {origin})")
        for note in notes:
            print(f"note: {note}")
        for line in decision.lines():
            print(line)
        if args.csv is not None:
            print(f"csv: {args.csv}")
    return 0 if len(decision.fits) else EXIT_NOTHING_FITS
