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
