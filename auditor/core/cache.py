"""Where the tool keeps per-user caches (timed plan rates, converted GGUF metadata)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "AUDITOR_CACHE_DIR"


def cache_dir() -> Path:
    """Where per-user caches go: $AUDITOR_CACHE_DIR, else $XDG_CACHE_HOME/auditor, else ~/.cache/auditor."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auditor"
