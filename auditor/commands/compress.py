"""`auditor compress SPEC`: build one variant, write it to disk and print how it was made."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from auditor.artifacts.architecture import check_gguf_convertible
from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.artifacts.safetensors_dir import save_hf_dir
from auditor.core.errors import AuditorError, ModelError
from auditor.core.files import atomic_path
from compressors.registry import apply_chain, parse_chain


def register(sub) -> None:
    p = sub.add_parser("compress", help="apply a compressor chain to a model and write the variant")
    p.add_argument("spec", metavar="SPEC", help="compressor chain, e.g. wanda@0.5, rtn@3:g64, wanda@0.5+gguf-q4_k_m")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (the embedded default)")
    p.add_argument("--out", required=True, type=Path,
                   help="output: an HF directory for torch variants; for gguf-* a .gguf file or a directory to hold it")
    p.add_argument("--calib", default=None,
                   help="calibration text file for Wanda (default: WikiText-2 valid, else the fixture text)")
    p.add_argument("--calib-samples", type=int, default=None, help="calibration windows (default 32)")
    p.add_argument("--calib-seq-len", type=int, default=None, help="tokens per calibration window (default 256)")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration window offsets")
    p.add_argument("--seed", type=int, default=0, help="compressor seed (random masks)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print the JSON record")
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    steps = parse_chain(args.spec)  # a bad spec fails before the model is loaded
    if args.out.suffix == ".gguf" and not (steps and steps[-1].method.startswith("gguf-")):
        raise AuditorError(f"--out {args.out}: {args.spec} is written as an HF directory, not a .gguf file")
    source = resolve_model(args.model)
    if any(s.method.startswith("gguf-") for s in steps):
        check_gguf_convertible(source)  # before the model is loaded
    try:
        tokenizer = load_tokenizer(source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source.path}: cannot load its tokenizer ({exc})") from None
    model = load_model(source, device=args.device)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".compress-", dir=out.parent) as workdir:
        variant = apply_chain(args.spec, model, tokenizer=tokenizer, calib=args.calib,
                              calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len,
                              calib_seed=args.calib_seed, seed=args.seed, workdir=Path(workdir))
        artifacts = [_write_artifact(variant, tokenizer, out, save_hf_dir)]
    record = compress_record(variant, source.describe(), artifacts, time.perf_counter() - start)
    if args.json:
        print(json.dumps(record, indent=2, default=str))
    else:
        print(_summary(record))
    return 0


def _write_artifact(variant, tokenizer, out: Path, save_hf_dir) -> Path:
    if variant.gguf_path is not None:
        target = out if out.suffix == ".gguf" else out / f"{variant.variant_id}.gguf"
        with atomic_path(target) as tmp:  # fsynced before the rename, the folder after it
            shutil.copyfile(variant.gguf_path, tmp)
        return target
    return save_hf_dir(variant.model, tokenizer, out)


def compress_record(variant, model_text: str, artifacts: list[Path], total_wall_s: float) -> dict:
    """The JSON record: spec, requested and measured sparsity, bits per weight, times, artifacts.

    Top-level figures come from the last step that measured them (a later quantize step does not
    change which weights are zero when it preserves zeros; its own record says whether it did).
    """
    steps = [dict(s.__dict__) for s in variant.steps]
    latest: dict = {}
    for step in steps:
        latest.update(step["measured"])
    prune_levels = [s["params"].get("sparsity") for s in steps if s["family"] == "prune"]
    return {
        "spec": variant.spec,
        "variant_id": variant.variant_id,
        "model": model_text,
        "runtime": variant.runtime,
        "sparsity_requested": prune_levels[-1] if prune_levels else None,
        "sparsity_overall": latest.get("sparsity_overall"),
        "sparsity_per_layer": latest.get("sparsity_per_layer"),
        "bits_per_weight": latest.get("bits_per_weight"),
        "bits_per_weight_model": latest.get("bits_per_weight_model"),
        "compress_wall_s": sum(s["wall_s"] for s in steps),
        "total_wall_s": total_wall_s,
        "artifacts": [str(p) for p in artifacts],
        "steps": steps,
    }


def _summary(record: dict) -> str:
    def fmt(value, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    r = record
    return "\n".join([
        f"variant {r['spec']} ({r['variant_id']}), runtime {r['runtime']}",
        f"sparsity requested {fmt(r['sparsity_requested'], '.3f')}, measured {fmt(r['sparsity_overall'], '.4f')}",
        f"bits per weight {fmt(r['bits_per_weight'], '.3f')} (whole model {fmt(r['bits_per_weight_model'], '.3f')})",
        f"compression {record['compress_wall_s']:.1f} s, total {record['total_wall_s']:.1f} s",
        *(f"wrote {p}" for p in record["artifacts"]),
    ])
