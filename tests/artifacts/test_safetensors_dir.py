"""save_hf_dir: atomic HF directories with safetensors weights that reload bit-identically."""
from __future__ import annotations

import pytest
import torch

from auditor.artifacts.safetensors_dir import save_hf_dir
from auditor.core.errors import AuditorError
from compressors.registry import apply_chain


def test_round_trip_is_bit_identical_and_leaves_no_temp(tiny_llama, tmp_path, smollm2_tokenizer):
    from auditor.artifacts.models import load_model, load_tokenizer, resolve_model

    pruned = apply_chain("magnitude@0.5", tiny_llama).model
    out = save_hf_dir(pruned, smollm2_tokenizer, tmp_path / "variant")
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert not list(out.glob("*.bin"))
    assert [p.name for p in tmp_path.iterdir()] == ["variant"]
    source = resolve_model(out)
    reloaded = load_model(source)
    a, b = pruned.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_tokenizer(source).encode("A short test.") == smollm2_tokenizer.encode("A short test.")


def test_replaces_a_previous_model_dir_but_not_other_folders(tiny_llama, tmp_path):
    out = save_hf_dir(tiny_llama, None, tmp_path / "m")
    (out / "stale.txt").write_text("from the previous export")
    save_hf_dir(tiny_llama, None, out)
    assert not (out / "stale.txt").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(AuditorError, match="not overwriting"):
        save_hf_dir(tiny_llama, None, other)
    assert (other / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (save_hf_dir(tiny_llama, None, empty) / "config.json").is_file()
