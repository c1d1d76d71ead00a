"""bitsandbytes LLM.int8 and NF4 on CPU, on a tiny random Llama: reloadable, bits measured from the artifact."""
from __future__ import annotations

import copy

import pytest
import torch

from auditor.artifacts.safetensors_dir import save_hf_dir, stored_tensors
from compressors.base import Variant
from compressors.bnb import artifact_bits
from compressors.registry import apply_chain, parse_one
from compressors.scope import block_linears

pytest.importorskip("bitsandbytes")


def _shapes(model) -> dict[str, tuple[int, int]]:
    return {name: (lin.out_features, lin.in_features) for name, lin in block_linears(model)}


def test_int8_variant_bits_and_outputs(tiny_llama, tmp_path):
    shapes = _shapes(tiny_llama)
    ids = torch.randint(0, 49152, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = tiny_llama(ids).logits
    variant = parse_one("bnb-int8").apply(Variant("dense", model=copy.deepcopy(tiny_llama)), workdir=tmp_path)
    import bitsandbytes as bnb

    assert all(isinstance(lin, bnb.nn.Linear8bitLt) for _, lin in block_linears(variant.model))
    measured = variant.steps[-1].measured
    # Hand count per Linear: int8 weight (8 bits each) + fp32 SCB per output row + a 1-byte format tag.
    n = sum(o * i for o, i in shapes.values())
    bits = sum(8 * o * i + 32 * o + 8 for o, i in shapes.values())
    assert measured["bits_per_weight"] == pytest.approx(bits / n)
    assert measured["quantized_modules"] == len(shapes)
    with torch.no_grad():
        out = variant.model(ids).logits
    assert (out - reference).abs().max() < 0.05  # int8 rows of a random tiny model
    assert list(tmp_path.iterdir()) == []  # its temporary float and quantized copies are cleaned up


def test_nf4_variant_bits_within_format_bounds(tiny_llama):
    shapes = _shapes(tiny_llama)
    variant = parse_one("bnb-nf4").apply(Variant("dense", model=tiny_llama))
    import bitsandbytes as bnb

    assert all(isinstance(lin, bnb.nn.Linear4bit) for _, lin in block_linears(variant.model))
    n = sum(o * i for o, i in shapes.values())
    core = 4 + 32 / 64  # 4-bit codes + one fp32 absmax per block of 64
    # plus, per Linear, a 16-entry fp32 code table and a small serialized quant state (< 256 bytes)
    per_module_max = 16 * 32 + 256 * 8
    bits = variant.steps[-1].measured["bits_per_weight"]
    assert core < bits <= core + len(shapes) * per_module_max / n
    assert variant.steps[-1].params["config"]["bnb_4bit_quant_type"] == "nf4"


@pytest.mark.parametrize("spec", ["magnitude@0.5+bnb-int8", "magnitude@0.5+bnb-nf4"])
def test_pruned_zeros_survive_quantization(tiny_llama, spec):
    variant = apply_chain(spec, tiny_llama)
    assert variant.steps[-1].measured["zeros_preserved"] is True


def test_quantized_variant_is_reloadable(tiny_llama, tmp_path):
    from auditor.artifacts.models import load_model, resolve_model

    variant = parse_one("bnb-int8").apply(Variant("dense", model=tiny_llama))
    out = save_hf_dir(variant.model, None, tmp_path / "int8")
    source = resolve_model(out)
    assert source.reference_precision.startswith("quantized (bitsandbytes")
    reloaded = load_model(source)
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, variant.model(ids).logits)


def test_artifact_bits_counts_weight_and_statistics_only():
    from auditor.artifacts.safetensors_dir import StoredTensor as T

    tensors = {"a.weight": T("I8", (4, 8), 32), "a.SCB": T("F32", (4,), 16), "a.bias": T("F32", (4,), 16),
               "emb.weight": T("F32", (10, 8), 320)}
    bits = artifact_bits(tensors, {"a": 32}, total_params=32 + 4 + 80)
    assert bits["bits_per_weight"] == 8 * 48 / 32
    assert bits["bits_per_weight_model"] == 8 * 384 / 116


def test_stored_tensors_reads_safetensors_headers(tiny_llama, tmp_path):
    out = save_hf_dir(tiny_llama, None, tmp_path / "f32")
    tensors = stored_tensors(out)
    assert tensors["model.layers.0.mlp.up_proj.weight"].shape == (128, 64)
    assert tensors["model.layers.0.mlp.up_proj.weight"].nbytes == 128 * 64 * 4
    assert sum(t.nbytes for t in tensors.values()) == 4 * sum(p.numel() for p in tiny_llama.parameters())
