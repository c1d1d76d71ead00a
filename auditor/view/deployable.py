"""What each variant ships as: the measured figures of its deployable artifact, or "simulated" when it has none.

A decision row (variant, backend) is judged on the file a team would ship, taken from the run's measurements
(measurements.json, written by the run's measurement unit or `auditor measure --out RUN`):

- a gguf-* variant: its GGUF file, in llama.cpp;
- a float variant (dense, pruned): its GGUF F16 export, in llama.cpp (half the bytes of the float32
  safetensors directory, and what llama.cpp runs); its safetensors directory, in torch, when no GGUF
  was measured (formats without gguf, or an architecture llama.cpp cannot convert);
- a bitsandbytes variant: the safetensors directory transformers saves, in torch (bnb has no GGUF form);
- a null baseline: the dense model's artifact (dense-gguf-f16 is the dense GGUF F16; dense-float32 is dense);
- a variant of several mask or calibration seeds (SPEC#seedS): its spec's artifact (the seed changes which
  weights are zero, not the file's size or speed).

An RTN variant (rtn@B, `compressors.rtn`) is fake quantization: its B-bit codes are dequantized back into
float32 weights, and no file the auditor writes holds B-bit weights. Its size and speed are "simulated": not
measured (a study's measurement unit leaves it out), never passing a size or speed constraint, with the
nearest real format named (``auditor.measure.exports.nearest_format``, ``NEAREST_FORMAT`` there):
the llama.cpp type of the same bits the auditor can build and measure (rtn@8 -> gguf-q8_0; rtn@4 ->
gguf-q4_k_m; rtn@3 -> gguf-q3_k_m). They are near, not equal: llama.cpp's Q8_0 scales blocks of 32 weights
symmetrically, the K-quants mix types per tensor, RTN uses asymmetric min-max groups of 128 (closest in
arithmetic to Q4_1, which the registry does not build). A chain that ends in a real format
(rtn@4+gguf-q4_k_m) ships as that format and is not simulated.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import pandas as pd

from auditor.analysis.baselines import DENSE_FLOAT32, DENSE_GGUF_F16
from auditor.core.names import DENSE, LLAMA_CPP, TORCH, split_mask_seed
from auditor.measure.exports import nearest_format, spec_methods

#: Figures of a deployable artifact, as the decision rows name them.
FIGURES = ("size_bytes", "bits_per_weight", "decode_tokens_per_s", "peak_rss_bytes")
SIMULATED = "simulated"


def _median(value: Any) -> float:
    """A measured figure: the median of a {median, min, max} spread, a plain number, else NaN."""
    if isinstance(value, dict):
        value = value.get("median")
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan


def artifact_row(storage: pd.DataFrame, variant: str, backend: str) -> dict:
    """The measurements.json row of the artifact `variant` (scored on `backend`) ships as; {} when not measured."""
    if storage is None or not len(storage):
        return {}
    spec = split_mask_seed(variant)[0]
    name = DENSE if spec in (DENSE_GGUF_F16, DENSE_FLOAT32) else spec
    rows = storage[(storage["variant"] == name) & storage["runtime"].notna()]
    gguf = rows[(rows["format"] == "gguf") & (rows["runtime"] == LLAMA_CPP)]
    torch = rows[(rows["format"] == "safetensors") & (rows["runtime"] == TORCH)]
    bnb = any(m.startswith("bnb-") for m, _ in spec_methods(spec))
    if backend == LLAMA_CPP or not bnb:
        chosen = gguf if len(gguf) else torch
    else:
        chosen = torch
    return chosen.iloc[0].to_dict() if len(chosen) else {}


def artifact_label(row: dict) -> str:
    """"GGUF F16 (llama.cpp)", "safetensors bitsandbytes int8 (torch)": the artifact a row's figures describe."""
    if not row:
        return ""
    fmt = "GGUF" if row.get("format") == "gguf" else str(row.get("format", ""))
    return f"{fmt} {row.get('layout', '')} ({row.get('runtime', '')})".replace("  ", " ")


def deployable(rows: pd.DataFrame, storage: pd.DataFrame | None) -> pd.DataFrame:
    """`rows` (one per variant and backend, with FIGURES columns) with each row's figures replaced by those of
    its deployable artifact where measured, and two columns added: "artifact" (what the figures describe, or
    "simulated: nearest FORMAT") and "simulated" (the nearest real format of a simulated variant, else "").
    A simulated row's figures are NaN whatever was measured: they belong to its float32 stand-in."""
    out = rows.copy()
    artifacts, simulated = [], []
    for idx, r in out.iterrows():
        nearest = nearest_format(str(r["variant"]))
        if nearest is not None:
            for col in FIGURES:
                out.at[idx, col] = math.nan
            artifacts.append(f"{SIMULATED}: nearest {nearest}")
            simulated.append(nearest)
            continue
        found = artifact_row(storage, str(r["variant"]), str(r["backend"])) if storage is not None else {}
        if found:
            for col in FIGURES:
                out.at[idx, col] = _median(found.get(col))
        artifacts.append(artifact_label(found))
        simulated.append("")
    out["artifact"] = artifacts
    out["simulated"] = simulated
    return out


def is_simulated(row: dict) -> bool:
    """Whether a decision row is simulated (its "simulated" column names a format)."""
    value = row.get("simulated")
    return isinstance(value, str) and bool(value)

