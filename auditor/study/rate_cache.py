"""This machine's timed rates per runtime kind, kept between `--plan`s so a plan takes seconds.

`auditor run --plan` times every runtime kind on a random-weight proxy of the model
(auditor.study.estimate): a build, a few scoring calls and a perplexity window per
kind, minutes for a 1.5B model with llama.cpp kinds (each one a GGUF conversion and
quantization). Those timings depend on the machine and the proxy, not on the run, so
each is kept in one JSON file per user, under a key of everything that changes it:
the kind, the proxy's config (architecture, widths, depth), the batch size, the timed
groups and window, threads and device, the CPU model and core count, the
versions of torch, transformers and llama-cpp-python, and llama.cpp's library files
themselves (a rebuilt wheel, e.g. one that runs ggml's AMX kernels, times anew). A
later plan with the same key reads the timing instead of measuring it; a different
machine, model shape or library version misses and is timed again. `--retime` times
every kind anew and replaces its entry.

The file is `$AUDITOR_CACHE_DIR/plan-rates.json` (default
`$XDG_CACHE_HOME/auditor`, else `~/.cache/auditor`): plain JSON, never a pickle, read
and written by `auditor.core.cache.read_entries`/`write_entries`. An unreadable file
is ignored with a warning (the plan times instead) and replaced on the next write;
entries are written atomically.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from auditor.core.cache import cache_dir, read_entries, write_entries
from auditor.core.provenance import auditor_version, machine, package_versions
from auditor.scoring.backends.llama_amx import library_identity


RATES_FILE = "plan-rates.json"
#: Bumped when what a timing means changes (how `time_kind` measures), so old entries miss.
RATES_VERSION = 2  # 2: the run's own passes sampled; torch kinds timed without blocks too


def timing_key(kind: str, proxy_config: str, **settings: Any) -> str:
    """The cache key of one kind's timing: the kind, the proxy's config (JSON), `settings` (batch size,
    timed groups, window, threads, device) and this machine's CPU and library versions."""
    here = machine()
    versions = package_versions()
    identity = {"version": RATES_VERSION, "kind": kind, "proxy_config": proxy_config, "settings": settings,
                "cpu_model": here.get("cpu_model", here["processor"]), "cpus": here["cpus"],
                "packages": {k: versions.get(k) for k in ("python", "torch", "transformers", "llama_cpp_python")},
                "llama_library": library_identity(),
                "auditor": auditor_version()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


class RateCache:
    """The timings kept in one file: `get` a stored timing (a dict of figures), `put` a new one (written at once)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / RATES_FILE
        self._entries = read_entries(self.path, name="plan-rate cache", instead="timing every kind instead")

    def get(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The figures stored under `key` and when they were measured (UTC, ISO), or None."""
        entry = self._entries.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("timing"), dict):
            return None
        return entry["timing"], str(entry.get("measured_utc", "?"))

    def put(self, key: str, timing: dict[str, Any], measured_utc: str) -> None:
        self._entries[key] = {"measured_utc": measured_utc, "timing": timing}
        write_entries(self.path, self._entries, what="the plan's timings")
