"""`auditor bench llama-reuse`: prompts/s of llama.cpp before and after the tree plan, against torch bfloat16.

Issue 31: the llama.cpp variants of a study (GGUF Q4_K_M, Q8_0) scored far slower than torch
bfloat16. This benchmark scores the same BBQ prompts (real items through the project's
loaders, every answer order) with

- torch bfloat16 (`TorchBackend`, its tree plan, all cores),
- llama.cpp "before": every prompt decoded from an empty cache (`reuse_prefix=False`, one
  context of `--llama-threads` threads),
- llama.cpp "after": the torch engine's tree plan on llama.cpp sequences, in batches, on
  one-thread lanes (`LlamaCppBackend`, module docstring there),
- on a CPU with AMX, "after" again with llama.cpp's extra weight buffers off (its AMX kernels
  unused, as before `llama_amx` let a build that runs them keep them on),

for each GGUF type, each built from the same dense model with the project's own quantization path
(`compressors`: gguf-q4_k_m, gguf-q8_0; dense loaded from `--model`, a GGUF is dequantized to
float32 first). Every configuration is warmed up, then all are timed in turn, `--rounds` times
(interleaved, so a change in the machine's load hits all alike); the best round counts. The
"before" path decodes every prompt alone, so its rate does not depend on which prompts it gets:
`--before-items` times it on the first items only, to keep a run short.

Printed per configuration: prompts/s, planned and computed tokens, and the ratio to torch
bfloat16. A figure, never a test: the load average is printed with it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.artifacts.precision import cast_for_scoring
from auditor.benchmarks._load import warn_if_busy
from auditor.core.errors import AuditorError
from auditor.data.bbq import select_items
from auditor.data.sources import resolve_bbq
from auditor.scoring.backends.llama_amx import amx_cpu
from auditor.scoring.backends.llama_backend import LlamaCppBackend
from auditor.scoring.backends.torch_backend import TorchBackend
from auditor.scoring.engine import PromptSet, score
from compressors.gguf_quant import FTYPES
from compressors.registry import build_variant, parse_chain

log = logging.getLogger(__name__)

#: GGUF types benchmarked by default, as compressor specs.
SPECS = ("gguf-q4_k_m", "gguf-q8_0")
AMX_OFF = ", AMX off"


def register(sub) -> None:
    p = sub.add_parser("llama-reuse", help="prompts/s of llama.cpp GGUF types before/after the tree plan "
                                           "against torch bfloat16, on the same BBQ prompts (issue 31)")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (default)")
    p.add_argument("--bbq", default=None, help="BBQ directory or file (default: $AUDITOR_BBQ_DIR, else the fixture)")
    p.add_argument("--n-items", type=int, default=100, help="BBQ items, stratified (default 100)")
    p.add_argument("--seeds", type=int, default=3, help="answer orders per item (default 3)")
    p.add_argument("--before-items", type=int, default=None,
                   help="items the llama.cpp 'before' path is timed on (default: all --n-items)")
    p.add_argument("--specs", default=",".join(SPECS), help=f"GGUF compressor specs (default {','.join(SPECS)})")
    p.add_argument("--rounds", type=int, default=1, help="interleaved timed rounds, best counts (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads and llama.cpp lanes (default: all cores)")
    p.add_argument("--llama-threads", type=int, default=None,
                   help="threads of the llama.cpp 'before' context (default: the backend's, half the cores)")
    p.add_argument("--batch-size", type=int, default=16, help="torch items per forward (default 16)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the GGUF builds go; files already there are reused (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def build_gguf(spec: str, dense, workdir: Path) -> Path:
    """`<workdir>/<spec>.gguf`, built from `dense` by the compressor `spec` unless it is there already."""
    target = workdir / f"{spec}.gguf"
    if not target.is_file():
        variant = build_variant(parse_chain(spec), dense, seed=0, workdir=workdir / spec)
        Path(variant.gguf_path).replace(target)
    return target


def run(args) -> int:
    import torch

    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    if not specs or any(spec not in FTYPES for spec in specs):
        raise AuditorError(f"bench llama-reuse: --specs {args.specs!r}: valid GGUF types are {', '.join(FTYPES)}")
    if min(args.n_items, args.seeds, args.rounds, args.batch_size) < 1 or (args.before_items or 1) < 1:
        raise AuditorError("bench llama-reuse: --n-items, --seeds, --rounds, --batch-size and --before-items "
                           "must be >= 1")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    data = resolve_bbq(args.bbq)
    items = select_items([data.path], n=args.n_items, seed=0, origin=data.origin).items
    prompts = PromptSet.build(tokenizer, items, tuple(range(args.seeds)))
    n_before = min(args.before_items or len(items), len(items))
    before_prompts = PromptSet.build(tokenizer, items[:n_before], tuple(range(args.seeds)))
    load = [os.getloadavg()[0]]

    with tempfile.TemporaryDirectory(prefix="bench-llama-reuse-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        dense = load_model(source)
        paths = {spec: build_gguf(spec, dense, workdir) for spec in specs}
        model = cast_for_scoring(dense, "bfloat16", in_place=True)
        del dense
        build_s = time.perf_counter() - start
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        amx = amx_cpu()
        configs: list[tuple[str, object, PromptSet]] = [
            ("torch bfloat16", TorchBackend(model, batch_size=args.batch_size, pad_id=int(pad)), prompts)]
        for spec in specs:
            kind = spec.removeprefix("gguf-").upper()
            configs.append((f"llama.cpp {kind} before", LlamaCppBackend(
                paths[spec], reuse_prefix=False, n_threads=args.llama_threads, n_lanes=1), before_prompts))
            configs.append((f"llama.cpp {kind} after", LlamaCppBackend(paths[spec], n_lanes=threads), prompts))
            if amx:  # the plan with ggml's AMX kernels off, as before this build ran them (llama_amx)
                configs.append((f"llama.cpp {kind} after{AMX_OFF}", LlamaCppBackend(
                    paths[spec], n_lanes=threads, extra_buffers=False), prompts))
        try:
            for _, backend, ps in configs:  # warm-up: first-call allocations, lanes opened
                backend.letter_logprobs(ps.groups[:2], ps.letter_ids)
            best: dict[str, object] = {}
            for _ in range(args.rounds):
                for name, backend, ps in configs:
                    result = score(backend, ps, "bench")
                    load.append(os.getloadavg()[0])
                    if name not in best or result.wall_s < best[name].wall_s:
                        best[name] = result
        finally:
            for _, backend, _ in configs:
                backend.close()
    torch_rate = _rate(best["torch bfloat16"], prompts)
    rows = []
    for name, _, ps in configs:
        r = best[name]
        rows.append({"config": name, "prompts": ps.n_prompts, "wall_s": r.wall_s,
                     "prompts_per_s": _rate(r, ps), "over_torch_bf16": _rate(r, ps) / torch_rate,
                     "planned_tokens": r.planned_tokens, "computed_tokens": r.computed_tokens})
        if name.endswith(AMX_OFF):  # what the AMX kernels move: the same prompts' answers and log-probs
            rows[-1].update(_agreement(r.records, best[name.removesuffix(AMX_OFF)].records))
    figures = {"model": source.describe(), "data": data.origin, "n_items": len(items), "seeds": args.seeds,
               "before_items": n_before, "threads": threads, "rounds": args.rounds, "cpu_count": os.cpu_count(),
               "build_s": build_s, "load_avg_1m": load, "configs": rows}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(source.describe())
    print(f"data: {data.origin}; {len(items)} items x {args.seeds} order(s) ({n_before} items for 'before'); "
          f"torch threads / llama.cpp lanes {threads}; best of {args.rounds} interleaved round(s)")
    print(f"{'config':<33} {'prompts':>7} {'prompts/s':>10} {'x torch bf16':>13} {'planned tok':>12} "
          f"{'computed tok':>13}")
    for r in rows:
        print(f"{r['config']:<33} {r['prompts']:>7} {r['prompts_per_s']:>10.2f} {r['over_torch_bf16']:>13.2f} "
              f"{_count(r['planned_tokens']):>12} {_count(r['computed_tokens']):>13}")
    for r in rows:
        if "same_answer_as_amx_on" in r:
            print(f"{r['config']}: same answer as with the AMX kernels on for {r['same_answer_as_amx_on']:.1%} of "
                  f"prompts; letter log-probs differ by at most {r['max_logprob_diff_from_amx_on']:.3f}")
    print(f"load average (1 min) from {load[0]:.1f} to {load[-1]:.1f}, max {max(load):.1f}, on "
          f"{os.cpu_count()} cores; models built and loaded in {build_s:.0f} s")
    warn_if_busy(*load)
    return 0


def _agreement(off, on) -> dict[str, float]:
    """Share of prompts whose chosen answer is the same with the AMX kernels off as on, and the largest
    difference of a letter's log-probability (records of the same prompts, in the same order)."""
    columns = ["logprob_0", "logprob_1", "logprob_2"]
    return {"same_answer_as_amx_on": float((off["chosen"].to_numpy() == on["chosen"].to_numpy()).mean()),
            "max_logprob_diff_from_amx_on": float(abs(off[columns].to_numpy() - on[columns].to_numpy()).max())}


def _rate(result, prompts: PromptSet) -> float:
    return prompts.n_prompts / result.wall_s


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
