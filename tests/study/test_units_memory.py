"""The worker's one-model-at-a-time path (issue 28): fresh loads, in-place casts, and builds again when needed."""
from __future__ import annotations

import mmap

import numpy as np

from tests.conftest import SAMPLE_BBQ


def _worker(run_dir, model_path, dtype="bfloat16"):
    from auditor.artifacts.models import resolve_model
    from auditor.data.bbq import select_items
    from auditor.data.prompt_format import choose_format
    from auditor.study.spec import CalibrationSettings
    from auditor.study.units import RunContext, UnitWorker

    items = select_items([SAMPLE_BBQ], n=4, seed=0).items
    ctx = RunContext(key="t", run_dir=str(run_dir), source=resolve_model(model_path), items=tuple(items), seeds=(0,),
                     compress_seed=0, batch_size=4, device="cpu", threads=1, trust_remote_code=False,
                     calibration=CalibrationSettings(None, 2, 32), perplexity=None, keep_artifacts=False,
                     dtype=dtype, prompt_format=choose_format(True))
    return UnitWorker(ctx)


def _logprobs(result):
    assert result.error is None, result.error
    return result.records.filter(like="logprob").to_numpy(dtype=float)


def test_float32_baseline_after_bf16_units_reads_float32_weights(tmp_path, tiny_model_dir):
    from auditor.analysis.baselines import DENSE_FLOAT32
    from auditor.data.rundir import SCORE, Unit

    bf16_unit = Unit(SCORE, "dense", "dense", "torch")
    f32_unit = Unit(SCORE, DENSE_FLOAT32, "dense", "torch")
    worker = _worker(tmp_path / "a", tiny_model_dir)
    try:
        low = worker.execute(bf16_unit)
        assert low.descriptor["compute_dtype"] == "bfloat16"
        after = worker.execute(f32_unit)  # the dense model was cast in place: it is loaded again
        assert after.descriptor["compute_dtype"] == "float32"
    finally:
        worker.close()
    fresh = _worker(tmp_path / "b", tiny_model_dir)
    try:
        alone = fresh.execute(f32_unit)
    finally:
        fresh.close()
    np.testing.assert_array_equal(_logprobs(after), _logprobs(alone))
    assert not np.array_equal(_logprobs(low), _logprobs(alone))  # bfloat16 really was scored in bfloat16


def test_a_compressed_variant_is_compressed_on_a_fresh_load_in_place(tmp_path, tiny_model_dir):
    import torch

    worker = _worker(tmp_path, tiny_model_dir)
    try:
        dense = worker.build("dense").model
        dense_weight = dense.model.layers[0].mlp.up_proj.weight.detach().clone()
        pruned = worker.build("magnitude@0.5").model
        assert pruned is not dense  # a new load, not the dense model modified
        assert worker._weights == worker.ctx.source.path  # a float32 HF directory is its own float32 folder
        zeros = float((pruned.model.layers[0].mlp.up_proj.weight == 0).float().mean())
        assert abs(zeros - 0.5) < 0.01
        assert torch.count_nonzero(dense_weight) == dense_weight.numel()
    finally:
        worker.close()
    assert (tiny_model_dir / "model.safetensors").is_file()  # the source is never removed


def test_gguf_source_gets_a_float32_folder_removed_at_close(tmp_path, converter, smollm2_tokenizer):
    import torch

    from auditor.artifacts.gguf_writer import write_gguf
    from auditor.artifacts.models import load_model, resolve_model
    from tests.conftest import make_tiny_llama

    path = write_gguf(make_tiny_llama(), tmp_path / "tiny.gguf", tokenizer=smollm2_tokenizer, outtype="f32").path
    worker = _worker(tmp_path / "run", path)
    try:
        model = worker.build("dense").model
        folder = worker._weights
        assert folder.parent == tmp_path / "run" / "artifacts" and (folder / "float32-weights.done").is_file()
        reference = load_model(resolve_model(path))
        got, want = model.state_dict(), reference.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        assert model.config._name_or_path == str(path)  # where the tokenizer is found (GGUF export)
    finally:
        worker.close()
    assert not folder.exists() and path.is_file()


def test_each_finished_unit_keeps_its_own_peak_memory_and_status_shows_the_highest(small_study, capsys,
                                                                                  monkeypatch):
    """A unit's commit record keeps its peak resident memory: the process's high-water mark reset when the unit
    starts, so a unit that allocates 300 MB peaks 300 MB higher and the next one, after it freed them, does not.
    `auditor status` shows each unit's and the run's highest (any invocation's units, a resumed run's too)."""
    import pytest

    from auditor.artifacts.models import return_freed_memory
    from auditor.cli import main
    from auditor.core.rss import reset_peak, vm_rss_bytes
    from auditor.data.rundir import Unit, load_manifest, read_commit
    from auditor.study import units

    if not reset_peak():
        pytest.skip("this system cannot reset the resident high-water mark (/proc/self/clear_refs)")
    real_score = units.score
    big = 300 * 1024 * 1024
    chunk = b"\x01" * (1024 * 1024)
    holding = []

    def score(backend, prompts, variant):
        if variant == "dense":  # the first unit run: 300 MB touched, then freed
            # An anonymous mapping, not a numpy array: glibc serves a large array from freed heap pages that are
            # still resident when it has them, which adds nothing to RSS (a long test process had them: CI
            # recorded both units at 2.32 GB, 0.1 MB apart). These pages are new, and close() unmaps them.
            with mmap.mmap(-1, big) as held:
                for _ in range(big // len(chunk)):
                    held.write(chunk)
                holding.append(vm_rss_bytes())
            assert vm_rss_bytes() < holding[0] - 0.8 * big, "the unmapped pages are still resident"
        return real_score(backend, prompts, variant)

    monkeypatch.setattr(units, "score", score)
    study = small_study("peaks", variants=("magnitude@0.5",), n_items=4, seeds=(0,))
    return_freed_memory()  # earlier tests' garbage, if collected during the dense unit, would hide its 300 MB
    assert main(["run", str(study)]) == 0
    run_dir = study.parent / "reports" / "peaks"
    manifest = load_manifest(run_dir)
    peaks = {}
    for raw in manifest["units"]:
        unit = Unit.from_manifest(raw)
        peaks[unit.variant] = read_commit(run_dir, unit)["peak_rss_bytes"]
    assert all(isinstance(p, int) and p > 0 for p in peaks.values()), peaks
    # The mark covers what the unit held at its height, up to the kernel's approximate read of its per-CPU
    # counters behind VmHWM (VmRSS sums them exactly: 0.3 MB apart on 2 CPUs here).
    assert peaks["dense"] > holding[0] - 16 * 1024 * 1024, (peaks, holding)
    assert peaks["dense"] - peaks["magnitude@0.5"] > 0.8 * big, peaks
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert sum(" peak " in line for line in out.splitlines() if line.startswith("  finished")) == len(peaks)
    assert f"highest unit peak memory: {peaks['dense'] / 1e9:.2f} GB (" in out and "2 of 2 finished units" in out
