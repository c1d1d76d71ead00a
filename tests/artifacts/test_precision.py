"""Compute dtype resolution and the one cast into it."""
from __future__ import annotations

import pytest

from auditor.artifacts import precision
from auditor.core.errors import AuditorError
from tests.conftest import make_tiny_llama


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert precision.cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize("flags,native", [({"avx512f", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True),
                                          ({"avx2", "avx512f"}, False)])
def test_auto_is_bfloat16_only_with_native_bf16(monkeypatch, flags, native):
    assert precision.cpu_has_native_bf16(frozenset(flags)) is native
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_dtype("auto") == ("bfloat16" if native else "float32")
    assert precision.resolve_dtype("float16") == "float16"  # explicit values are kept


def test_unknown_dtype_is_refused():
    with pytest.raises(AuditorError, match="'bf16'.*valid values are float32, bfloat16, float16, auto"):
        precision.resolve_dtype("bf16")


def test_cast_copies_and_keeps_the_float32_model():
    import torch

    model = make_tiny_llama()
    same = precision.cast_for_scoring(model, "float32")
    low = precision.cast_for_scoring(model, "bfloat16")
    assert same is model and low is not model
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert precision.model_compute_dtype(low) == "bfloat16"
    w32, w16 = model.model.layers[0].mlp.up_proj.weight, low.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w32.to(torch.bfloat16), w16)


def test_cast_copy_equals_deepcopy_then_cast_and_shares_nothing():
    """The memo cast: value for value what `deepcopy(model).to(dtype)` gave, tied weights still tied."""
    import copy

    import torch

    model = make_tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    low = precision.cast_copy(model, "bfloat16")
    ref = copy.deepcopy(model).to(torch.bfloat16)
    got, want = low.state_dict(), ref.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert all(torch.equal(a, b) for a, b in zip(low.buffers(), ref.buffers()))
    assert low.lm_head.weight is low.model.embed_tokens.weight  # tied, as in the source
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # source untouched, float32
    assert {p.data_ptr() for p in low.parameters()}.isdisjoint(p.data_ptr() for p in model.parameters())
    x = torch.tensor([[1, 5, 9, 300]])
    with torch.inference_mode():
        assert torch.equal(low(input_ids=x).logits, ref(input_ids=x).logits)


def test_cast_in_place_changes_the_model_itself():
    import torch

    model = make_tiny_llama()
    reference = precision.cast_for_scoring(model, "bfloat16")  # a copy
    ptr = model.model.layers[0].mlp.up_proj.weight.data_ptr()
    same = precision.cast_for_scoring(model, "bfloat16", in_place=True)
    assert same is model and precision.model_compute_dtype(model) == "bfloat16"
    assert model.model.layers[0].mlp.up_proj.weight.data_ptr() != ptr  # the float32 storage was replaced
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
