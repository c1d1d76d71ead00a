"""Where the tool keeps per-user caches (timed plan rates, converted GGUF metadata, llama.cpp's extra-buffer
verdicts), and the one way a cache file of keyed entries is read and written."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from auditor.core.files import write_json

log = logging.getLogger(__name__)

CACHE_ENV = "AUDITOR_CACHE_DIR"


def cache_dir() -> Path:
    """Where per-user caches go: $AUDITOR_CACHE_DIR, else $XDG_CACHE_HOME/auditor, else ~/.cache/auditor."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auditor"


def read_entries(path: Path, *, name: str, instead: str) -> dict[str, dict]:
    """The entries of the cache file `path` ({"entries": {key: entry}}), {} when there is none. A damaged
    file costs what it saved, not the command: ignored with a warning ("<path>: unreadable <name>, <instead>")."""
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
        return entries
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable %s, %s (%s)", path, name, instead, exc)
        return {}


def write_entries(path: Path, entries: dict[str, dict], *, what: str) -> None:
    """Write `entries` to the cache file `path` atomically; a place that cannot be written (a read-only home)
    only warns ("<path>: cannot keep <what>")."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json({"entries": entries}, path)
    except OSError as exc:
        log.warning("%s: cannot keep %s (%s)", path, what, exc)
