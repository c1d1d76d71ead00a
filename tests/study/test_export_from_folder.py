"""Issue 28: the dense model goes to GGUF from its float32 folder, never read into the process.

A unit worker, and `auditor measure`, hand llama.cpp's converter the dense float32 safetensors
folder itself (linked beside the saved tokenizer) instead of saving a copy of a loaded model. The
GGUF must be the one the old path wrote from the model, byte for byte, both for a GGUF
quantization variant and for the F16 export the llama.cpp runtime baseline scores. bitsandbytes
loads the folder quantized with plain reads, so the quantized model holds none of its pages.
"""
from __future__ import annotations

import hashlib

from tests.study.test_units_memory import _worker


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gguf_variant_from_the_folder_equals_the_export_of_the_model(tmp_path, tiny_model_dir, converter):
    from auditor.artifacts.models import load_model, resolve_model
    from compressors.registry import build_variant, parse_chain

    worker = _worker(tmp_path / "run", tiny_model_dir)
    try:
        built = worker.build("gguf-q8_0", backend="llama.cpp")
        assert built.steps[0].measured["requested_type"] == "Q8_0"
        from_folder = _sha256(built.gguf_path)
    finally:
        worker.close()
    model = load_model(resolve_model(tiny_model_dir))
    saved = build_variant(parse_chain("gguf-q8_0"), model, workdir=tmp_path / "saved")  # saved from the model
    assert from_folder == _sha256(saved.gguf_path)


def test_runtime_baseline_export_reads_the_folder(tmp_path, tiny_model_dir, converter, monkeypatch):
    from auditor.artifacts import safetensors_dir
    from auditor.artifacts.gguf_writer import write_gguf
    from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
    from auditor.data.rundir import SCORE, Unit

    def no_save(*args, **kwargs):
        raise AssertionError("the dense model was saved again instead of linked")

    worker = _worker(tmp_path / "run", tiny_model_dir)
    monkeypatch.setattr("auditor.artifacts.gguf_writer.save_hf_dir", no_save)
    try:
        result = worker.execute(Unit(SCORE, "dense", "dense", "llama.cpp"))
        assert result.error is None, result.error
        exported = worker._built.workdir / "model-f16.gguf"
        from_folder = _sha256(exported)
    finally:
        worker.close()
    monkeypatch.setattr("auditor.artifacts.gguf_writer.save_hf_dir", safetensors_dir.save_hf_dir)
    model = load_model(resolve_model(tiny_model_dir))
    want = write_gguf(model, tmp_path / "saved.gguf", tokenizer=load_tokenizer(resolve_model(tiny_model_dir)),
                      outtype="f16", name="dense")
    assert from_folder == _sha256(want.path)


def test_bnb_variant_from_the_folder_equals_the_saved_model_path(tmp_path, tiny_model_dir):
    import torch

    from auditor.artifacts.models import load_model, resolve_model
    from compressors.registry import build_variant, parse_chain

    worker = _worker(tmp_path / "run", tiny_model_dir)
    try:
        built = worker.build("bnb-nf4")
        got = {k: v.clone() for k, v in built.model.state_dict().items() if torch.is_tensor(v)}
        got_measured = built.steps[0].measured
    finally:
        worker.close()
    saved = build_variant(parse_chain("bnb-nf4"), load_model(resolve_model(tiny_model_dir)))
    want = {k: v for k, v in saved.model.state_dict().items() if torch.is_tensor(v)}
    assert got.keys() == want.keys() and [k for k in got if not torch.equal(got[k], want[k])] == []
    assert got_measured == saved.steps[0].measured


def test_measure_exports_the_dense_gguf_from_the_folder(tmp_path, tiny_model_dir, converter, monkeypatch):
    """`auditor measure`'s dense F16 export: the folder itself, not the model saved again (which read every
    page of the folder's map into the process: 7.1 GB at 1.5B parameters)."""
    from auditor.artifacts import safetensors_dir
    from auditor.artifacts.gguf_writer import write_gguf
    from auditor.artifacts.models import float32_weights_dir, load_model, load_tokenizer, resolve_model
    from auditor.measure.exports import export_gguf
    from compressors.registry import build_on_load

    def no_save(*args, **kwargs):
        raise AssertionError("the dense model was saved again instead of linked")

    source = resolve_model(tiny_model_dir)
    tokenizer = load_tokenizer(source)
    weights = float32_weights_dir(source, tmp_path / "f32")
    dense = build_on_load([], load_model(source, weights=weights), weights)
    monkeypatch.setattr("auditor.artifacts.gguf_writer.save_hf_dir", no_save)
    from_folder = _sha256(export_gguf(dense, tokenizer, tmp_path / "dense.gguf"))
    monkeypatch.setattr("auditor.artifacts.gguf_writer.save_hf_dir", safetensors_dir.save_hf_dir)
    want = write_gguf(load_model(source), tmp_path / "saved.gguf", tokenizer=tokenizer, outtype="f16", name="dense")
    assert from_folder == _sha256(want.path)


def _mapped_ranges(prefix: str) -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of files under `prefix` (/proc/self/maps)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip().startswith(prefix):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def test_bnb_reads_the_folder_instead_of_mapping_it(tmp_path, tiny_model_dir):
    """The quantizing load reads the float32 folder: equal, tensor for tensor and saved file for saved
    file (its generation config included), to transformers' own memory-mapped load of it, and the
    quantized model keeps no map of the folder open (the mapped load left its unquantized tensors as
    views of the files, so their pages stayed resident)."""
    import json
    import shutil
    import sys

    import torch
    from transformers import AutoModelForCausalLM

    from auditor.artifacts.models import float32_weights_dir, load_model, resolve_model
    from auditor.artifacts.safetensors_dir import save_hf_dir
    from compressors.registry import build_on_load, parse_chain

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    # A generation config the model's config.json cannot give: a load that ignores the file differs.
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.25,
                                                               "bos_token_id": 1, "eos_token_id": 2}))
    source = resolve_model(folder)
    weights = float32_weights_dir(source, tmp_path / "f32")
    variant = build_on_load(parse_chain("bnb-nf4"), load_model(source, weights=weights), weights)
    if sys.platform.startswith("linux"):  # no tensor of the quantized model lives in a map of the folder
        ranges = _mapped_ranges(str(weights.resolve()))
        tensors = [*variant.model.parameters(), *variant.model.buffers()]
        assert [t for t in tensors if any(lo <= t.data_ptr() < hi for lo, hi in ranges)] == []
    got = {k: v for k, v in variant.model.state_dict().items() if torch.is_tensor(v)}
    step = parse_chain("bnb-nf4")[0]
    mapped = AutoModelForCausalLM.from_pretrained(str(weights), quantization_config=step.quantization_config(),
                                                  dtype=torch.float32, device_map={"": "cpu"}, use_safetensors=True)
    want = {k: v for k, v in mapped.state_dict().items() if torch.is_tensor(v)}
    assert got.keys() == want.keys() and [k for k in got if not torch.equal(got[k], want[k])] == []
    ours, theirs = save_hf_dir(variant.model, None, tmp_path / "ours"), save_hf_dir(mapped, None, tmp_path / "theirs")
    assert sorted(f.name for f in ours.iterdir()) == sorted(f.name for f in theirs.iterdir())
    assert [f.name for f in ours.iterdir() if f.read_bytes() != (theirs / f.name).read_bytes()] == []
