"""Files written whole or not at all, and JSON that never holds NaN.

Every file the tool writes goes through `atomic_path`: the content is written under a
temp name in the same folder (`.<name>.tmp-<pid>`, which the study runner sweeps up),
flushed to disk, renamed onto the final name, and the folder entry is flushed too. A
crash therefore leaves either the old file, the new file, or a stray temp file, never
a half-written final file.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """The temp name `atomic_path` writes `path` under (hidden, in the same folder, per process)."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's content to disk (folders: the entries, so a rename survives a crash)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and /proc-like mounts) refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path | str, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; when the block succeeds, it replaces `path` in one rename.

    With `directory=True` the temp path is a fresh folder and the final path a folder; an
    existing one is swapped out and removed. On any error the temp path is removed and
    `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    else:
        tmp = temp_name(path)
    try:
        yield tmp
        for f in ([p for p in tmp.rglob("*") if p.is_file()] if directory else [tmp]):
            fsync_path(f)
        if directory and path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: Path | str) -> None:
    """Atomic JSON write of `json_safe(obj)` (NaN and infinities become null)."""
    write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))


def json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars as Python numbers, tuples as lists, and non-finite floats as None.

    JSON has no NaN: a figure that was not measured is written as null and read back as missing.
    Paths and other objects become their string form.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)
