"""Whether llama.cpp may use its extra weight buffers (AMX, repacked) for a GGUF on this CPU.

On a CPU with AMX (Intel Sapphire Rapids and later) ggml moves Q4_0/Q4_1/Q8_0 and K-quant
weights into an "AMX" buffer whose matmuls run on the tile unit: Qwen2.5-Coder-1.5B Q8_0
prefilled 3.4x faster there (212 against 62 tokens/s, 256 tokens, 2 threads; docs/gguf.md).
The ggml of llama-cpp-python 0.3.36 loads its tile configuration wrongly in two ways, both
ending in SIGILL on `tilezero`: GCC 12 drops the configuration's stores as dead, and a
thread-local flag skips reloading it after oneDNN (torch's bfloat16 matmuls) released the
tiles on the same thread.
`patches/llama-cpp-python-amx-tile-config.patch` fixes both, and the Makefile builds the
wheel with it; a wheel built elsewhere may not have it.

So the answer is asked of the build itself, once per (library, GGUF file): a child process
opens the file with llama.cpp's defaults (extra buffers on), decodes a batch of more than one
row (the tile path), runs a torch bfloat16 matmul on the same thread and decodes again. If it
exits cleanly the buffers stay on, as llama.cpp's own tools would run them; if it dies by a
signal they are turned off for that file and the log says how to rebuild. Verdicts are kept
in `$AUDITOR_CACHE_DIR/llama-extra-buffers.json`, keyed by the library files' and the GGUF's
(path, size, mtime), so a rebuilt wheel or a rewritten file is asked again. A file without
quantized weights (F32, F16, BF16) has nothing to move into those buffers: it is opened with
them off on AMX CPUs, as before, without a probe. Off AMX CPUs nothing is asked: llama.cpp's
default (repacking on) stays.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from auditor.artifacts.gguf_header import gguf_metadata
from auditor.core.cache import cache_dir, read_entries, write_entries

log = logging.getLogger(__name__)

VERDICTS_FILE = "llama-extra-buffers.json"
#: Verdicts kept; the oldest go first (each study writes new GGUF variants).
MAX_VERDICTS = 256
#: general.file_type values with no quantized weights: F32, F16, BF16 (llama.cpp's llama_ftype).
UNQUANTIZED_FILE_TYPES = (0, 1, 32)
PROBE_TOKENS = 32
PROBE_TIMEOUT_S = 600
REBUILD = "`make install` builds llama-cpp-python with patches/llama-cpp-python-amx-tile-config.patch"


def amx_cpu() -> bool:
    """llama.cpp's build sees AMX on this CPU (its system info says AMX_INT8 = 1)."""
    from llama_cpp import llama_cpp as lib

    return b"AMX_INT8 = 1" in lib.llama_print_system_info()


def extra_weight_buffers(path: Path | str) -> bool:
    """Whether `open_llama` keeps llama.cpp's extra weight buffers on for the GGUF at `path` (module docstring)."""
    if not amx_cpu():
        return True
    path = Path(path).resolve()
    if gguf_metadata(path).get("general.file_type") in UNQUANTIZED_FILE_TYPES:
        return False
    stat = path.stat()
    return _verdict(str(path), stat.st_size, stat.st_mtime_ns, library_identity())


@functools.lru_cache(maxsize=64)
def _verdict(path: str, size: int, mtime_ns: int, library: tuple) -> bool:
    key = hashlib.sha256(json.dumps([path, size, mtime_ns, library]).encode()).hexdigest()[:32]
    store = cache_dir() / VERDICTS_FILE
    entries = read_entries(store, name="extra-buffer verdicts", instead="asking the build again")
    if isinstance(entries.get(key), dict) and isinstance(entries[key].get("runs"), bool):
        return entries[key]["runs"]
    runs, signal = probe(Path(path))
    if runs is None:
        return False  # a failure that says nothing about the AMX kernels: off, and asked again by the next process
    if not runs:
        log.warning("%s: llama.cpp's AMX kernels died with signal %d in this llama-cpp-python build, so its extra "
                    "weight buffers stay off (slower Q8_0 and K-quant matmuls); %s, which runs them "
                    "(docs/gguf.md, 'AMX CPUs')", path, signal, REBUILD)
    entries[key] = {"runs": runs, "signal": signal, "file": path,
                    "checked_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    kept = dict(sorted(entries.items(), key=_checked)[-MAX_VERDICTS:])
    write_entries(store, kept, what="llama.cpp's extra-buffer verdict")  # unwritable: a probe per process
    return runs


def _checked(item: tuple[str, object]) -> str:
    """When a kept verdict was reached (oldest first); an entry that is not one sorts first, to go."""
    entry = item[1]
    return str(entry.get("checked_utc", "")) if isinstance(entry, dict) else ""


def probe(path: Path) -> tuple[bool | None, int | None]:
    """Open `path` with llama.cpp's defaults in a child process and decode a batch: (True, None) when it
    ran, (False, signal) when the child died by a signal, (None, None) when it failed otherwise."""
    try:
        done = subprocess.run(_child_command(path), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("%s: llama.cpp's extra-buffer probe took over %d s; buffers off", path, PROBE_TIMEOUT_S)
        return None, None
    if done.returncode == 0:
        return True, None
    if done.returncode < 0:
        return False, -done.returncode
    log.warning("%s: llama.cpp's extra-buffer probe failed (exit %d; buffers off): %s", path, done.returncode,
                (done.stderr.strip().splitlines() or ["no message"])[-1])
    return None, None


def _child_command(path: Path) -> list[str]:
    return [sys.executable, "-m", __name__, str(path)]


def library_identity() -> tuple:
    """(name, size, mtime) of every file of llama-cpp-python's shared libraries: a rebuilt wheel differs.
    Found without importing llama_cpp (which loads them)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return ()
    lib_dir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(lib_dir.glob("*.so*")))


def _decode_a_batch(path: str) -> None:
    """The child: llama.cpp's defaults, a batch of PROBE_TOKENS tokens on two threads (more than one row, so
    the tile path runs, with a worker thread beside this one), a torch bfloat16 matmul on this thread (oneDNN
    runs it on AMX and releases the tiles), then the batch again."""
    import llama_cpp
    import torch

    llm = llama_cpp.Llama(model_path=path, n_ctx=2 * PROBE_TOKENS, n_batch=PROBE_TOKENS, n_threads=2,
                          n_threads_batch=2, verbose=False)
    tokens = [i % llm.n_vocab() for i in range(1, PROBE_TOKENS + 1)]
    llm.eval(tokens)
    square = torch.ones(256, 256, dtype=torch.bfloat16)
    float((square @ square).sum())
    llm.reset()
    llm.eval(tokens)
    llm.close()


if __name__ == "__main__":
    _decode_a_batch(sys.argv[1])
