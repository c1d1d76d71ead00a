"""`auditor bench sparse-kernels`: dense matmul vs torch CSR/BSR (and 2:4 on CUDA) on SmolLM2's shapes.

Answers the question the studies' "pruning saves no latency" leaves open: at which unstructured
sparsity, if any, does a sparse kernel on this machine beat dense? With --out RUN_DIR the raw
timings go to RUN_DIR/sparse_kernels.json, where `auditor report RUN_DIR` shows them.
Prints figures; asserts nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from auditor.analysis.claims import CLAIM_SPARSE_KERNEL, sparse_breakeven, sparse_kernel_table
from auditor.core.errors import AuditorError
from auditor.measure.sparse_kernels import SparseKernelSettings, measure_sparse_kernels, write_sparse_kernels


def register(sub) -> None:
    p = sub.add_parser("sparse-kernels", help="dense vs sparse (CSR, BSR; 2:4 on CUDA) matmul at 50/70/90%% sparsity")
    p.add_argument("--sparsities", default="0.5,0.7,0.9", help="comma-separated (default 0.5,0.7,0.9)")
    p.add_argument("--tokens", default="1,64", help="token counts per linear (default 1,64: decode, prefill)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (default 5)")
    p.add_argument("--forward-tokens", type=int, default=32, help="tokens of the whole forward (default 32)")
    p.add_argument("--forward-layers", type=int, default=None, help="decoder layers of the whole forward (default 30)")
    p.add_argument("--forward-rounds", type=int, default=3, help="interleaved rounds of the whole forward (default 3)")
    p.add_argument("--no-forward", action="store_true", help="time the linear shapes only")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared CPU, thread pools that spin at barriers measure the "
                        "other processes, not the kernel; 0 = all cores)")
    p.add_argument("--out", type=Path, default=None, help="write sparse_kernels.json here (a run directory works)")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of tables")
    p.set_defaults(func=run)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AuditorError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise AuditorError(f"{option}: give at least one value")
    return values


def run(args) -> int:
    sparsities = _floats(args.sparsities, "--sparsities")
    if not all(0 < s < 1 for s in sparsities):
        raise AuditorError(f"--sparsities {args.sparsities!r}: each must lie strictly between 0 and 1")
    tokens = tuple(int(t) for t in _floats(args.tokens, "--tokens"))
    if min(tokens) < 1 or args.rounds < 1 or args.forward_rounds < 1 or args.forward_tokens < 1:
        raise AuditorError("--tokens, --rounds, --forward-rounds and --forward-tokens must be at least 1")
    settings = SparseKernelSettings(sparsities=sparsities, tokens=tokens, rounds=args.rounds,
                                    forward_tokens=args.forward_tokens, forward_layers=args.forward_layers,
                                    forward_rounds=args.forward_rounds, n_threads=args.threads or None)
    report = measure_sparse_kernels(settings, forward=not args.no_forward)
    doc = report.to_json()
    if args.out is not None:
        write_sparse_kernels(report, args.out)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    _print(doc)
    if args.out is not None:
        print(f"timings: {args.out / 'sparse_kernels.json'}")
    return 0


def _print(doc: dict) -> None:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    table = sparse_kernel_table(doc["timings"])
    load = doc["load_average"]
    title = (f"Dense vs sparse kernels, {doc['torch_threads']} torch thread(s), 1-minute load average "
             f"{load.get('start')} -> {load.get('end')} on {os.cpu_count()} cores; speed-up = dense time / kernel "
             "time, median [95% CI] over interleaved rounds")
    out = Table(title=title)
    for head in ("case", "tokens", "sparsity", "kernel", "stored", "dense ms", "kernel ms", "speed-up", "faster"):
        out.add_column(head)
    for r in table.itertuples():
        out.add_row(f"{r.name} {r.shape}".strip(), str(r.tokens), f"{r.sparsity:.0%}", f"{r.kernel} ({r.device})",
                    "-" if r.stored_fraction is None else f"{r.stored_fraction:.0%}", f"{r.dense_ms:.3f}",
                    f"{r.kernel_ms:.3f}", f"{r.speedup:.2f}x [{r.speedup_ci_low:.2f}-{r.speedup_ci_high:.2f}]",
                    r.faster)
    console = Console(width=None if os.isatty(1) else 160)
    console.print(out)
    for r in sparse_breakeven(table).itertuples():
        when = "never" if pd.isna(r.beats_dense_from) else f"from {r.beats_dense_from:.0%}"
        console.print(f"{r.name}, {r.tokens} tokens, {r.kernel}: beats dense {when} (of {r.sparsities})")
    console.print(f"claim: {CLAIM_SPARSE_KERNEL}")
    for note in doc["notes"]:
        console.print(f"note: {note}")
    console.print(f"wall time: {doc['wall_s']:.1f} s")
