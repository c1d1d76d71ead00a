"""Claims vs measurement: size and speed of every variant relative to dense, against what the studies say.

The studies' claim checked here: unstructured pruning saves no disk and no
latency when the weights are stored in a dense format (safetensors, GGUF F16/F32),
because zeros are stored and multiplied like any other value. Only a format that
knows about zeros (the bitmask or CSR layouts, or a general-purpose compressor)
can turn sparsity into bytes. Quantization is claimed to save disk.

Speed claims are decided from a bootstrap confidence interval of the variant/dense throughput
ratio, never from two point estimates: `auditor measure` interleaves the variants (A B A B ...)
over repeats, so the i-th run of a variant and the i-th run of dense were taken back to back
under the same machine load; their ratio is one paired sample. A claim is "agrees",
"disagrees" or "inconclusive (noise)" from where that interval lies.

Pure: rows in (dicts with the keys of auditor.measure.measurement.Measurement), a DataFrame out.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from auditor.analysis.inference import percentile_ci
from auditor.core.names import DENSE

DENSE_FORMATS = ("safetensors", "gguf")

CLAIM_PRUNE_DENSE = "unstructured pruning saves no disk and no latency in a dense format"
CLAIM_PRUNE_SPARSE = "a format that knows about zeros turns sparsity into a smaller file"
CLAIM_QUANTIZE = "quantization makes the file smaller"
CLAIM_REFERENCE = "reference"

AGREES, DISAGREES, INCONCLUSIVE, UNKNOWN = "agrees", "disagrees", "inconclusive (noise)", "unknown"

VERDICT_COLUMNS = ("size_agrees", "speed_agrees", "agrees")
COLUMNS = ["variant", "family", "format", "layout", "reference", "size_vs_dense", "prefill_vs_dense",
           "prefill_ci_low", "prefill_ci_high", "decode_vs_dense", "decode_ci_low", "decode_ci_high",
           "claim", "size_agrees", "speed_agrees", "agrees", "verdict"]


def _values(value: Any) -> list[float]:
    """The per-run values of a spread ({median, min, max, values}); [] when it has none."""
    if value is None:
        return []
    got = value.get("values") if isinstance(value, Mapping) else getattr(value, "values", None)
    return [float(v) for v in got or [] if v is not None and math.isfinite(float(v))]


def ratio_ci(variant: Sequence[float], dense: Sequence[float], *, n_boot: int = 2000, level: float = 0.95,
             seed: int = 0) -> tuple[float, float, float]:
    """(median ratio, CI low, CI high) of variant / dense throughput by a percentile bootstrap.

    Paired (equal lengths: run i of each was taken back to back in round i of an interleaved
    measurement): r_i = variant_i / dense_i, estimate median(r), replicates median(r*) over
    rounds resampled with replacement. Unpaired (lengths differ): estimate median(v) / median(d),
    replicates median(v*) / median(d*) with each side resampled on its own. Percentile interval
    (Efron and Tibshirani 1993, ch. 13). With n rounds the paired interval is at its widest
    [min r_i, max r_i]. NaN triple when either side is empty or a dense value is 0.
    """
    v, d = np.asarray(variant, dtype=float), np.asarray(dense, dtype=float)
    if not len(v) or not len(d) or (d == 0).any():
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    if len(v) == len(d):
        r = v / d
        reps = np.median(r[rng.integers(0, len(r), size=(n_boot, len(r)))], axis=1)
        low, high = percentile_ci(reps, level)
        return float(np.median(r)), low, high
    reps = (np.median(v[rng.integers(0, len(v), size=(n_boot, len(v)))], axis=1)
            / np.median(d[rng.integers(0, len(d), size=(n_boot, len(d)))], axis=1))
    low, high = percentile_ci(reps, level)
    return float(np.median(v) / np.median(d)), low, high


def no_speedup_verdict(low: float, high: float, tol: float) -> str:
    """The claim "no speed-up" against a CI [low, high] of variant/dense throughput.

    disagrees: low > 1 + tol (faster than dense beyond the tolerance, whatever the noise);
    agrees: high <= 1 + tol (no speed-up beyond the tolerance is compatible with the data);
    inconclusive (noise): the interval straddles 1 + tol; unknown: no interval.
    Two runs can therefore disagree only by moving a whole interval across 1 + tol, never by noise
    inside it.
    """
    if math.isnan(low) or math.isnan(high):
        return UNKNOWN
    if low > 1 + tol:
        return DISAGREES
    return AGREES if high <= 1 + tol else INCONCLUSIVE


def _stat(value: Any, key: str) -> float:
    """One statistic ("median", "min", "max") of a spread (dict or object), NaN when absent."""
    if value is None:
        return math.nan
    got = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
    return math.nan if got is None else float(got)


def _median(value: Any) -> float:
    return _stat(value, "median")


def _speed_ci(variant: Any, dense: Any) -> tuple[float, float, float]:
    """(ratio, CI low, CI high) of variant/dense throughput from the per-run values (`ratio_ci`);
    without them (files with only median, min and max): the ratio of medians and the widest
    interval the spreads allow, [v_min / d_max, v_max / d_min]."""
    vals_v, vals_d = _values(variant), _values(dense)
    if vals_v and vals_d:
        return ratio_ci(vals_v, vals_d)
    return (_ratio(_median(variant), _median(dense)), _ratio(_stat(variant, "min"), _stat(dense, "max")),
            _ratio(_stat(variant, "max"), _stat(dense, "min")))


def _ratio(num: float, den: float) -> float:
    """num / den; NaN when either is missing or den is 0."""
    if math.isnan(num) or math.isnan(den) or den == 0:
        return math.nan
    return num / den


def _reference(row: Mapping, dense_rows: Sequence[Mapping]) -> Mapping | None:
    """The dense row a variant is compared with: dense in the same format and layout (zstd of
    the pruned file vs zstd of the dense file), else, for sparse layouts, dense safetensors
    (the file they encode), else dense in the same format (GGUF Q8_0 vs dense GGUF F16)."""
    def first(fmt: str, layout: str | None = None) -> Mapping | None:
        return next((r for r in dense_rows if r["format"] == fmt and layout in (None, r["layout"])), None)

    same = first(row["format"], row["layout"])
    if same is not None:
        return same
    return first("safetensors") if row["format"] == "sparse" else first(row["format"])


def claims_table(rows: Sequence[Mapping], *, size_tol: float = 0.01, speed_tol: float = 0.10) -> pd.DataFrame:
    """One row per non-dense (variant, format, layout): ratios to dense and whether the measurement agrees.

    The reference is the dense row of the same format and layout where one was measured
    (zstd of the pruned file vs zstd of the dense file: what the zeros add beyond what zstd
    does to dense weights), else dense in the same format (GGUF Q8_0 vs dense GGUF F16), else
    dense safetensors for sparse layouts.
    size_vs_dense = size_bytes / dense size_bytes; prefill_vs_dense and decode_vs_dense
    = median over rounds of tokens/s / dense tokens/s in the same round (> 1: faster than dense;
    the ratio of medians for rows without per-run values). NaN where either side is missing
    (storage-only layouts have no speed).

    prefill_ci_* and decode_ci_* bound the 95% bootstrap CI of that ratio (`ratio_ci`, paired by
    round when both rows carry per-run values).

    Agreement:
    - pruning in a dense format: size_agrees = |size_vs_dense - 1| <= size_tol and the speed
      claim (no speed-up) from each ratio's CI (`no_speedup_verdict` with speed_tol):
      disagrees when either CI lies wholly above 1 + speed_tol, agrees when both lie at or
      below it, inconclusive (noise) otherwise. speed_agrees is True / False / None
      (inconclusive or missing);
    - pruning in a sparse layout or zstd: size_agrees = size_vs_dense < 1; speed n/a;
    - quantization (alone or after pruning): size_agrees = size_vs_dense < 1; speed n/a
      (no speed claim is checked; the ratios are still shown).
    speed_agrees is None where no speed claim applies. agrees combines the checks that
    apply: False if one fails, None if one is unknown or inconclusive, else True; verdict
    says which in words: agrees, disagrees, inconclusive (noise) or unknown.
    Dense rows are the references and get no row of their own; a family other than
    "prune" (quantize, prune+quantize) is held to the quantization claim.
    """
    dense = [r for r in rows if r["variant"] == DENSE]
    out = []
    for row in rows:
        if row["variant"] == DENSE:
            continue
        ref = _reference(row, dense) or {}
        size = _ratio(float(row["size_bytes"]), float(ref.get("size_bytes", math.nan)))
        family = row.get("family", "")
        cis = {k: _speed_ci(row.get(f"{k}_tokens_per_s"), ref.get(f"{k}_tokens_per_s"))
               for k in ("prefill", "decode")}
        if family == "prune" and row["format"] in DENSE_FORMATS:
            claim = CLAIM_PRUNE_DENSE
            size_ok = _check(size, lambda r: abs(r - 1) <= size_tol)
            speeds = [no_speedup_verdict(low, high, speed_tol) for _, low, high in cis.values()]
            speed = (DISAGREES if DISAGREES in speeds else UNKNOWN if UNKNOWN in speeds
                     else INCONCLUSIVE if INCONCLUSIVE in speeds else AGREES)
            speed_ok = {AGREES: True, DISAGREES: False}.get(speed)
            verdict = (DISAGREES if size_ok is False or speed == DISAGREES
                       else UNKNOWN if size_ok is None or speed == UNKNOWN else speed)
        else:
            claim = CLAIM_PRUNE_SPARSE if family == "prune" else CLAIM_QUANTIZE
            size_ok, speed_ok = _check(size, lambda r: r < 1), None
            verdict = {True: AGREES, False: DISAGREES, None: UNKNOWN}[size_ok]
        out.append({
            "variant": row["variant"], "family": family, "format": row["format"], "layout": row["layout"],
            "reference": f"dense {ref['format']} {ref['layout']}" if ref else "no dense row measured",
            "size_vs_dense": size, "prefill_vs_dense": cis["prefill"][0], "prefill_ci_low": cis["prefill"][1],
            "prefill_ci_high": cis["prefill"][2], "decode_vs_dense": cis["decode"][0],
            "decode_ci_low": cis["decode"][1], "decode_ci_high": cis["decode"][2], "claim": claim,
            "size_agrees": size_ok, "speed_agrees": speed_ok,
            "agrees": {AGREES: True, DISAGREES: False}.get(verdict), "verdict": verdict,
        })
    # Object columns keep True / False / None (unknown) as Python values, never coerced to NaN.
    return pd.DataFrame(out, columns=COLUMNS).astype({c: object for c in VERDICT_COLUMNS})


def _check(value: float, test) -> bool | None:
    """test(value), or None (unknown) when the value is NaN."""
    return None if math.isnan(value) else bool(test(value))


# ---------------------------------------------------------------- sparse kernels

CLAIM_SPARSE_KERNEL = "unstructured pruning saves no latency even with a sparse kernel (torch CSR/BSR)"
SPARSE_COLUMNS = ["scope", "name", "shape", "tokens", "device", "sparsity", "kernel", "stored_fraction",
                  "dense_ms", "kernel_ms", "speedup", "speedup_ci_low", "speedup_ci_high", "verdict", "faster"]


def _is_reference(kernel: str) -> bool:
    return kernel.startswith("dense")


def sparse_kernel_table(timings: Sequence[Mapping], *, speed_tol: float = 0.10) -> pd.DataFrame:
    """One row per (case, sparse kernel): its speed-up over dense in the same case, with a CI, and the claim.

    A case is (scope, name, tokens, device, sparsity); its dense timing (kernel "dense", or
    "dense fp16" on CUDA) is the reference. speedup = median over rounds of dense s / kernel s in
    the same round (> 1: the sparse kernel is faster), 95% paired bootstrap CI (`ratio_ci` of the
    rates 1/s). verdict: the claim "no latency saved" via `no_speedup_verdict` with speed_tol
    (disagrees = the sparse kernel is faster by more than speed_tol whatever the noise).
    faster: "sparse" when the CI lies above 1, "dense" when below, "neither (noise)" otherwise.
    dense_ms, kernel_ms: medians in milliseconds per call.
    """
    def case(t: Mapping) -> tuple:
        return (t["scope"], t["name"], t["tokens"], t["device"], t["sparsity"])

    refs = {case(t): t for t in timings if _is_reference(t["kernel"])}
    out = []
    for t in timings:
        ref = refs.get(case(t))
        if _is_reference(t["kernel"]) or ref is None:
            continue
        secs, dense = [float(s) for s in t["seconds"]], [float(s) for s in ref["seconds"]]
        speedup, low, high = ratio_ci([1 / s for s in secs], [1 / s for s in dense])
        faster = ("n/a" if math.isnan(low) else "sparse" if low > 1 else "dense" if high < 1 else "neither (noise)")
        out.append({
            "scope": t["scope"], "name": t["name"], "shape": "x".join(map(str, t["shape"])) if t.get("shape") else "",
            "tokens": t["tokens"], "device": t["device"], "sparsity": t["sparsity"], "kernel": t["kernel"],
            "stored_fraction": t.get("stored_fraction"), "dense_ms": 1e3 * float(np.median(dense)),
            "kernel_ms": 1e3 * float(np.median(secs)), "speedup": speedup, "speedup_ci_low": low,
            "speedup_ci_high": high, "verdict": no_speedup_verdict(low, high, speed_tol), "faster": faster,
        })
    return pd.DataFrame(out, columns=SPARSE_COLUMNS)


def sparse_breakeven(table: pd.DataFrame) -> pd.DataFrame:
    """Per (scope, name, tokens, device, kernel): the lowest sparsity at which the kernel beats dense
    (speed-up CI wholly above 1), or None when it never does at the sparsities measured."""
    rows = []
    for key, group in table.groupby(["scope", "name", "tokens", "device", "kernel"], sort=False):
        wins = group.loc[group["faster"] == "sparse", "sparsity"]
        rows.append({**dict(zip(["scope", "name", "tokens", "device", "kernel"], key)),
                     "sparsities": ", ".join(f"{s:.0%}" for s in sorted(group["sparsity"])),
                     "beats_dense_from": float(wins.min()) if len(wins) else None,
                     "best_speedup": float(group["speedup"].max())})
    return pd.DataFrame(rows, columns=["scope", "name", "tokens", "device", "kernel", "sparsities",
                                       "beats_dense_from", "best_speedup"])
