"""`auditor bench memory`: each step's peak resident memory on one or more models, and bytes per parameter.

Issue 28's bound: every step peaks at <= 1.25 x the bfloat16 weights + 1.5 GB
(docs/memory.md). The steps are those a study worker runs on one variant, each
in a fresh Python process (no step inherits another's heap), through the
project's own functions:

- load: the dense model as a study worker loads it (`UnitWorker.build("dense")`;
  for a GGUF, from the float32 folder written beforehand, outside the step);
- build-magnitude, build-wanda: `UnitWorker.build` of magnitude@0.5 / wanda@0.5
  (Wanda calibrated on --calib-samples x --calib-seq-len tokens);
- score-dense: the dense model's torch scoring unit in --dtype on --items BBQ items
  (backend, cast and scoring);
- score: magnitude@0.5 built, then `UnitWorker.execute` of its torch scoring unit
  (backend, cast and scoring);
- perplexity: its perplexity unit, one --max-length window, after its scoring unit
  (as a run orders them, so the variant is already in --dtype).

A step's peak is the process's VmHWM (/proc/self/status) after the step, with
the high-water mark reset at the step's start (5 written to /proc/self/clear_refs),
so it counts what is resident when the step starts plus what the step adds.
Where the reset is refused, the figure is the whole process's peak and the row
says so. The fit is least squares peak = a + b x parameters over the models
given (b: bytes per parameter). Prints figures; asserts nothing.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from auditor.artifacts.models import resolve_model, return_freed_memory, source_chat_template
from auditor.core.errors import AuditorError
from auditor.core.names import DENSE, TORCH
from auditor.core.rss import reset_peak, vm_hwm_bytes, vm_rss_bytes
from auditor.data.bbq import select_items
from auditor.data.prompt_format import choose_format
from auditor.data.rundir import PPL, SCORE, Unit
from auditor.data.sources import resolve_bbq
from auditor.study.spec import CalibrationSettings, PerplexitySettings
from auditor.study.units import RunContext, UnitWorker

log = logging.getLogger(__name__)

STEPS = ("load", "build-magnitude", "build-wanda", "score-dense", "score", "perplexity")
PRUNE_SPEC = {"build-magnitude": "magnitude@0.5", "build-wanda": "wanda@0.5"}
SCORED_SPEC = "magnitude@0.5"  # the variant the score and perplexity steps serve
#: Issue 28's bound on every step: peak <= BOUND_FACTOR x bf16 weights + BOUND_CONSTANT_BYTES.
BOUND_FACTOR = 1.25
BOUND_CONSTANT_BYTES = 1_500_000_000
_CHILD_FLAG = "--child"


@dataclass(frozen=True)
class StepSettings:
    """What a step child needs, as plain JSON-able data."""

    model: str
    step: str
    dtype: str = "bfloat16"
    items: int = 8
    bbq: str | None = None
    calib_samples: int = 8
    calib_seq_len: int = 256
    max_length: int = 2048
    threads: int | None = None


@dataclass(frozen=True)
class StepPeak:
    """One step's measured peak (bytes) and the model's size."""

    model: str
    step: str
    peak_rss_bytes: int
    start_rss_bytes: int  # resident when the step started (its inputs: the model, the variant)
    n_params: int
    step_only: bool  # False where the high-water mark could not be reset (then: the whole process's peak)
    wall_s: float

    @property
    def bf16_bytes(self) -> int:
        return 2 * self.n_params

    @property
    def bound_bytes(self) -> int:
        return int(BOUND_FACTOR * self.bf16_bytes + BOUND_CONSTANT_BYTES)


def register(sub) -> None:
    p = sub.add_parser("memory", help="each step's peak resident memory (load, build, score, perplexity) and the "
                                      "fitted bytes per parameter")
    p.add_argument("--model", action="append", default=None,
                   help="HF directory, GGUF file, or 'smollm2' (default); repeat for several models (the fit)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps (default: {','.join(STEPS)})")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16",
                   help="compute dtype of the score and perplexity steps (default bfloat16)")
    p.add_argument("--items", type=int, default=8, help="BBQ items scored in the score step (default 8)")
    p.add_argument("--bbq", default=None, help="BBQ directory or file (default: $AUDITOR_BBQ_DIR, else the fixture)")
    p.add_argument("--calib-samples", type=int, default=8, help="Wanda calibration windows (default 8)")
    p.add_argument("--calib-seq-len", type=int, default=256, help="tokens per calibration window (default 256)")
    p.add_argument("--max-length", type=int, default=2048, help="perplexity window in tokens (default 2048)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each step (default: torch's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise AuditorError(f"bench memory: --steps {args.steps!r}: unknown step(s) {', '.join(unknown) or '(none)'}; "
                           f"valid: {', '.join(STEPS)}")
    if min(args.items, args.calib_samples, args.calib_seq_len) < 1 or args.max_length < 2:
        raise AuditorError("bench memory: --items, --calib-samples and --calib-seq-len must be >= 1, "
                           "--max-length >= 2")
    peaks = []
    for model in args.model or ["smollm2"]:
        for step in steps:
            settings = StepSettings(model, step, args.dtype, args.items, args.bbq, args.calib_samples,
                                    args.calib_seq_len, args.max_length, args.threads)
            peaks.append(measure_step(settings))
            if not args.json:
                print(_row(peaks[-1]), flush=True)
    fits = {step: fit_bytes_per_param([p for p in peaks if p.step == step]) for step in steps}
    if args.json:
        print(json.dumps({"peaks": [asdict(p) for p in peaks],
                          "fits": {s: None if f is None else {"constant_bytes": f[0], "bytes_per_param": f[1]}
                                   for s, f in fits.items()}}, indent=2))
        return 0
    for step, fit in fits.items():
        if fit is not None:
            print(f"fit {step}: peak = {fit[0] / 1e9:.2f} GB + {fit[1]:.2f} bytes x parameters")
    return 0


def _row(p: StepPeak) -> str:
    flag = "" if p.step_only else "  (process peak: VmHWM could not be reset)"
    return (f"{Path(p.model).name:32s} {p.step:16s} peak {p.peak_rss_bytes / 1e9:6.2f} GB  "
            f"(start {p.start_rss_bytes / 1e9:.2f})  {p.peak_rss_bytes / p.n_params:5.1f} B/param  "
            f"{p.peak_rss_bytes / p.bf16_bytes:4.1f} x bf16 weights  bound {p.bound_bytes / 1e9:.2f} GB  "
            f"{p.wall_s:.0f}s{flag}")


def fit_bytes_per_param(peaks: list[StepPeak]) -> tuple[float, float] | None:
    """Least squares (constant bytes, bytes per parameter) of peak over parameters; None under two sizes."""
    sizes = {p.n_params for p in peaks}
    if len(sizes) < 2:
        return None
    n = len(peaks)
    mx = sum(p.n_params for p in peaks) / n
    my = sum(p.peak_rss_bytes for p in peaks) / n
    sxx = sum((p.n_params - mx) ** 2 for p in peaks)
    slope = sum((p.n_params - mx) * (p.peak_rss_bytes - my) for p in peaks) / sxx
    return my - slope * mx, slope


def measure_step(settings: StepSettings, *, timeout_s: float | None = None) -> StepPeak:
    """Run one step in a fresh Python process (`python -m auditor.benchmarks.memory --child`) and read its peak."""
    cmd = [sys.executable, "-m", "auditor.benchmarks.memory", _CHILD_FLAG, json.dumps(asdict(settings))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise AuditorError(f"bench memory: step {settings.step} on {settings.model} failed "
                           f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return StepPeak(**json.loads(lines[-1]))


# --- the child process ------------------------------------------------------------------------------------


def run_step(settings: StepSettings) -> StepPeak:
    """Compute one step in this process with a study `UnitWorker` (its inputs first, then the measured part)."""
    if settings.step not in STEPS:
        raise AuditorError(f"unknown step {settings.step!r}; valid: {', '.join(STEPS)}")
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as run_dir:
        worker = _worker(settings, Path(run_dir))
        try:
            _ = worker.tokenizer, worker.prompts  # inputs outside the model, not measured
            n_params = 0
            if settings.step != "load":
                n_params = _n_params(worker.build(DENSE).model)  # a GGUF's float32 folder is written here
                worker.release()
                if settings.step == "build-wanda":
                    worker.calibration()
                if settings.step not in PRUNE_SPEC:  # what the scoring step serves, built before it
                    worker.build(DENSE if settings.step == "score-dense" else SCORED_SPEC)
                if settings.step == "perplexity":  # a run scores a variant's items before its perplexity
                    worker.execute(Unit(SCORE, SCORED_SPEC, SCORED_SPEC, TORCH))
            return_freed_memory()
            step_only, start_rss, start = reset_peak(), vm_rss_bytes(), time.perf_counter()
            if settings.step == "load":
                n_params = _n_params(worker.build(DENSE).model)
            elif settings.step in PRUNE_SPEC:
                worker.build(PRUNE_SPEC[settings.step])
            else:
                kind = PPL if settings.step == "perplexity" else SCORE
                spec = DENSE if settings.step == "score-dense" else SCORED_SPEC
                result = worker.execute(Unit(kind, spec, spec, TORCH))
                if result.error:
                    raise AuditorError(f"step {settings.step}: {result.error}")
            wall = time.perf_counter() - start
            peak = vm_hwm_bytes()
        finally:
            worker.close()
    return StepPeak(settings.model, settings.step, peak, start_rss, n_params, step_only, wall)


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _worker(settings: StepSettings, run_dir: Path):
    """A study worker for the step: the study runner's RunContext with --items items, seed 0."""
    source = resolve_model(settings.model)
    data = resolve_bbq(settings.bbq)
    items = select_items([data.path], n=settings.items, seed=0, origin=data.origin).items
    ctx = RunContext(key="bench-memory", run_dir=str(run_dir), source=source, items=tuple(items), seeds=(0,),
                     compress_seed=0, batch_size=8, device="cpu", threads=settings.threads, trust_remote_code=False,
                     calibration=CalibrationSettings(None, settings.calib_samples, settings.calib_seq_len),
                     perplexity=PerplexitySettings(None, settings.max_length, settings.max_length,
                                                   settings.max_length),
                     keep_artifacts=False, dtype=settings.dtype,
                     prompt_format=choose_format(source_chat_template(source) is not None))
    return UnitWorker(ctx)


def child_main(argv: list[str]) -> int:
    """Entry of a step's process: one JSON StepSettings in, one JSON StepPeak line out."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    peak = run_step(StepSettings(**json.loads(argv[0])))
    print(json.dumps(asdict(peak)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == _CHILD_FLAG:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m auditor.benchmarks.memory --child SETTINGS_JSON (use `auditor bench memory`)")
