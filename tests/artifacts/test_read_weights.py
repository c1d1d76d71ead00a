"""read_weights_privately: the file's float32 bytes, cast in row slices when a dtype is given."""
from __future__ import annotations

import pytest
import torch


class _Holder(torch.nn.Module):
    def __init__(self, shapes):
        super().__init__()
        for name, shape in shapes.items():
            setattr(self, name, torch.nn.Parameter(torch.zeros(shape)))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_values_equal_the_file_cast_whole(tmp_path, monkeypatch, dtype):
    from safetensors.torch import save_file

    from auditor.artifacts import models

    torch.manual_seed(0)
    tensors = {"rows": torch.randn(1000, 37), "vector": torch.randn(5), "cube": torch.randn(3, 4, 5)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(models, "CAST_SLICE_BYTES", 4 * 37 * 7)  # 7 rows a slice: many slices, a short last one
    holder = _Holder({k: v.shape for k, v in tensors.items()})
    assert models.read_weights_privately(holder, tmp_path, dtype=dtype) == 3
    for name, value in tensors.items():
        want = value if dtype is None else value.to(dtype)
        assert torch.equal(getattr(holder, name).data, want), name


def test_a_truncated_file_names_the_tensor(tmp_path):
    from safetensors.torch import save_file

    from auditor.artifacts import models
    from auditor.core.errors import ModelError

    save_file({"rows": torch.randn(100, 8)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(ModelError, match="tensor rows is truncated"):
        models.read_weights_privately(_Holder({"rows": (100, 8)}), tmp_path, dtype=torch.bfloat16)
