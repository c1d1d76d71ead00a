"""Full sha256s of files and artifacts: streamed, cached by (path, size, mtime), the same digests sha256sum gives."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from auditor.core import provenance
from auditor.core.provenance import file_fingerprint, file_records, sha256_file, tree_sha256


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.setattr(provenance, "_DIGESTS", {})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "model.safetensors").write_bytes(os.urandom(3 * provenance.CHUNK + 17))  # several blocks and a tail
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_sha256_file_streams_the_whole_file(tmp_path):
    path = tmp_path / "w.bin"
    data = os.urandom(2 * provenance.CHUNK + 5)
    path.write_bytes(data)
    assert sha256_file(path) == _sha(data) and len(sha256_file(path)) == 64


def test_digest_is_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    first = sha256_file(path)
    stamp = path.stat().st_mtime_ns
    path.write_bytes(b"b" * 100)  # same size; restoring the mtime makes the key equal: the cached digest comes back
    os.utime(path, ns=(stamp, stamp))
    assert sha256_file(path) == first
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime: hashed again
    assert sha256_file(path) == _sha(b"b" * 100)


def test_fingerprint_keeps_its_form_and_fills_the_cache(tmp_path, monkeypatch):
    root = _tree(tmp_path / "model")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    expected = hashlib.sha256()
    for f in files:  # the form runs and unit keys were built on: name then bytes, per file in path order
        expected.update(f.name.encode())
        expected.update(f.read_bytes())
    assert file_fingerprint(root) == expected.hexdigest()[:16]

    want = [_sha(f.read_bytes()) for f in files]

    def no_reading(self, *args, **kwargs):
        raise AssertionError(f"{self} read a second time")

    monkeypatch.setattr(Path, "open", no_reading)  # each file's sha256 came with the fingerprint's one pass
    assert [sha256_file(f) for f in files] == want


def test_file_records_list_every_file_of_a_folder(tmp_path):
    root = _tree(tmp_path / "model")
    records = file_records(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert records == [{"path": str(f), "size_bytes": f.stat().st_size, "sha256": _sha(f.read_bytes())} for f in files]
    assert file_records(root / "config.json") == [records[0]]


def test_tree_sha256_is_the_sha256_of_a_sha256sum_listing(tmp_path):
    root = _tree(tmp_path / "artifact")
    listing = "".join(f"{_sha(f.read_bytes())}  {f.relative_to(root).as_posix()}\n"
                      for f in sorted((p for p in root.rglob("*") if p.is_file()),
                                      key=lambda p: p.relative_to(root).as_posix()))
    assert listing.count("\n") == 3 and "  sub/tokenizer.json\n" in listing
    assert tree_sha256(root) == _sha(listing.encode())
    assert tree_sha256(root / "config.json") == _sha(b'{"a": 1}')  # a single file: its own digest
    before = tree_sha256(root)
    (root / "sub" / "tokenizer.json").write_text("{ }")  # any byte of any file changes the digest
    assert tree_sha256(root) != before
