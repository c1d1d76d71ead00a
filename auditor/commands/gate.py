"""`auditor gate RUN --max-flip-rate X ...`: exit 0 when every variant meets the thresholds, 1 otherwise.

Only the thresholds given are checked; a study file (`--study`), or the study a
run was made from (its manifest), may set defaults, and command-line values win.
`--junit FILE` writes JUnit XML with one test case per variant, so CI systems
show each variant as a test.

Exit codes: 0 every variant passes; 1 a variant breaks a threshold; 2 bad input;
EXIT_INVALID_REFERENCE (3) the dense reference is not a valid yardstick (it
answers by position, or its disambiguated accuracy is not above chance; see
`auditor.analysis.validity`), so the verdicts are INCONCLUSIVE. It is checked
after completeness (EXIT_INCOMPLETE wins); `--accept-invalid-reference` records the finding and judges the
thresholds anyway. The JUnit file has a "dense reference validity" test case
that fails (type InvalidReference) in that case.

Completeness is part of the verdict: a run whose planned units are not all
finished and verified (interrupted, failed, damaged) exits EXIT_INCOMPLETE, with
a JUnit failure per missing unit, unless `--allow-incomplete` is given. That
check is separate from the thresholds' verdict (docs/study.md lists every code).
"""
from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

from auditor.analysis.verdicts import GateThresholds, check_gate, thresholds_from_mapping
from auditor.core.errors import AuditorError
from auditor.core.files import write_text
from auditor.data.rundir import RunStatus, load_manifest, manifest_thresholds, run_status
from auditor.study.spec import load_study
from auditor.view.run import KIND_VARIANT, RunView
from auditor.view.runs import resolve_run

#: Exit code when the dense reference is not valid (verdicts INCONCLUSIVE) and --accept-invalid-reference is absent.
EXIT_INVALID_REFERENCE = 3
#: Exit code of a gate on a run that is not complete (planned units pending or damaged).
EXIT_INCOMPLETE = 4

GATE_OPTIONS = (
    ("--max-flip-rate", "max_flip_rate", "largest allowed flip rate (unbiased -> biased), e.g. 0.1"),
    ("--max-srs-increase", "max_srs_increase", "largest allowed SRS(variant) - SRS(dense), as a fraction, e.g. 0.05"),
    ("--max-shift-q", "max_shift_q",
     "significance level: fail when the shift toward the stereotype (item-level SRS increase and direction "
     "tests) has BH q <= this"),
    ("--max-unknown-drop", "max_unknown_drop",
     "largest allowed unknown-rate(dense) - unknown-rate(variant) on ambiguous items (abstention loss)"),
    ("--min-accuracy", "min_accuracy", "smallest allowed accuracy over all items"),
    ("--max-accuracy-drop", "max_accuracy_drop", "largest allowed accuracy(dense) - accuracy(variant)"),
)


def register(sub) -> None:
    p = sub.add_parser("gate", help="CI gate: exit 1 when a variant of RUN breaks a threshold, 0 otherwise")
    p.add_argument("run", metavar="RUN", help="run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    for flag, dest, text in GATE_OPTIONS:
        p.add_argument(flag, dest=dest, type=float, default=None, metavar="X", help=text)
    p.add_argument("--max-mcnemar-q", dest="max_shift_q", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--accept-invalid-reference", action="store_true",
                   help=f"judge the thresholds even when the dense reference is not valid (else exit "
                        f"{EXIT_INVALID_REFERENCE})")
    p.add_argument("--study", type=Path, default=None, help="study TOML whose [thresholds] table sets defaults")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE", help="write JUnit XML (one test case per variant)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help=f"judge the finished units of an incomplete run instead of failing it (exit {EXIT_INCOMPLETE})")
    p.set_defaults(func=run)


def gate_thresholds(args, manifest: dict):
    """The run's study thresholds, then --study FILE's, then the command line; only gate keys are used."""
    _, values = thresholds_from_mapping(manifest_thresholds(manifest), "manifest.json thresholds")
    if args.study is not None:
        _, from_study = thresholds_from_mapping(load_study(args.study).thresholds, str(args.study))
        values.update(from_study)
    values.update({dest: getattr(args, dest) for _, dest, _ in GATE_OPTIONS if getattr(args, dest) is not None})
    for key, value in values.items():
        if value < 0:
            raise AuditorError(f"--{key.replace('_', '-')}: must be >= 0, got {value:g}")
    thresholds = GateThresholds(**values)
    if not thresholds.given():
        raise AuditorError("gate: no thresholds given; pass e.g. --max-flip-rate 0.1 or --study FILE with a "
                           "[thresholds] table (" + ", ".join(flag for flag, _, _ in GATE_OPTIONS) + ")")
    return thresholds


def junit_xml(run_name: str, results, reference=None, accepted: bool = False, verdicts=None,
              missing: tuple = ()) -> str:
    """JUnit XML: a testsuite for the run, one testcase per (variant, runtime), a failure per broken threshold.

    ``reference`` (a ReferenceValidity) adds a "dense reference validity" testcase, failed with type
    InvalidReference when the reference is not valid and ``accepted`` is False; ``verdicts`` maps
    (variant, backend) to its Verdict, whose level and lines go to the testcase's system-out.
    ``missing`` (rundir.UnitStatus of planned units that are not finished) adds one failed
    testcase per unit, so an incomplete run cannot look green.
    """
    invalid = reference is not None and not reference.valid and not accepted
    failures = sum(1 for r in results if not r.passed) + int(invalid) + len(missing)
    tests = len(results) + int(reference is not None) + len(missing)
    suites = ET.Element("testsuites", name="auditor gate", tests=str(tests), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name=f"auditor gate {run_name}", tests=str(tests),
                          failures=str(failures), errors="0", skipped="0")
    for u in missing:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}.units", name=u.id, time="0")
        why = f"unit {u.state}" + (f": {u.problem}" if u.problem else ": not scored")
        fail = ET.SubElement(case, "failure", message=why, type="IncompleteRun")
        fail.text = f"{u.variant} on {u.backend}, shard {u.shard}: {why}"
    if reference is not None:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}",
                             name="dense reference validity", time="0")
        if invalid:
            fail = ET.SubElement(case, "failure", message="; ".join(reference.findings), type="InvalidReference")
            fail.text = reference.summary
        out = ET.SubElement(case, "system-out")
        out.text = reference.summary + (" Accepted by --accept-invalid-reference." if accepted and
                                        not reference.valid else "")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}",
                             name=f"{r.variant} [{r.backend}]", time="0")
        if r.failures:
            fail = ET.SubElement(case, "failure", message="; ".join(r.failures), type="ThresholdExceeded")
            fail.text = "\n".join(r.failures)
        out = ET.SubElement(case, "system-out")
        verdict = (verdicts or {}).get((r.variant, r.backend))
        lines = [f"verdict {verdict.level.upper()}: " + "; ".join(verdict.reasons)] if verdict else []
        out.text = "\n".join(lines + list(r.checks))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def completeness_lines(status: RunStatus) -> list[str]:
    """What the gate says about a run's planned units: one line per missing unit, or that none is missing."""
    if not status.units:
        return ["completeness not checked: the manifest plans no units (a hand-made or older run)"]
    if status.is_complete:
        return [f"complete: {len(status.units)} of {len(status.units)} units finished and verified"]
    return [status.incomplete_text()] + [f"MISSING {u.id} ({u.state}{': ' + u.problem if u.problem else ''})"
                                         for u in status.missing]


def run(args) -> int:
    run_dir = resolve_run(args.run, Path(args.reports))
    manifest = load_manifest(run_dir)
    thresholds = gate_thresholds(args, manifest)
    status = run_status(run_dir, manifest)
    view = RunView.load(run_dir)
    shown = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in thresholds.given().items())
    print(f"gate {view.name}: {shown}")
    for line in completeness_lines(status):
        print(line)
    incomplete = not status.is_complete and not args.allow_incomplete
    rows = [r for r in view.overview.to_dict(orient="records") if r["kind"] == KIND_VARIANT]
    if not rows and not incomplete:
        raise AuditorError(f"{run_dir}: no compressed variant with records to gate")
    results = [check_gate(r, thresholds) for r in rows]
    reference = view.validity
    invalid = reference is not None and not reference.valid
    if invalid:
        print(f"{'ACCEPTED' if args.accept_invalid_reference else 'FAIL'} invalid dense reference: "
              + "; ".join(reference.findings))
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'} {r.variant} [{r.backend}]")
        for failure in r.failures:
            print(f"    {failure}")
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} variants pass")
    if incomplete:
        print(f"FAIL incomplete run: {len(status.missing)} of {len(status.units)} planned units not scored "
              f"(exit {EXIT_INCOMPLETE}; --allow-incomplete judges the finished units only)")
    elif status.missing:
        print(f"--allow-incomplete: judged {status.n_finished} of {len(status.units)} planned units")
    if args.junit is not None:
        try:
            write_text(args.junit, junit_xml(view.name, results, reference, args.accept_invalid_reference,
                                             {(v.variant, v.backend): v for v in view.verdicts},
                                             status.missing if incomplete else ()))
        except OSError as exc:
            raise AuditorError(f"{args.junit}: cannot write JUnit XML ({exc.strerror})") from None
        print(f"junit: {args.junit}")
    if incomplete:
        return EXIT_INCOMPLETE
    if invalid and not args.accept_invalid_reference:
        print(f"verdicts INCONCLUSIVE: exit {EXIT_INVALID_REFERENCE} (--accept-invalid-reference judges the "
              "thresholds anyway)")
        return EXIT_INVALID_REFERENCE
    return 1 if failed else 0
