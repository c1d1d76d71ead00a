"""The deployable artifact of each decision row, and "simulated" for fake quantization (auditor.view.deployable)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from auditor.view.decision import Constraints, decide
from auditor.view.deployable import deployable, nearest_format


def _row(variant, fmt, layout, runtime, size, decode=None):
    spread = None if decode is None else {"median": decode, "min": decode - 1, "max": decode + 1}
    return {"variant": variant, "format": fmt, "layout": layout, "runtime": runtime, "size_bytes": size,
            "bits_per_weight": 8 * size / 1e8, "decode_tokens_per_s": spread, "peak_rss_bytes": 3 * size}


#: measurements.json rows as `auditor measure` writes them (sparse layouts have no runtime).
STORAGE = pd.DataFrame([
    _row("dense", "safetensors", "float32", "torch", 540e6, 10.0),
    _row("dense", "gguf", "F16", "llama.cpp", 270e6, 25.0),
    _row("dense", "sparse", "bitmask", None, 300e6),
    _row("wanda@0.5", "safetensors", "float32", "torch", 540e6, 10.5),
    _row("wanda@0.5", "gguf", "F16", "llama.cpp", 270e6, 24.0),
    _row("magnitude@0.5", "safetensors", "float32", "torch", 540e6, 11.0),  # measured without gguf
    _row("bnb-nf4", "safetensors", "bitsandbytes nf4", "torch", 110e6, 3.0),
    _row("gguf-q4_k_m", "gguf", "Q4_K_M", "llama.cpp", 105e6, 60.0),
    _row("rtn@4", "safetensors", "float32", "torch", 540e6, 10.0),  # the float32 stand-in
    _row("rtn@4", "gguf", "F16", "llama.cpp", 270e6, 25.0),
])


@pytest.mark.parametrize("variant, expected", [
    ("rtn@8", "gguf-q8_0"), ("rtn@4", "gguf-q4_k_m"), ("rtn@3:g64", "gguf-q3_k_m"), ("rtn@4#seed1", "gguf-q4_k_m"),
    ("wanda@0.5+rtn@4", "wanda@0.5+gguf-q4_k_m"), ("rtn@4+gguf-q4_k_m", None), ("rtn@8+bnb-int8", None),
    ("dense", None), ("dense-gguf-f16", None), ("wanda@0.5", None), ("gguf-q8_0", None), ("bnb-nf4", None),
])
def test_nearest_real_format(variant, expected):
    assert nearest_format(variant) == expected


def test_each_row_takes_its_deployable_artifact():
    rows = pd.DataFrame({"variant": ["dense", "dense-gguf-f16", "wanda@0.5#seed1", "magnitude@0.5", "bnb-nf4",
                                     "gguf-q4_k_m", "rtn@4", "random@0.5"],
                         "backend": ["torch", "llama.cpp", "torch", "torch", "torch", "llama.cpp", "torch", "torch"],
                         "size_bytes": [1.0] * 7 + [42.0], "bits_per_weight": 1.0, "decode_tokens_per_s": 1.0,
                         "peak_rss_bytes": 1.0})
    out = deployable(rows, STORAGE).set_index("variant")
    expected = {  # variant -> (artifact, size, decode)
        "dense": ("GGUF F16 (llama.cpp)", 270e6, 25.0),  # a float model ships as its GGUF F16
        "dense-gguf-f16": ("GGUF F16 (llama.cpp)", 270e6, 25.0),
        "wanda@0.5#seed1": ("GGUF F16 (llama.cpp)", 270e6, 24.0),  # a seed's draw: its spec's file
        "magnitude@0.5": ("safetensors float32 (torch)", 540e6, 11.0),  # no GGUF measured
        "bnb-nf4": ("safetensors bitsandbytes nf4 (torch)", 110e6, 3.0),
        "gguf-q4_k_m": ("GGUF Q4_K_M (llama.cpp)", 105e6, 60.0),
    }
    for variant, (artifact, size, decode) in expected.items():
        assert (out.loc[variant, "artifact"], out.loc[variant, "size_bytes"],
                out.loc[variant, "decode_tokens_per_s"]) == (artifact, size, decode), variant
        assert out.loc[variant, "peak_rss_bytes"] == 3 * size and out.loc[variant, "simulated"] == ""
    # RTN: its measured float32 stand-in is not its size; nothing measured is kept, the nearest format named
    assert out.loc["rtn@4", "simulated"] == "gguf-q4_k_m"
    assert all(math.isnan(out.loc["rtn@4", c]) for c in ("size_bytes", "bits_per_weight", "decode_tokens_per_s",
                                                         "peak_rss_bytes"))
    # not in the measurements: the row's own figures stay, no artifact named
    assert out.loc["random@0.5", "size_bytes"] == 42.0 and out.loc["random@0.5", "artifact"] == ""


def test_a_simulated_row_never_passes_a_size_or_speed_constraint():
    rows = pd.DataFrame({"variant": ["dense", "rtn@8"], "backend": ["torch", "torch"], "kind": ["reference", "variant"],
                         "size_bytes": [270e6, 1.0], "bits_per_weight": [16.0, 8.5], "decode_tokens_per_s": [25.0, 99.0],
                         "peak_rss_bytes": [1e9, 1.0], "verdict": ["reference", "low"], "same_top_share": [1.0, 1.0],
                         "kl": [0.0, 0.0], "kld_mean": math.nan, "kld_same_top": math.nan, "accuracy": [0.5, 0.5]})
    rows = deployable(rows, None)  # no measurements: only the simulated row changes
    assert rows.loc[0, "size_bytes"] == 270e6 and math.isnan(rows.loc[1, "size_bytes"])
    decision = decide(rows, Constraints(max_size_bytes=1e12, min_decode_tokens_per_s=1.0))
    table = decision.table.set_index("variant")
    assert not table.loc["rtn@8", "fits"] and table.loc["dense", "fits"]
    assert table.loc["rtn@8", "not_measured"] == [
        "size simulated (no deployable file; nearest gguf-q8_0)", "decode simulated (no deployable file; nearest "
        "gguf-q8_0)"]
    assert "  not on the front (simulated: no deployable file): rtn@8 [torch]" in decision.lines()
