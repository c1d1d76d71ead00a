"""atomic_path: the content is flushed to disk before the rename, and the folder entry after it."""
from __future__ import annotations

import os

import pytest

from auditor.core import files
from auditor.core.files import atomic_path, write_bytes


def _record_calls(monkeypatch) -> list[tuple[str, str]]:
    """Log fsync (with the path of the descriptor) and replace calls, in the order they happen."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", f"{src} -> {dst}"))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    return calls


def test_file_is_fsynced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name file descriptors")
    target = tmp_path / "out" / "records.parquet"
    calls = _record_calls(monkeypatch)
    write_bytes(target, b"payload")
    assert target.read_bytes() == b"payload"
    kinds = [kind for kind, _ in calls]
    assert kinds == ["fsync", "replace", "fsync"], calls
    tmp_name = files.temp_name(target)
    assert calls[0][1] == str(tmp_name)  # the data, under its temp name
    assert calls[1][1] == f"{tmp_name} -> {target}"
    assert calls[2][1] == str(target.parent)  # the folder entry of the rename


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
