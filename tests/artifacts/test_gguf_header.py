"""The fast GGUF header reader equals gguf's GGUFReader on every scalar and string value and on the tensor
table, and refuses a truncated or corrupt file as GGUFReader did (auditor.artifacts.gguf_header)."""
from __future__ import annotations

import pytest

from auditor.artifacts.gguf_header import gguf_header, gguf_metadata
from auditor.core.errors import ModelError


def _reader_values(path) -> dict:
    from gguf import GGUFReader, GGUFValueType

    out = {}
    for name, field in GGUFReader(str(path)).fields.items():
        if field.types and field.types[0] != GGUFValueType.ARRAY and not name.startswith("GGUF."):
            out[name] = field.contents()
    return out


def test_equals_gguf_reader_on_the_embedded_model(smollm2_source):
    ours = gguf_metadata(smollm2_source.path)
    theirs = _reader_values(smollm2_source.path)
    assert ours.keys() == theirs.keys() and "tokenizer.chat_template" in ours
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value) if isinstance(value, float) else ours[key] == value, key


def test_tensor_table_equals_gguf_reader_on_the_embedded_model(smollm2_source):
    from gguf import GGUFReader

    theirs = [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_elements), int(t.n_bytes))
              for t in GGUFReader(str(smollm2_source.path)).tensors]
    ours = [(t.name, t.type_name, t.shape, t.n_elements, t.n_bytes) for t in gguf_header(smollm2_source.path).tensors]
    assert len(ours) > 100 and {t[1] for t in ours} >= {"Q4_1", "F32"}
    assert ours == theirs


@pytest.mark.parametrize("cut", [0.5, 0.999, 0.001])  # tensor data cut, last bytes gone, header itself cut
def test_truncated_file_is_refused_with_its_size(tmp_path, smollm2_source, cut):
    data = smollm2_source.path.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelError, match=rf"^{path}: unreadable GGUF: its header or tensor table is truncated"):
        gguf_metadata(path)


def test_not_a_gguf(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"ONNX" + b"\0" * 64)
    with pytest.raises(ModelError, match="no GGUF magic"):
        gguf_metadata(path)


def test_a_changed_file_is_read_again(tmp_path, smollm2_source):
    path = tmp_path / "m.gguf"
    data = smollm2_source.path.read_bytes()
    path.write_bytes(data)
    assert gguf_metadata(path)["general.architecture"] == "llama"
    path.write_bytes(data[:100])  # same path, other size: not the kept result
    with pytest.raises(ModelError):
        gguf_metadata(path)
