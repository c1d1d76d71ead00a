"""`auditor export`: write one variant as an HF safetensors directory, a GGUF file, or the sparse layouts."""
from __future__ import annotations

import json
from pathlib import Path

from auditor.measure.exports import export_variant


def register(sub) -> None:
    p = sub.add_parser("export", help="write a variant as safetensors (HF dir), GGUF, or sparse layouts")
    p.add_argument("spec", metavar="VARIANT", help="variant spec, e.g. wanda@0.5, gguf-q4_k_m, dense")
    p.add_argument("--format", required=True, choices=("safetensors", "gguf", "sparse"), dest="fmt")
    p.add_argument("--out", type=Path, required=True,
                   help="directory (safetensors, sparse) or .gguf file (gguf) to write")
    p.add_argument("--outtype", choices=("f16", "f32"), default=None,
                   help="GGUF type of a float variant (default f16); quantized variants keep their type")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (the embedded default)")
    p.add_argument("--calib", default=None, help="calibration text file for Wanda")
    p.add_argument("--zstd-level", type=int, default=3, help="zstd level for --format sparse (default 3)")
    p.add_argument("--seed", type=int, default=0, help="compression seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    record = export_variant(args.spec, args.fmt, args.out, model=args.model, outtype=args.outtype,
                            calib=args.calib, zstd_level=args.zstd_level, seed=args.seed)
    if args.json:
        print(json.dumps(record, indent=2, allow_nan=False))
    else:
        print(f"{record['spec']} -> {record['path']} ({record['format']}, {record['size_bytes']:,} bytes)")
        for layout, info in record.get("layouts", {}).items():
            print(f"  {layout}: {info['file']} ({info['size_bytes']:,} bytes with config and tokenizer)")
    return 0
