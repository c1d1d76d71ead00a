"""Each measured artifact carries the sha256 of what was timed and sized (issue 30: exact provenance), taken before
the temporary artifacts are deleted; the report prints them whole."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.core.provenance import tree_sha256
from auditor.measure.measurement import MeasureSettings, measure
from auditor.report.document import Table
from auditor.report.provenance import provenance_section
from auditor.view.run import read_storage
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_tokenizer):
    from auditor.artifacts.safetensors_dir import save_hf_dir

    return save_hf_dir(make_tiny_llama(), smollm2_tokenizer, tmp_path_factory.mktemp("tiny") / "model")


def test_measured_artifacts_carry_their_sha256(tiny_dir, tmp_path):
    settings = MeasureSettings(repeats=1, new_tokens=2, bbq_items=1, zstd_level=1)
    report = measure(["magnitude@0.5"], model=str(tiny_dir), settings=settings, out_dir=tmp_path,
                     keep_artifacts=True)
    rows = json.loads((tmp_path / "measurements.json").read_text())["measurements"]
    assert rows and report.artifacts_dir is not None
    for r in rows:  # the kept artifacts are the files measured: their digests must match what was recorded
        assert r["sha256"] == tree_sha256(Path(report.artifacts_dir) / r["path"]), r["path"]
    dense = [r["sha256"] for r in rows if r["variant"] == "dense"]
    assert len(set(dense)) == len(dense) > 1  # each layout is its own file: a digest names one artifact
    # Which llama.cpp kernels were timed (llama_amx): said for every llama.cpp row, never for torch's.
    timed = {r["runtime"]: r["llama_extra_buffers"] for r in rows if r["runtime"] is not None}
    assert timed["torch"] is None and isinstance(timed["llama.cpp"], bool)

    class View:  # the section reads only the manifest and the storage table
        manifest: dict = {}
        storage = read_storage(tmp_path)

    tables = [b for b in provenance_section(View()) if isinstance(b, Table)]
    printed = {row[-1] for t in tables for row in t.rows}
    assert {r["sha256"] for r in rows} <= printed
