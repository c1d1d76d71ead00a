"""Loading a GGUF: the rebuilt model holds the loaded tensors themselves (one float32 copy), same values."""
from __future__ import annotations

import pytest

from tests.conftest import make_tiny_llama


def _old_rebuild(path):
    """What load_model did before issue 28: a fresh float32 model and a copy of the loaded state dict."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    return model.eval()


@pytest.mark.parametrize("tied", [True, False])
def test_gguf_load_equals_the_copying_rebuild(tmp_path, converter, smollm2_tokenizer, tied):
    import torch

    from auditor.artifacts.gguf_writer import write_gguf
    from auditor.artifacts.models import load_model, resolve_model

    path = write_gguf(make_tiny_llama(tie_word_embeddings=tied), tmp_path / "tiny.gguf", tokenizer=smollm2_tokenizer,
                      outtype="f32").path
    new, old = load_model(resolve_model(path)), _old_rebuild(path)
    got, want = new.state_dict(), old.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    buffers, reference = dict(new.named_buffers()), dict(old.named_buffers())
    assert buffers.keys() == reference.keys() and all(torch.equal(buffers[k], reference[k]) for k in buffers)
    assert not any(t.is_meta for t in (*new.parameters(), *new.buffers()))
    assert (new.lm_head.weight is new.model.embed_tokens.weight) is tied
    assert getattr(new.config, "quantization_config", None) is None and new.config._name_or_path == str(path)
    x = torch.tensor([[1, 7, 300, 42, 9]])
    with torch.inference_mode():
        assert torch.equal(new(input_ids=x).logits, old(input_ids=x).logits)


def _mapped_ranges(path):
    ranges = []
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith(str(path)):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((lo, hi))
    return ranges


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_read_weights_privately_leaves_the_mapping_with_the_same_values(tmp_path, dtype):
    import torch

    from auditor.artifacts.models import load_model, read_weights_privately, resolve_model
    from auditor.artifacts.precision import cast_copy

    folder = tmp_path / "tiny"
    make_tiny_llama(tie_word_embeddings=False).save_pretrained(folder, safe_serialization=True)
    model = load_model(resolve_model(folder))
    file = folder / "model.safetensors"
    inside = lambda t: any(lo <= t.data_ptr() < hi for lo, hi in _mapped_ranges(file))  # noqa: E731
    assert all(inside(p) for p in model.parameters())  # transformers memory-mapped the float32 folder
    want = model.state_dict() if dtype is None else cast_copy(model, dtype).state_dict()
    want = {k: v.clone() for k, v in want.items()}
    n = read_weights_privately(model, folder, dtype=None if dtype is None else getattr(torch, dtype))
    assert n == len(list(model.parameters()))
    assert not any(inside(p) for p in model.parameters())
    got = model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert all(v.dtype == want[k].dtype for k, v in got.items())
