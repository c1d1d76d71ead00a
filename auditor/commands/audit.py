"""`auditor audit`: score the dense model and compressed variants on BBQ and write a report.

A thin front: the options become an in-memory study, validated like a study file and run like
`auditor run`.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace

from auditor.commands.run import run_and_report
from auditor.core.errors import AuditorError
from auditor.study.spec import Study, parse_study


def register(sub) -> None:
    p = sub.add_parser("audit", help="score dense + variants on BBQ items; write records and report.md")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (the embedded default)")
    p.add_argument("--variant", action="append", dest="variants", metavar="SPEC",
                   help="compressor spec, repeatable (default: magnitude@0.5)")
    p.add_argument("--bbq", default=None, help="BBQ directory or jsonl file (default: $AUDITOR_BBQ_DIR, the `auditor data fetch bbq` copy, "
                   "../shared/bbq beside the checkout, then the fixture sample)")
    p.add_argument("--categories", default=None, help="comma-separated categories (default: all in the data)")
    p.add_argument("--condition", choices=("ambig", "disambig", "both"), default="both")
    p.add_argument("--n-items", type=int, default=None, help="stratified sample size (default: all)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--seeds", default="0", help="answer-order seeds, comma-separated (0 = dataset order)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--calib", default=None, help="calibration text file for Wanda")
    p.add_argument("--run", default="demo", help="run name; the run directory is REPORTS/RUN")
    p.add_argument("--reports", default="reports", help="folder holding run directories")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory (off by default)")
    p.add_argument("--no-null-baselines", dest="null_baselines", action="store_false",
                   help="skip the dense GGUF F16 (llama.cpp) runtime-noise unit")
    p.add_argument("--force", action="store_true",
                   help="reuse a run directory made with other options (see `auditor run --force`)")
    p.set_defaults(func=run)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option}: {text!r} is not a comma-separated list of integers") from None


def study_from_args(args, seeds: tuple[int, ...]) -> Study:
    """The study `auditor audit` runs: dense + the --variant specs, on the options given."""
    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    doc = {
        "name": args.run, "output_dir": args.reports, "models": [args.model or "smollm2"],
        "seeds": list(seeds), "null_baselines": args.null_baselines,
        "data": given(bbq=args.bbq, categories=categories, condition=args.condition, n_items=args.n_items,
                      sample_seed=args.sample_seed),
        "compression": {"variants": list(args.variants or ("magnitude@0.5",)), "seed": 0},
        "calibration": given(corpus=args.calib),
        "execution": {"batch_size": args.batch_size, "device": args.device},
    }
    study = parse_study(doc, source="auditor audit", base_dir=os.getcwd())
    return replace(study, trust_remote_code=args.trust_remote_code)


def run(args) -> int:
    try:
        seeds = _int_list(args.seeds, "--seeds")
    except argparse.ArgumentTypeError as exc:
        raise AuditorError(str(exc)) from None
    if args.n_items is not None and args.n_items <= 0:
        raise AuditorError(f"--n-items must be positive, got {args.n_items}")
    run_dir = run_and_report(study_from_args(args, seeds), force=args.force)[0]
    print(f"run directory: {run_dir}\nreport: {run_dir / 'report.md'}")
    return 0
