"""`auditor measure`: bytes on disk, bits per weight, load time, peak memory and tokens/s per variant and format."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.measure.measurement import MeasureSettings, measure


def register(sub) -> None:
    p = sub.add_parser("measure", help="size, memory and speed of variants in each storage format, vs the claims")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="variant specs (dense is always measured first)")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (the embedded default)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved rounds (A B A B ...): timed runs per figure, median, min-max and bootstrap CIs "
                        "of the ratios to dense (default 3)")
    p.add_argument("--formats", default="safetensors,gguf,sparse",
                   help="comma-separated: safetensors, gguf, sparse (default: all that apply)")
    p.add_argument("--outtype", choices=("f16", "f32"), default="f16", help="GGUF type of float variants")
    p.add_argument("--new-tokens", type=int, default=16, help="greedy tokens per decode run (default 16)")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and llama.cpp (default: all cores)")
    p.add_argument("--bbq-items", type=int, default=8, help="fixture items scored for BBQ ms/item (default 8)")
    p.add_argument("--zstd-level", type=int, default=3, help="zstd level for the compressed dense file (default 3)")
    p.add_argument("--calib", default=None, help="calibration text file for Wanda")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration windows for Wanda (default 32)")
    p.add_argument("--load-tolerance", type=float, default=1.0,
                   help="warn when the 1-minute load average moves by more than this while timing (default 1.0)")
    p.add_argument("--out", type=Path, default=None,
                   help="write measurements.json and measurements/<unit>.json here (a run directory works)")
    p.add_argument("--keep-artifacts", action="store_true", help="keep the exported files under OUT/artifacts")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of tables")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.keep_artifacts and args.out is None:
        raise AuditorError("--keep-artifacts needs --out DIR")
    settings = MeasureSettings(
        repeats=args.repeats, new_tokens=args.new_tokens, n_threads=args.threads, bbq_items=args.bbq_items,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()), outtype=args.outtype,
        zstd_level=args.zstd_level, calib=args.calib, calib_samples=args.calib_samples,
        load_tolerance=args.load_tolerance,
    )
    report = measure(args.specs, model=args.model, settings=settings, out_dir=args.out,
                     keep_artifacts=args.keep_artifacts)
    doc = report.to_json()
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
        print(f"total wall time: {report.wall_s:.1f} s", file=sys.stderr)
        return 0
    _print_tables(doc)
    if args.out is not None:
        print(f"measurements: {args.out / 'measurements.json'}")
    return 0


def _spread(value, fmt: str = "{:.1f}") -> str:
    if not value or value.get("median") is None:
        return "-"
    return f"{fmt.format(value['median'])} [{fmt.format(value['min'])}-{fmt.format(value['max'])}]"


def _scaled(value: dict, factor: float) -> dict:
    return {k: (v * factor if isinstance(v, (int, float)) else v) for k, v in value.items()}


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ci(ratio, low, high) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if low is None or high is None else f"{ratio:.2f}x [{low:.2f}-{high:.2f}]"


def _verdict(value: str) -> str:
    return value.upper() if value == "disagrees" else value


def _print_tables(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output would be cut to rich's 80-column default; these tables need ~150.
    console = Console(width=None if sys.stdout.isatty() else 160)
    s = doc["settings"]
    table = Table(title=f"Measurements: {doc['model']['name']} ({doc['n_params']:,} parameters); "
                        f"{doc['workload']['prompt_tokens']}-token prompt, {s['new_tokens']} decode tokens, "
                        f"{s['repeats']} interleaved rounds: median [min-max]")
    for head in ("variant", "format", "layout", "MB", "bits/w", "load s", "TTFT ms", "peak RSS MB",
                 "prefill tok/s", "decode tok/s", "BBQ ms/item"):
        table.add_column(head, justify="left" if head in ("variant", "format", "layout") else "right")
    for r in doc["measurements"]:
        table.add_row(r["variant"], r["format"], r["layout"], f"{r['size_bytes'] / 1e6:.1f}",
                      _num(r["bits_per_weight"], "{:.2f}"), _spread(r["load_s"], "{:.2f}"),
                      _spread(r.get("time_to_first_token_s") and _scaled(r["time_to_first_token_s"], 1000), "{:.0f}"),
                      _num(r["peak_rss_bytes"] and r["peak_rss_bytes"] / 1e6, "{:.0f}"),
                      _spread(r["prefill_tokens_per_s"]), _spread(r["decode_tokens_per_s"]),
                      _num(r["bbq_ms_per_prompt"], "{:.0f}"))
    console.print(table)
    claims = Table(title="Claims vs measurement (relative to dense in the same format; sparse layouts vs dense "
                         "safetensors; speed > 1x = faster; [95% bootstrap CI over paired rounds])")
    for head in ("variant", "format", "layout", "size", "prefill", "decode", "claim", "measurement"):
        claims.add_column(head)
    keys: dict[str, str] = {}
    for c in doc["claims"]:
        key = keys.setdefault(c["claim"], f"C{len(keys) + 1}")
        claims.add_row(c["variant"], c["format"], c["layout"], _ratio(c["size_vs_dense"]),
                       _ci(c["prefill_vs_dense"], c["prefill_ci_low"], c["prefill_ci_high"]),
                       _ci(c["decode_vs_dense"], c["decode_ci_low"], c["decode_ci_high"]), key, _verdict(c["verdict"]))
    console.print(claims)
    for claim, key in keys.items():
        console.print(f"{key}: {claim}")
    for note in doc["notes"]:
        console.print(f"note: {note}")
    load = doc.get("load_average") or {}
    if load.get("min") is not None:
        console.print(f"1-minute load average during the timings: {load['min']:.1f}-{load['max']:.1f} "
                      f"on {os.cpu_count()} cores")
    console.print(f"total wall time: {doc['wall_s']:.1f} s")
