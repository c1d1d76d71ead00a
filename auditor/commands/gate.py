"""`auditor gate RUN --max-flip-rate X ...`: exit 0 when every variant meets the thresholds, 1 otherwise.

Only the thresholds given are checked; a study file (`--study`), or the study a
run was made from (its manifest), may set defaults, and command-line values win.
`--junit FILE` writes JUnit XML with one test case per variant, so CI systems
show each variant as a test. `--json` prints the verdict as one JSON object
instead of the text (`gate_json`: per variant each check's threshold, bound,
compared value and outcome, and the exit code), with the same exit codes.

Exit codes: 0 every variant passes; EXIT_THRESHOLD (1) a variant breaks a threshold; 2 bad input;
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

The variants judged are the ones the study planned (the manifest's units), not the
ones whose files happen to be there: with `--allow-incomplete`, a planned variant
with no finished unit is still NOT JUDGED and exits EXIT_INCOMPLETE, and so does a
planned dense reference with no finished unit (its validity cannot be checked) or a
damaged run-level file (items.parquet, a failure record). A run with no dense
records at all has no reference to check: EXIT_INVALID_REFERENCE unless accepted.
Thresholds (flags, --study, the manifest) must be finite and in [0, 1]; anything
else is bad input (exit 2), so no value can switch a check off.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from auditor.analysis.verdicts import INCONCLUSIVE, GateThresholds, check_gate, thresholds_from_mapping
from auditor.core.errors import AuditorError
from auditor.core.files import json_safe, write_text
from auditor.data.rundir import (
    FINISHED,
    SCORE,
    RunStatus,
    items_problem,
    load_manifest,
    manifest_thresholds,
    run_status,
)
from auditor.study.spec import load_study, threshold_problem
from auditor.view.run import KIND_REFERENCE, KIND_VARIANT, RunView, variant_kind
from auditor.view.runs import resolve_run

#: Exit code when the dense reference is not valid (verdicts INCONCLUSIVE) and --accept-invalid-reference is absent.
EXIT_INVALID_REFERENCE = 3
#: Exit code of a gate on a run that is not complete (planned units pending or damaged).
EXIT_INCOMPLETE = 4
#: Exit code when a judged variant breaks a threshold.
EXIT_THRESHOLD = 1
#: The `exit_reason` of `gate --json`, per exit code.
EXIT_REASONS = {0: "pass", EXIT_THRESHOLD: "threshold", EXIT_INVALID_REFERENCE: "invalid_reference",
                EXIT_INCOMPLETE: "incomplete"}

GATE_OPTIONS = (
    ("--max-flip-rate", "max_flip_rate", "largest allowed flip rate (unbiased -> biased), e.g. 0.1"),
    ("--max-srs-increase", "max_srs_increase",
     "largest allowed upper 95% CI bound of SRS(variant) - SRS(dense), as a fraction, e.g. 0.05"),
    ("--max-directed-shift", "max_directed_shift",
     "largest allowed directed shift toward the stereotype (its upper CI bound), as a fraction, e.g. 0.05"),
    ("--max-shift-q", "max_shift_q",
     "significance level: fail when the directed shift toward the stereotype is positive and its template-level "
     "test has BH q <= this"),
    ("--max-unknown-drop", "max_unknown_drop",
     "largest allowed upper 95% CI bound of unknown-rate(dense) - unknown-rate(variant) (abstention loss)"),
    ("--min-accuracy", "min_accuracy", "smallest allowed lower 95% CI bound of the accuracy over all items"),
    ("--max-accuracy-drop", "max_accuracy_drop",
     "largest allowed upper 95% CI bound of accuracy(dense) - accuracy(variant)"),
)


def register(sub) -> None:
    p = sub.add_parser("gate", help="CI gate: exit 1 when a variant of RUN breaks a threshold, 0 otherwise")
    p.add_argument("run", metavar="RUN", help="run directory, or a run name under --reports")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    for flag, dest, text in GATE_OPTIONS:  # argparse reads "%" in a help as a format: "95%" must be "95%%"
        p.add_argument(flag, dest=dest, type=float, default=None, metavar="X", help=text.replace("%", "%%"))
    p.add_argument("--max-mcnemar-q", dest="max_shift_q", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--accept-invalid-reference", action="store_true",
                   help=f"judge the thresholds even when the dense reference is not valid (else exit "
                        f"{EXIT_INVALID_REFERENCE})")
    p.add_argument("--study", type=Path, default=None, help="study TOML whose [thresholds] table sets defaults")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE", help="write JUnit XML (one test case per variant)")
    p.add_argument("--json", action="store_true",
                   help="print the verdict as one JSON object (per variant and check: threshold, bound, value, "
                        "passed; the exit code) instead of text; same exit codes")
    p.add_argument("--allow-incomplete", action="store_true",
                   help=f"judge the finished units of an incomplete run instead of failing it (exit {EXIT_INCOMPLETE})")
    p.set_defaults(func=run)


def flag_values(args) -> dict[str, float]:
    """The gate thresholds given as flags, each finite and in [0, 1] (AuditorError naming the flag otherwise)."""
    values = {dest: getattr(args, dest) for _, dest, _ in GATE_OPTIONS if getattr(args, dest) is not None}
    for key, value in values.items():
        problem = threshold_problem(key, value)
        if problem:
            raise AuditorError(f"--{key.replace('_', '-')}: {problem}")
    return values


def gate_thresholds(args, manifest: dict, run_dir: Path | str = "RUN"):
    """The run's study thresholds, then --study FILE's, then the command line; only gate keys are used.

    Every value is checked (finite, in [0, 1]); a bad one is named with where it came from.
    """
    given = flag_values(args)  # the user's own typo first, before any file is read
    source = f"{Path(run_dir) / 'manifest.json'} thresholds"
    _, values = thresholds_from_mapping(manifest_thresholds(manifest), source)
    sources = dict.fromkeys(values, source)
    if args.study is not None:
        _, from_study = thresholds_from_mapping(load_study(args.study).thresholds, str(args.study))
        values.update(from_study)
        sources.update(dict.fromkeys(from_study, f"{args.study}: [thresholds]"))
    for key, value in values.items():
        problem = threshold_problem(key, value)
        if problem:
            raise AuditorError(f"{sources[key]}: {key} {problem}")
    values.update(given)
    try:
        thresholds = GateThresholds(**values)
    except AuditorError as exc:  # the thresholds' own checks (SpecError), one line and exit 2
        raise AuditorError(f"gate thresholds: {exc}") from None
    if not thresholds.given():
        raise AuditorError("gate: no thresholds given; pass e.g. --max-flip-rate 0.1 or --study FILE with a "
                           "[thresholds] table (" + ", ".join(flag for flag, _, _ in GATE_OPTIONS) + ")")
    return thresholds


def junit_xml(run_name: str, results, reference=None, accepted: bool = False, verdicts=None,
              missing: tuple = (), not_judged: tuple = (), reference_missing: str = "", damaged: tuple = ()) -> str:
    """JUnit XML: a testsuite for the run, one testcase per (variant, runtime), a failure per broken threshold.

    ``reference`` (a ReferenceValidity) adds a "dense reference validity" testcase, failed with type
    InvalidReference when the reference is not valid and ``accepted`` is False; ``verdicts`` maps
    (variant, backend) to its Verdict, whose level and lines go to the testcase's system-out.
    ``missing`` (rundir.UnitStatus of planned units that are not finished) adds one failed
    testcase per unit, so an incomplete run cannot look green. ``not_judged`` ((name, why) of planned
    variants with no finished unit) adds a failed testcase (type NotJudged) per variant;
    ``reference_missing`` (why there is no reference to check) fails the validity testcase (type
    MissingReference); each of ``damaged`` (rundir.RunStatus.problems: run-level files) adds a failed
    testcase (type DamagedFile).
    """
    invalid = reference is not None and not reference.valid and not accepted
    has_ref_case = reference is not None or bool(reference_missing)
    failures = (sum(1 for r in results if not r.passed) + int(invalid) + len(missing) + len(not_judged)
                + int(bool(reference_missing)) + len(damaged))
    tests = len(results) + int(has_ref_case) + len(missing) + len(not_judged) + len(damaged)
    suites = ET.Element("testsuites", name="auditor gate", tests=str(tests), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name=f"auditor gate {run_name}", tests=str(tests),
                          failures=str(failures), errors="0", skipped="0")
    for u in missing:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}.units", name=u.id, time="0")
        why = f"unit {u.state}" + (f": {u.problem}" if u.problem else ": not scored")
        fail = ET.SubElement(case, "failure", message=why, type="IncompleteRun")
        fail.text = f"{u.variant} on {u.backend}, shard {u.shard}: {why}"
    for problem in damaged:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}.files",
                             name=problem.split(" ", 1)[0].rstrip(":"), time="0")
        fail = ET.SubElement(case, "failure", message=problem, type="DamagedFile")
        fail.text = f"{problem}; `auditor run` on the study repairs the run"
    for name, why in not_judged:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}", name=name, time="0")
        fail = ET.SubElement(case, "failure", message=f"not judged: {why}", type="NotJudged")
        fail.text = f"{name}: planned by the study but not judged ({why}); the gate cannot vouch for it"
    if reference_missing:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.gate.{run_name}",
                             name="dense reference validity", time="0")
        fail = ET.SubElement(case, "failure", message=reference_missing, type="MissingReference")
        fail.text = f"the dense reference's validity cannot be checked: {reference_missing}"
    elif reference is not None:
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


def gate_json(view: RunView, thresholds: GateThresholds, status: RunStatus, results, not_judged,
              reference_missing: str, accepted: bool, lines: list[str], code: int) -> dict:
    """The gate's verdict as one JSON-ready object: what `auditor gate --json` prints.

    Each variant lists its checks with the threshold's name, its bound, the value compared with it (the 95%
    interval bound the limit applies to, or the BH q for max_shift_q), the point estimate and whether it passed;
    a variant whose own answers cannot carry a verdict has a failed "variant_validity" check (bound and value
    null). ``lines`` is the text the command prints without --json, ``exit_code`` the code it returns.
    """
    limits = thresholds.given()
    verdicts = {(v.variant, v.backend): v.level for v in view.verdicts}
    reference = view.validity

    def number(x: float) -> float | None:
        return None if math.isnan(x) else x

    variants = [{"name": f"{r.variant} [{r.backend}]", "variant": r.variant, "backend": r.backend,
                 "passed": r.passed, "verdict": verdicts.get((r.variant, r.backend)),
                 "checks": [{"threshold": key, "bound": limits.get(key), "value": number(value),
                             "estimate": number(estimate), "passed": ok, "text": text}
                            for (key, value, estimate, ok), text in zip(r.details, r.checks)]}
                for r in results]
    return {
        "run": view.name, "run_dir": str(view.run_dir), "thresholds": limits,
        "complete": status.is_complete, "missing_units": [u.id for u in status.missing],
        "damaged": list(status.problems),
        "reference": {"valid": None if reference is None else reference.valid, "accepted": accepted,
                      "findings": [] if reference is None else list(reference.findings),
                      "missing": reference_missing or None},
        "variants": variants,
        "not_judged": [{"name": name, "why": why} for name, why in not_judged],
        "n_passed": sum(r.passed for r in results), "n_variants": len(results) + len(not_judged),
        "passed": code == 0, "exit_code": code, "exit_reason": EXIT_REASONS[code], "lines": lines,
    }


def completeness_lines(status: RunStatus) -> list[str]:
    """What the gate says about a run's planned units: one line per missing unit, or that none is missing."""
    if not status.units:
        return ["completeness not checked: the manifest plans no units (a hand-made or older run)"]
    if status.is_complete:
        return [f"complete: {len(status.units)} of {len(status.units)} units finished and verified"]
    return [status.incomplete_text()] + [f"MISSING {u.id} ({u.state}{': ' + u.problem if u.problem else ''})"
                                         for u in status.missing]


def planned_variants(status: RunStatus) -> dict[tuple[str, str], list]:
    """(variant, backend) -> its planned scoring units, for every compressed variant and the dense reference the
    manifest plans (null baselines are not judged), in plan order."""
    planned: dict[tuple[str, str], list] = {}
    for u in status.units:
        if u.kind == SCORE and variant_kind(u.variant) in (KIND_VARIANT, KIND_REFERENCE):
            planned.setdefault((u.variant, u.backend), []).append(u)
    return planned


def unjudged(status: RunStatus, rows: list[dict]) -> tuple[list[tuple[str, str]], str]:
    """(planned compressed variants with no row to judge, as (name, why); why the dense reference is missing or "").

    A planned variant none of whose scoring units is finished has no records, so no row: it is not judged,
    whatever --allow-incomplete says. Likewise a planned dense reference with no finished unit.
    """
    judged = {(r["variant"], r["backend"]) for r in rows}
    out, reference = [], ""
    for (variant, backend), units in planned_variants(status).items():
        if any(u.state == FINISHED for u in units):
            continue
        why = "; ".join(sorted({u.state + (f": {u.problem}" if u.problem else "") for u in units}))
        if variant_kind(variant) == KIND_REFERENCE:
            reference = reference or f"dense reference on {backend} not scored ({why})"
        elif (variant, backend) not in judged:
            out.append((f"{variant} [{backend}]", f"no finished unit ({why})"))
    return out, reference


def _variant_finding(view: RunView, row: dict, accepted: bool) -> str:
    """Why a variant's own answers cannot carry a verdict (it answers by position or does not read the
    context), unless the reference itself is invalid (exit 3 covers that) or the user accepted invalidity."""
    if accepted or (view.validity is not None and not view.validity.valid):
        return ""
    verdict = next((v for v in view.verdicts if (v.variant, v.backend) == (row["variant"], row["backend"])), None)
    return verdict.summary.removeprefix("inconclusive: ") if verdict is not None and verdict.level == INCONCLUSIVE \
        else ""


def run(args) -> int:
    run_dir = resolve_run(args.run, Path(args.reports))
    manifest = load_manifest(run_dir)
    thresholds = gate_thresholds(args, manifest, run_dir)
    items = items_problem(run_dir, manifest)
    if items:  # the item table the verdicts are about: nothing is judged without it
        raise AuditorError(f"{run_dir / 'items.parquet'}: {items}; nothing judged (`auditor run` on the study "
                           "rewrites it)")
    status = run_status(run_dir, manifest)
    # a changed report (plot, report.md) or report input (measurements.json) counts as a damaged run file: a gate
    # must not pass a run whose published report differs from what was written (`auditor report` rewrites it)
    status = dataclasses.replace(status, problems=status.problems + status.report_problems)
    view = RunView.load(run_dir)
    shown = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in thresholds.given().items())
    lines: list[str] = []
    say = lines.append  # text lines; with --json they travel inside the one JSON object
    say(f"gate {view.name}: {shown}")
    for line in completeness_lines(status):
        say(line)
    incomplete = not status.is_complete and not args.allow_incomplete
    rows = [r for r in view.overview.to_dict(orient="records") if r["kind"] == KIND_VARIANT]
    not_judged, reference_missing = unjudged(status, rows)
    if not rows and not not_judged and not incomplete:
        raise AuditorError(f"{run_dir}: no compressed variant with records to gate")
    reference = view.validity
    results = [check_gate(r, thresholds, _variant_finding(view, r, args.accept_invalid_reference)) for r in rows]
    if reference is None and not reference_missing:
        reference_missing = "dense reference validity not checked: the run has no finished dense records"
    invalid = reference is not None and not reference.valid
    if invalid:
        say(f"{'ACCEPTED' if args.accept_invalid_reference else 'FAIL'} invalid dense reference: "
            + "; ".join(reference.findings))
    if reference_missing:
        say(f"FAIL {reference_missing}")
    for r in results:
        say(f"{'PASS' if r.passed else 'FAIL'} {r.variant} [{r.backend}]")
        for failure in r.failures:
            say(f"    {failure}")
    for name, why in not_judged:
        say(f"NOT JUDGED {name}: {why}")
    failed = [r for r in results if not r.passed]
    say(f"{len(results) - len(failed)} of {len(results) + len(not_judged)} variants pass"
        + (f" ({len(not_judged)} planned variant(s) not judged)" if not_judged else ""))
    # What --allow-incomplete cannot waive: a planned variant or reference with nothing scored, a damaged
    # run-level file. The gate cannot vouch for what it did not measure.
    unwaivable = bool(not_judged) or (bool(reference_missing) and any(
        variant_kind(v) == KIND_REFERENCE for v, _ in planned_variants(status))) or bool(status.problems)
    if incomplete:
        say(f"FAIL incomplete run: {len(status.missing)} of {len(status.units)} planned units not scored"
            + (f", damaged: {'; '.join(status.problems)}" if status.problems else "")
            + f" (exit {EXIT_INCOMPLETE}; --allow-incomplete judges the finished units only)")
    elif unwaivable:
        say("FAIL incomplete run: --allow-incomplete judges finished units only; "
            + ", ".join(filter(None, [f"{len(not_judged)} planned variant(s) have none" if not_judged else "",
                                      reference_missing if reference_missing and not not_judged else "",
                                      f"damaged: {'; '.join(status.problems)}" if status.problems else ""]))
            + f" (exit {EXIT_INCOMPLETE})")
    elif status.missing:
        say(f"--allow-incomplete: judged {status.n_finished} of {len(status.units)} planned units")
    if args.junit is not None:
        try:
            write_text(args.junit, junit_xml(view.name, results, reference, args.accept_invalid_reference,
                                             {(v.variant, v.backend): v for v in view.verdicts},
                                             # an incomplete run's missing units are its failures; what
                                             # --allow-incomplete cannot waive gets its own
                                             status.missing if incomplete else (),
                                             () if incomplete else tuple(not_judged),
                                             "" if incomplete else reference_missing, status.problems))
        except OSError as exc:
            raise AuditorError(f"{args.junit}: cannot write JUnit XML ({exc.strerror or exc})") from None
        say(f"junit: {args.junit}")
    if incomplete or unwaivable:
        code = EXIT_INCOMPLETE
    elif reference_missing and not args.accept_invalid_reference:
        say(f"verdicts INCONCLUSIVE: exit {EXIT_INVALID_REFERENCE} (no reference to check; "
            "--accept-invalid-reference judges the thresholds anyway)")
        code = EXIT_INVALID_REFERENCE
    elif invalid and not args.accept_invalid_reference:
        say(f"verdicts INCONCLUSIVE: exit {EXIT_INVALID_REFERENCE} (--accept-invalid-reference judges the "
            "thresholds anyway)")
        code = EXIT_INVALID_REFERENCE
    else:
        code = EXIT_THRESHOLD if failed else 0
    if args.json:
        print(json.dumps(json_safe(gate_json(view, thresholds, status, results, not_judged, reference_missing,
                                             args.accept_invalid_reference, lines, code)), indent=2,
                         allow_nan=False))
    else:
        print("\n".join(lines))
    return code
