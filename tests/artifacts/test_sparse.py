"""Sparse-aware layouts: exact round trips, hand-computed sizes, zstd, and the sparse directory."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from auditor.artifacts.sparse import (
    SafetensorsDir,
    bitmask_decode,
    bitmask_encode,
    csr_decode,
    csr_encode,
    encode,
    encoded_nbytes,
    load_bitmask,
    load_sparse,
    load_sparse_model,
    save_sparse,
    write_sparse_dir,
    zstd_compress,
    zstd_decompress,
)
from auditor.core.errors import DataError
from compressors.base import Variant
from compressors.registry import parse_chain


def _bits(t: torch.Tensor) -> torch.Tensor:
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(as_int)


def _assert_bit_identical(restored: dict, original: dict) -> None:
    assert set(restored) == set(original)
    for name, t in original.items():
        got = restored[name]
        assert got.dtype == t.dtype and got.shape == t.shape, name
        assert torch.equal(_bits(got), _bits(t)), name


@pytest.fixture
def pruned_tiny(tiny_llama):
    (step,) = parse_chain("magnitude@0.5")
    return step.apply(Variant("dense", model=tiny_llama)).model


def test_bitmask_round_trip_is_bit_identical_on_pruned_model(pruned_tiny, tmp_path):
    state = pruned_tiny.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()  # tied
    written = save_sparse(state, tmp_path / "m.safetensors", "bitmask")
    # 2 layers x 7 block Linears are pruned to 50% and encoded; nothing else shrinks.
    assert written.n_encoded == 14
    _assert_bit_identical(load_bitmask(written.path), state)


def test_csr_round_trip_is_bit_identical_on_pruned_model(pruned_tiny, tmp_path):
    state = pruned_tiny.state_dict()
    written = save_sparse(state, tmp_path / "m.safetensors", "csr")
    assert written.n_encoded == 14
    _assert_bit_identical(load_sparse(written.path), state)


def test_negative_zero_and_nan_survive():
    t = torch.tensor([[0.0, -0.0, float("nan"), 1.0], [0.0, 0.0, 0.0, -2.5]])
    restored = bitmask_decode(**bitmask_encode(t), shape=(2, 4), dtype=t.dtype)
    assert torch.equal(_bits(restored), _bits(t))
    restored = csr_decode(**csr_encode(t), shape=(2, 4), dtype=t.dtype)
    assert torch.equal(_bits(restored), _bits(t))


def test_csr_hand_computed():
    t = torch.tensor([[0.0, 1.5], [2.0, 0.0], [0.0, 0.0]])
    parts = csr_encode(t)
    assert parts["indptr"].dtype == torch.uint8 and parts["indptr"].tolist() == [0, 1, 2, 2]
    assert parts["indices"].dtype == torch.uint8 and parts["indices"].tolist() == [1, 0]
    assert parts["values"].tolist() == [1.5, 2.0]


def test_bitmask_hand_computed_bits():
    t = torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0]])
    parts = bitmask_encode(t)
    # row-major bits 010000001 -> packbits (big-endian, zero padded): 0b01000000, 0b10000000
    assert parts["bitmask"].tolist() == [64, 128]
    assert parts["values"].tolist() == [3.0, 7.0]


def test_bitmask_half_sparse_matrix_is_smaller_than_dense():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(128, 64, generator=gen)
    w[torch.rand(128, 64, generator=gen).argsort(dim=1) < 32] = 0.0  # exactly 32 zeros per row
    parts = encode(w, "bitmask")
    # hand-computed: 8192 bits / 8 = 1024 bytes of mask + 4096 float32 values * 4 = 16384 bytes
    assert encoded_nbytes(parts) == 1024 + 16384 < 128 * 64 * 4
    # CSR: 129 uint16 offsets (nnz 4096 > 255) + 4096 uint8 columns + 4096 * 4 bytes of values
    assert encoded_nbytes(encode(w, "csr")) == 129 * 2 + 4096 + 16384


def test_dense_matrix_is_stored_as_is(tiny_llama, tmp_path):
    written = save_sparse(tiny_llama.state_dict(), tmp_path / "d.safetensors", "bitmask")
    assert written.n_encoded == 0


def test_sparse_file_smaller_than_dense_file_at_half_sparsity(pruned_tiny, tmp_path):
    state = pruned_tiny.state_dict()
    dense = {k: v.clone() for k, v in state.items() if k != "lm_head.weight"}  # tied: stored once
    save_file(dense, str(tmp_path / "dense.safetensors"))
    dense_size = (tmp_path / "dense.safetensors").stat().st_size
    for layout in ("bitmask", "csr"):
        written = save_sparse(state, tmp_path / f"{layout}.safetensors", layout)
        assert written.dense_tensor_bytes == sum(v.numel() * v.element_size() for v in dense.values())
        assert written.size_bytes < dense_size


def test_zstd_reports_size_and_restores_bytes(pruned_tiny, tmp_path):
    src = tmp_path / "model.safetensors"
    save_file({k: v.clone() for k, v in pruned_tiny.state_dict().items() if k != "lm_head.weight"}, str(src))
    size = zstd_compress(src, tmp_path / "model.safetensors.zst", level=3)
    assert size == (tmp_path / "model.safetensors.zst").stat().st_size
    assert 0 < size < src.stat().st_size  # half the block weights are zero bytes
    zstd_decompress(tmp_path / "model.safetensors.zst", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()


def test_load_sparse_rejects_other_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(plain))
    with pytest.raises(DataError, match="plain.safetensors.*not a sparse-layout file"):
        load_sparse(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x01\x00")
    with pytest.raises(DataError, match="junk.safetensors.*unreadable"):
        load_sparse(junk)
    with pytest.raises(DataError, match="missing.safetensors"):
        load_sparse(tmp_path / "missing.safetensors")


def test_sparse_dir_loads_into_a_model_with_identical_outputs(pruned_tiny, tmp_path):
    hf = tmp_path / "hf"
    pruned_tiny.save_pretrained(hf)
    export = write_sparse_dir(hf, tmp_path / "sparse", zstd_level=1)
    assert export.size_bytes("bitmask") < export.dense_weights_bytes + export.other_bytes
    assert export.size_bytes("zstd") > 0
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.inference_mode():
        want = pruned_tiny(ids).logits
        for layout in ("bitmask", "csr"):
            model = load_sparse_model(tmp_path / "sparse", layout)
            assert torch.equal(model(ids).logits, want)
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_directory_tensors_are_read_one_at_a_time_and_never_taken_for_ties(pruned_tiny, tmp_path):
    """write_sparse_dir reads each tensor when it encodes it; a freed tensor's storage address can come
    back for the next one, so storage keys must not alias tensors read that way."""
    hf = tmp_path / "hf"
    pruned_tiny.save_pretrained(hf)
    lazy = SafetensorsDir(hf)
    state = {k: v for k, v in pruned_tiny.state_dict().items() if k != "lm_head.weight"}  # tied: not saved
    assert set(lazy) == set(state) and len(lazy) == len(state)
    _assert_bit_identical({k: lazy[k] for k in lazy}, state)
    weight = state["model.layers.0.mlp.up_proj.weight"]
    twice = {"a": weight, "b": weight}  # one storage under two names, as a reused address would look
    tied = save_sparse(twice, tmp_path / "tied.safetensors", "bitmask")
    kept = save_sparse(twice, tmp_path / "kept.safetensors", "bitmask", shared_storage=False)
    assert (tied.n_encoded, kept.n_encoded) == (1, 2)
    _assert_bit_identical(load_sparse(tmp_path / "kept.safetensors"), twice)


def test_deepcopy_untouched_by_encoding(pruned_tiny):
    before = copy.deepcopy(pruned_tiny.state_dict())
    encode(pruned_tiny.model.layers[0].mlp.up_proj.weight.data, "bitmask")
    _assert_bit_identical(pruned_tiny.state_dict(), before)
