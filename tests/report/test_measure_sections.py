"""The report's measurement sections read the run directory through the view: interleaved claims with
intervals, time to first token and peak memory per format, and the sparse-kernel table (planted timings)."""
from __future__ import annotations

import pandas as pd

from auditor.analysis.claims import sparse_breakeven, sparse_kernel_table
from auditor.core.files import write_json
from auditor.data.rundir import SPARSE_KERNELS_FILE
from auditor.report.markdown import write_report
from auditor.view.run import RunView
from tests.helpers_runs import build_run


def _timing(name, tokens, sparsity, kernel, seconds, shape=(576, 576), scope="linear"):
    return {"scope": scope, "name": name, "shape": list(shape) if shape else None, "tokens": tokens,
            "sparsity": sparsity, "kernel": kernel, "device": "cpu", "seconds": seconds, "stored_fraction": 0.5}


#: CSR slower than dense at 50%, faster beyond noise at 90% in every round; BSR noisy around dense at 90%.
TIMINGS = [
    _timing("q_proj, o_proj", 1, 0.5, "dense", [1e-3, 2e-3, 1.5e-3]),
    _timing("q_proj, o_proj", 1, 0.5, "csr", [4e-3, 8e-3, 6e-3]),
    _timing("q_proj, o_proj", 1, 0.9, "dense", [1e-3, 2e-3, 1.5e-3]),
    _timing("q_proj, o_proj", 1, 0.9, "csr", [0.4e-3, 0.8e-3, 0.6e-3]),
    _timing("q_proj, o_proj", 1, 0.9, "bsr", [0.8e-3, 2.4e-3, 1.5e-3]),
]


def test_sparse_kernel_table_hand_computed():
    table = sparse_kernel_table(TIMINGS).set_index(["sparsity", "kernel"])
    r = table.loc[(0.5, "csr")]  # paired speed-ups 0.25 in every round
    assert r["speedup"] == 0.25 and r["faster"] == "dense" and r["verdict"] == "agrees"
    r = table.loc[(0.9, "csr")]  # 2.5x in every round: the claim "no latency saved" fails
    assert abs(r["speedup"] - 2.5) < 1e-9 and r["faster"] == "sparse" and r["verdict"] == "disagrees"
    r = table.loc[(0.9, "bsr")]  # 1.25x, 0.83x, 1.0x: the interval straddles 1
    assert r["faster"] == "neither (noise)" and r["verdict"] == "inconclusive (noise)"
    wins = sparse_breakeven(sparse_kernel_table(TIMINGS)).set_index("kernel")
    assert wins.loc["csr", "beats_dense_from"] == 0.9 and pd.isna(wins.loc["bsr", "beats_dense_from"])


def test_report_shows_interleaved_claims_and_sparse_kernels(tmp_path):
    run = build_run(tmp_path, variants=("magnitude@0.5",))

    def spread(values):
        return {"median": sorted(values)[1], "min": min(values), "max": max(values), "values": values}

    dense = {"variant": "dense", "family": "dense", "format": "gguf", "layout": "F16", "runtime": "llama.cpp",
             "path": "d.gguf", "size_bytes": 270_000_000, "bits_per_weight": 16.0,
             "prefill_tokens_per_s": spread([100.0, 50.0, 80.0]), "decode_tokens_per_s": spread([10.0, 5.0, 8.0]),
             "time_to_first_token_s": spread([0.25, 0.5, 0.3]), "peak_rss_bytes": 400_000_000}
    # round by round as fast as dense, although the load (dense 50 vs 100) moved between rounds
    pruned = {**dense, "variant": "magnitude@0.5", "family": "prune", "path": "m.gguf",
              "prefill_tokens_per_s": spread([101.0, 50.0, 79.0]), "decode_tokens_per_s": spread([10.0, 5.1, 8.0])}
    write_json({"measurements": [dense, pruned], "workload": {"n_threads": 2}, "machine": {"cpus": "2"},
                "load_average": {"start": 1.0, "end": 4.0, "min": 1.0, "max": 4.0, "moved": True}},
               run / "measurements.json")
    write_json({"timings": TIMINGS, "torch_threads": 1, "machine": {"cpus": "2"},
                "load_average": {"start": 3.0, "end": 3.5}, "notes": ["2:4 semi-structured: skipped, no CUDA device"]},
               run / SPARSE_KERNELS_FILE)
    view = RunView.load(run, n_boot=50)
    assert view.claims.iloc[0]["verdict"] == "agrees"
    assert len(view.sparse_kernels) == 3 and view.sparse_context["torch_threads"] == 1
    write_report(run)
    text = (run / "report.md").read_text()
    assert "interleaved rounds" in text and "load average was 1.0-4.0" in text and "other work competed" in text
    assert "| magnitude@0.5 | gguf | F16 |" in text and "1.00x (0.99-1.01)" in text and "| agrees |" in text
    assert "time to first token ms" in text and "| 300 | 400.0 MB |" in text and "400.0 MB" in text
    assert "### Sparse kernels vs dense" in text and "| 2.50x (2.50-2.50) | sparse | disagrees |" in text
    assert "q_proj, o_proj, 1 tokens, csr (cpu): beats dense from 90.0% sparsity" in text
    assert "bsr (cpu): never beats dense" in text and "skipped, no CUDA device" in text
