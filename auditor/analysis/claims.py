"""Claims vs measurement: size and speed of every variant relative to dense, against what the studies say.

The studies' claim checked here: unstructured pruning saves no disk and no
latency when the weights are stored in a dense format (safetensors, GGUF F16/F32),
because zeros are stored and multiplied like any other value. Only a format that
knows about zeros (the bitmask or CSR layouts, or a general-purpose compressor)
can turn sparsity into bytes. Quantization is claimed to save disk.

Pure: rows in (dicts with the keys of auditor.measure.measurement.Measurement), a DataFrame out.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from auditor.core.names import DENSE

DENSE_FORMATS = ("safetensors", "gguf")

CLAIM_PRUNE_DENSE = "unstructured pruning saves no disk and no latency in a dense format"
CLAIM_PRUNE_SPARSE = "a format that knows about zeros turns sparsity into a smaller file"
CLAIM_QUANTIZE = "quantization makes the file smaller"
CLAIM_REFERENCE = "reference"

VERDICT_COLUMNS = ("size_agrees", "speed_agrees", "agrees")
COLUMNS = ["variant", "family", "format", "layout", "reference", "size_vs_dense", "prefill_vs_dense",
           "decode_vs_dense", "claim", "size_agrees", "speed_agrees", "agrees"]


def _stat(value: Any, key: str) -> float:
    """One statistic ("median", "min", "max") of a spread (dict or object), NaN when absent."""
    if value is None:
        return math.nan
    got = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
    return math.nan if got is None else float(got)


def _median(value: Any) -> float:
    return _stat(value, "median")


def _faster_beyond_noise(variant: Any, dense: Any, tol: float) -> bool | None:
    """Whether the variant's slowest run beats dense's fastest run by more than `tol`
    (min tokens/s > (1 + tol) * dense max tokens/s); None when a figure is missing."""
    v_min, d_max = _stat(variant, "min"), _stat(dense, "max")
    if math.isnan(v_min) or math.isnan(d_max):
        return None
    return v_min > (1 + tol) * d_max


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
    = median tokens/s / dense median tokens/s (> 1: faster than dense). NaN where either
    side is missing (storage-only layouts have no speed).

    Agreement:
    - pruning in a dense format: size_agrees = |size_vs_dense - 1| <= size_tol and
      speed_agrees = neither prefill nor decode is faster than dense beyond noise: the
      claim fails only when the variant's slowest run beats dense's fastest run by more
      than speed_tol (min tokens/s > (1 + speed_tol) * dense max tokens/s), so that
      overlapping run-to-run spreads never count as a speed-up;
    - pruning in a sparse layout or zstd: size_agrees = size_vs_dense < 1; speed n/a;
    - quantization (alone or after pruning): size_agrees = size_vs_dense < 1; speed n/a
      (no speed claim is checked; the ratios are still shown).
    speed_agrees is None where no speed claim applies. agrees combines the checks that
    apply: False if one fails, None (unknown) if a needed figure is missing, else True.
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
        prefill = _ratio(_median(row.get("prefill_tokens_per_s")), _median(ref.get("prefill_tokens_per_s")))
        decode = _ratio(_median(row.get("decode_tokens_per_s")), _median(ref.get("decode_tokens_per_s")))
        family = row.get("family", "")
        if family == "prune" and row["format"] in DENSE_FORMATS:
            claim = CLAIM_PRUNE_DENSE
            size_ok = _check(size, lambda r: abs(r - 1) <= size_tol)
            faster = [_faster_beyond_noise(row.get(k), ref.get(k), speed_tol)
                      for k in ("prefill_tokens_per_s", "decode_tokens_per_s")]
            speed_ok = None if None in faster else not any(faster)
            checks = [size_ok, speed_ok]
        else:
            claim = CLAIM_PRUNE_SPARSE if family == "prune" else CLAIM_QUANTIZE
            size_ok, speed_ok = _check(size, lambda r: r < 1), None
            checks = [size_ok]
        out.append({
            "variant": row["variant"], "family": family, "format": row["format"], "layout": row["layout"],
            "reference": f"dense {ref['format']} {ref['layout']}" if ref else "no dense row measured",
            "size_vs_dense": size, "prefill_vs_dense": prefill, "decode_vs_dense": decode,
            "claim": claim, "size_agrees": size_ok, "speed_agrees": speed_ok, "agrees": _combine(checks),
        })
    # Object columns keep True / False / None (unknown) as Python values, never coerced to NaN.
    return pd.DataFrame(out, columns=COLUMNS).astype({c: object for c in VERDICT_COLUMNS})


def _check(value: float, test) -> bool | None:
    """test(value), or None (unknown) when the value is NaN."""
    return None if math.isnan(value) else bool(test(value))


def _combine(checks: Sequence[bool | None]) -> bool | None:
    """All applicable checks: False if any is False, None (unknown) if any is unknown, else True."""
    if any(c is False for c in checks):
        return False
    if any(c is None for c in checks):
        return None
    return True
