"""`auditor bench runtimes`: items/s of every runtime kind of the paper grid on the same items.

Kinds: torch float32 and bfloat16, bitsandbytes LLM.int8 and NF4 on CPU (torch), llama.cpp
F16, Q8_0, Q4_K_M and Q3_K_M (each with its KV-cache prefix reuse). Each kind is built from
the same float32 dense model (`auditor.study.estimate.time_kind`: the build is timed
separately), warmed up, then scores all the items once. Printed per kind: items/s, the
tokens its plan computes (`plan_trees` for torch, `planned_decode_tokens` for llama.cpp),
and its rate against that runtime's own measured peak:

- torch: the FLOPs its plan computes per second over the GEMM rate (auditor.scoring.gemm)
  in the kind's dtype; bitsandbytes kinds against the float32 GEMM (NF4 dequantizes to
  float32 and multiplies there; LLM.int8 multiplies int8 with float16 activations, so the
  float32 GEMM is only a common yardstick for it);
- llama.cpp: planned tokens per second over the same model's prefill rate (one prompt of
  `--prefill-tokens` decoded in n_batch chunks, best of 3 after a warm-up).

A figure, never a test: the load average is printed with it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.benchmarks._load import warn_if_busy
from auditor.core.errors import AuditorError
from auditor.data.bbq import select_items
from auditor.data.sources import resolve_bbq
from auditor.scoring.backends.trees import plan_trees
from auditor.scoring.engine import PromptSet
from auditor.scoring.gemm import ModelDims, forward_flops, measure_gemm
from auditor.study.estimate import time_kind

#: kind -> (the compressor spec that makes it, or None for the dense model; torch dtype)
KINDS: dict[str, tuple[str | None, str]] = {
    "torch float32": (None, "float32"),
    "torch bfloat16": (None, "bfloat16"),
    "torch bnb-int8": ("bnb-int8", "float32"),
    "torch bnb-nf4": ("bnb-nf4", "float32"),
    "llama.cpp F16": (None, "float32"),
    "llama.cpp Q8_0": ("gguf-q8_0", "float32"),
    "llama.cpp Q4_K_M": ("gguf-q4_k_m", "float32"),
    "llama.cpp Q3_K_M": ("gguf-q3_k_m", "float32"),
}


def register(sub) -> None:
    p = sub.add_parser("runtimes", help="items/s per runtime kind (torch fp32/bf16, bitsandbytes, llama.cpp "
                                        "GGUF types) on the same items, against each runtime's own peak")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (default)")
    p.add_argument("--bbq", default=None, help="BBQ directory or file (default: $AUDITOR_BBQ_DIR, else the fixture)")
    p.add_argument("--categories", default=None, help="comma-separated BBQ categories (default: all in the data)")
    p.add_argument("--condition", choices=("ambig", "disambig", "both"), default="both")
    p.add_argument("--items", "--n-items", dest="items", type=int, default=100,
                   help="items (default 100, stratified)")
    p.add_argument("--seeds", type=int, default=1, help="answer orders per item (default 1)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds (default all: {', '.join(KINDS)})")
    p.add_argument("--batch-size", type=int, default=16, help="torch items per forward (default 16)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--llama-threads", type=int, default=None,
                   help="llama.cpp threads (default: the backend's, half the cores)")
    p.add_argument("--prefill-tokens", type=int, default=512, help="prompt length of llama.cpp's prefill peak")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise AuditorError(f"bench runtimes: --kinds: unknown {unknown or kinds}; valid: {', '.join(KINDS)}")
    if min(args.items, args.seeds, args.batch_size, args.prefill_tokens) < 1:
        raise AuditorError("bench runtimes: --items, --seeds, --batch-size and --prefill-tokens must be >= 1")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    dense = load_model(source)
    data = resolve_bbq(args.bbq)
    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    items = select_items([data.path], categories=categories, condition=args.condition, n=args.items, seed=0,
                         origin=data.origin).items
    prompts = PromptSet.build(tokenizer, items, tuple(range(args.seeds)))
    plan = plan_trees(prompts.groups)
    dims = ModelDims.from_config(dense.config)
    planned_flops = forward_flops(dims, plan.n_nodes, plan.n_attended_pairs, plan.n_answer_nodes)
    mean_tokens = sum(len(g.full_ids(0)) for g in prompts.groups) / len(prompts.groups)
    rows = min(args.batch_size, len(items))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefill_ids = [prompts.groups[i % len(prompts.groups)].full_ids(0) for i in range(len(prompts.groups))]
    prefill_ids = [t for ids in prefill_ids for t in ids][:args.prefill_tokens]

    results = []
    gemm: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        for kind in kinds:
            spec, dtype = KINDS[kind]
            load_start = os.getloadavg()[0]
            timing = time_kind(kind, spec, dtype, dense, tokenizer, prompts, calls=[prompts.groups],
                               batch_size=args.batch_size, pad_id=int(pad),
                               workdir=Path(tmp) / kind.replace(" ", "_"), seed=0,
                               n_threads=args.llama_threads if kind.startswith("llama.cpp") else None,
                               peak_prefill_ids=prefill_ids if kind.startswith("llama.cpp") else None)
            row = {"kind": kind, "items_per_s": len(items) / timing.score_wall_s, "wall_s": timing.score_wall_s,
                   "planned_tokens": timing.score_tokens, "tokens_per_s": timing.score_tokens_per_s,
                   "build_s": timing.build_s, "load_avg_1m_start": load_start, "load_avg_1m_end": os.getloadavg()[0]}
            if kind.startswith("torch"):
                if dtype not in gemm:
                    gemm[dtype] = measure_gemm(dims, tokens=max(1, round(rows * mean_tokens)), head_rows=rows,
                                               dtype=dtype).flops_per_s
                row.update(peak=f"{dtype} GEMM", peak_rate=gemm[dtype], rate=planned_flops / timing.score_wall_s,
                           rate_unit="FLOP/s")
            else:
                row.update(peak="llama.cpp prefill", peak_rate=timing.peak_tokens_per_s,
                           rate=timing.score_tokens_per_s, rate_unit="tokens/s")
            row["over_peak"] = row["rate"] / row["peak_rate"]
            results.append(row)
    figures = {"model": source.describe(), "data": data.origin, "n_items": len(items), "seeds": args.seeds,
               "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "kinds": results}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(source.describe())
    print(f"data: {data.origin}; {len(items)} items x {args.seeds} order(s); torch threads "
          f"{figures['torch_threads']}")
    print(f"{'kind':<18} {'items/s':>8} {'tokens':>8} {'tokens/s':>9} {'rate / own peak':>16} "
          f"{'peak':>28} {'build s':>8} {'load avg':>12}")
    for r in results:
        unit = "GFLOP/s" if r["rate_unit"] == "FLOP/s" else "tok/s"
        scale = 1e9 if unit == "GFLOP/s" else 1.0
        peak = f"{r['peak']} {r['peak_rate'] / scale:.0f} {unit}"
        print(f"{r['kind']:<18} {r['items_per_s']:>8.2f} {r['planned_tokens']:>8,} {r['tokens_per_s']:>9.0f} "
              f"{r['over_peak']:>16.2f} {peak:>28} {r['build_s']:>8.1f} "
              f"{r['load_avg_1m_start']:>5.1f}->{r['load_avg_1m_end']:<5.1f}")
    slowest = min(results, key=lambda r: r["items_per_s"])
    print(f"slowest: {slowest['kind']} at {slowest['items_per_s']:.2f} items/s")
    warn_if_busy(*(load for r in results for load in (r["load_avg_1m_start"], r["load_avg_1m_end"])))
    return 0
