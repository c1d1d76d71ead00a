"""`auditor bench wanda`: wall time of Wanda@0.5 on SmolLM2 from 32 x 256 calibration tokens.

Target (issue 3): under 5 minutes on 2 CPU cores. Prints the figures; asserts nothing.

`--compare-dtype bfloat16` (issue 31, calibration cost) also prunes a copy of the model cast to that
dtype, so the calibration forward, the input norms' activations and the scores run in it, and prints
both wall times and how far the masks agree: the share of the pruned layers' weights whose keep/prune
decision is the same (overall, and the lowest layer), which says whether calibrating in the scoring
dtype would keep the float32 masks.
"""
from __future__ import annotations

import copy
import json
import time

from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.core.errors import SpecError
from compressors.base import Variant
from compressors.calibration import load_calibration
from compressors.registry import parse_chain

TARGET_S = 300.0


def register(sub) -> None:
    p = sub.add_parser("wanda", help="time Wanda pruning of the default model (target: < 5 min on 2 cores)")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (default)")
    p.add_argument("--spec", default="wanda@0.5", help="Wanda spec to time (default wanda@0.5)")
    p.add_argument("--calib", default=None, help="calibration text (default: WikiText-2 valid, else the fixture text)")
    p.add_argument("--samples", type=int, default=32, help="calibration windows (default 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    p.add_argument("--compare-dtype", choices=("bfloat16", "float16"), default=None,
                   help="also prune a copy cast to this dtype; print its time and its mask agreement with float32")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch


    steps = parse_chain(args.spec)
    if len(steps) != 1 or not steps[0].method.startswith("wanda"):
        raise SpecError(f"bench wanda: {args.spec!r} is not a single wanda or wanda-dense step")
    source = resolve_model(args.model)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(source)
    model = load_model(source)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    calibration = load_calibration(tokenizer, args.calib, n_samples=args.samples, seq_len=args.seq_len)
    calib_s = time.perf_counter() - t0
    other = copy.deepcopy(model).to(getattr(torch, args.compare_dtype)) if args.compare_dtype else None
    variant = steps[0].apply(Variant("dense", model=model), calibration=calibration)
    report = variant.steps[-1]
    figures = {
        "spec": variant.spec,
        "model": source.describe(),
        "calibration": calibration.origin,
        "torch_threads": torch.get_num_threads(),
        "load_s": load_s,
        "calibration_load_s": calib_s,
        "wanda_wall_s": report.wall_s,
        "target_s": TARGET_S,
        "within_target": report.wall_s < TARGET_S,
        "sparsity_requested": report.measured["sparsity_requested"],
        "sparsity_overall": report.measured["sparsity_overall"],
        "sparsity_pruned_layers": report.measured["sparsity_pruned_layers"],
        "sparsity_max_deviation_weights_per_group": report.measured["sparsity_max_deviation_weights_per_group"],
        "sparsity_per_layer_min": min(report.measured["sparsity_per_layer"].values()),
        "sparsity_per_layer_max": max(report.measured["sparsity_per_layer"].values()),
    }
    if other is not None:
        cast = steps[0].apply(Variant("dense", model=other), calibration=calibration).steps[-1]
        figures.update(mask_agreement(variant.model, other, report.measured["sparsity_per_layer"]),
                       compare_dtype=args.compare_dtype, compare_wanda_wall_s=cast.wall_s)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['spec']} on {figures['model']}")
        print(f"calibration: {figures['calibration']} ({calib_s:.1f} s to tokenize)")
        print(f"model load {load_s:.1f} s; Wanda {report.wall_s:.1f} s on {figures['torch_threads']} torch threads "
              f"(target < {TARGET_S:.0f} s: {'met' if figures['within_target'] else 'NOT met'})")
        print(f"sparsity requested {figures['sparsity_requested']:.3f}, "
              f"measured overall {figures['sparsity_overall']:.4f}, "
              f"per layer {figures['sparsity_per_layer_min']:.4f}..{figures['sparsity_per_layer_max']:.4f}, "
              f"max deviation {figures['sparsity_max_deviation_weights_per_group']:.2f} weights per row")
        if other is not None:
            print(f"calibrated in {args.compare_dtype}: Wanda {figures['compare_wanda_wall_s']:.1f} s; the same keep/prune "
                  f"decision as float32 on {figures['mask_agreement']:.4%} of the pruned layers' weights (lowest layer "
                  f"{figures['mask_agreement_min_layer']:.4%}, {figures['mask_agreement_min_layer_name']}); pruned in "
                  f"float32 only {figures['pruned_only_float32']:.4%}, in {args.compare_dtype} only "
                  f"{figures['pruned_only_other']:.4%}")
    return 0


def mask_agreement(float32_model, other_model, layers) -> dict:
    """Share of the weights of `layers` (qualified Linear names) pruned (exactly zero) in both models or in
    neither, overall and for the lowest layer, and the shares pruned in one model only."""
    ref, other = dict(float32_model.named_modules()), dict(other_model.named_modules())
    same = total = only_ref = only_other = 0
    worst = (2.0, "")
    for name in layers:
        a, b = ref[name].weight.data == 0, other[name].weight.data == 0
        agree = int((a == b).sum())
        same, total = same + agree, total + a.numel()
        only_ref += int((a & ~b).sum())
        only_other += int((b & ~a).sum())
        worst = min(worst, (agree / a.numel(), name))
    return {"mask_agreement": same / total, "mask_agreement_min_layer": worst[0],
            "mask_agreement_min_layer_name": worst[1], "pruned_only_float32": only_ref / total,
            "pruned_only_other": only_other / total}
