"""`auditor audit`: score the dense model and compressed variants on BBQ and write a report.

A thin front: the options become an in-memory study, validated like a study file and run like
`auditor run`.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import replace

from auditor.artifacts.precision import DTYPES, FLOAT32
from auditor.commands.run import completion_exit, run_and_report
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
    p.add_argument("--seeds", default="0", help="answer-order seeds, comma-separated, at most 6: 0-2 the cyclic "
                   "rotations of the dataset order (0 = dataset order), 3-5 their reflections")
    p.add_argument("--protocol", action="append", dest="protocols", metavar="NAME",
                   help="scoring protocol, repeatable; the first is the report's main analysis: strict (default), "
                        "debiased (needs --seeds 0,1,2), cloze (lm-evaluation-harness's bbq task), generative "
                        "(greedy free text), sampled (majority of 5 free-text answers at T = 0.3)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--dtype", choices=DTYPES, default=FLOAT32,
                   help="torch compute precision (default float32; auto: bfloat16 where the CPU has AVX512_BF16 "
                        "or AMX, or on a CUDA GPU with bf16); compression itself always runs in float32")
    p.add_argument("--calib", default=None, help="calibration text file for Wanda")
    p.add_argument("--run", default="demo", help="run name; the run directory is REPORTS/RUN")
    p.add_argument("--reports", default="reports", help="folder holding run directories")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="Jinja chat template file for the prompts (default: the model's own; "
                        "without one, the plain base-model format bbq-plain-v1)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory (off by default)")
    p.add_argument("--no-null-baselines", dest="null_baselines", action="store_false",
                   help="skip the dense GGUF F16 (llama.cpp) runtime-noise unit")
    p.add_argument("--force", action="store_true",
                   help="reuse a run directory made with other options (see `auditor run --force`)")
    p.set_defaults(func=run)


SOURCE = "auditor audit"
#: Study keys as `auditor audit` spells them: its messages name its flags, not the study schema.
STUDY_KEY_FLAGS = {
    "data.bbq": "--bbq", "data.categories": "--categories", "data.condition": "--condition",
    "data.n_items": "--n-items", "data.sample_seed": "--sample-seed", "seeds": "--seeds", "models": "--model",
    "compression.variants": "--variant", "compression": "--variant", "calibration.corpus": "--calib",
    "calibration": "--calib", "execution.batch_size": "--batch-size", "execution.device": "--device",
    "name": "--run", "output_dir": "--reports", "null_baselines": "--no-null-baselines",
}
_KEYED = re.compile(rf"^{re.escape(SOURCE)}: ({'|'.join(map(re.escape, sorted(STUDY_KEY_FLAGS, key=len, reverse=True)))}):")


def flag_message(message: str) -> str:
    """An error about the in-memory study, with its study key ("data.categories") as the flag ("--categories")."""
    message = _KEYED.sub(lambda m: f"{SOURCE}: {STUDY_KEY_FLAGS[m.group(1)]}:", message)
    return message.replace(f"check output_dir in {SOURCE}", "check --reports")


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
        **({"protocols": list(args.protocols)} if args.protocols else {}),
        **({"chat_template": args.chat_template} if args.chat_template else {}),
        "data": given(bbq=args.bbq, categories=categories, condition=args.condition, n_items=args.n_items,
                      sample_seed=args.sample_seed),
        "compression": {"variants": list(args.variants or ("magnitude@0.5",)), "seed": 0},
        "calibration": given(corpus=args.calib),
        "execution": {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype},
    }
    study = parse_study(doc, source=SOURCE, base_dir=os.getcwd())
    return replace(study, trust_remote_code=args.trust_remote_code)


def run(args) -> int:
    try:
        seeds = _int_list(args.seeds, "--seeds")
    except argparse.ArgumentTypeError as exc:
        raise AuditorError(str(exc)) from None
    if args.n_items is not None and args.n_items <= 0:
        raise AuditorError(f"--n-items must be positive, got {args.n_items}")
    try:
        run_dir = run_and_report(study_from_args(args, seeds), force=args.force)[0]
    except AuditorError as exc:
        exc.args = (flag_message(str(exc)),)
        raise
    print(f"run directory: {run_dir}\nreport: {run_dir / 'report.md'}")
    return completion_exit([run_dir])
