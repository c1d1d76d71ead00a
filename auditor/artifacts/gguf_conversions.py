"""A GGUF's transformers tokenizer and config, converted once per file and kept on disk.

transformers builds both from the GGUF's metadata (`from_pretrained(..., gguf_file=...)`),
and each call parses the whole key-value section, the vocabulary's arrays included:
13.5 s for the tokenizer and 10.5 s for the config of Qwen2.5-Coder-1.5B's 152k-token
GGUF on these CPUs (measured 2026-12-06, load 2.5). `auditor run --plan` paid both
before any timing, and every study worker process paid them again. Converted once, the
tokenizer and config are kept as an ordinary HF folder (tokenizer.json,
tokenizer_config.json, chat template, config.json: JSON and text, never a pickle) under
`$AUDITOR_CACHE_DIR/gguf/<key>`, and read back in under a second.

The key is the file's resolved path, size and modification time plus the transformers
version: a replaced or edited GGUF, or another converter, misses and is converted anew.
Entries are written whole (one rename) or not at all; an entry that fails to load is
converted again and replaced, with a warning. The objects read back are those the
direct conversion gives, with its `name_or_path` (tests compare vocabulary, special
tokens, chat template, encodings and every config field).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from auditor.core.cache import cache_dir
from auditor.core.files import atomic_path

log = logging.getLogger(__name__)

#: Bumped when what an entry holds changes, so old entries miss.
ENTRY_VERSION = 1
_TOKENIZER_DONE = "tokenizer.done"  # written last: the tokenizer files are complete
_CONFIG = "config.json"


def gguf_tokenizer(path: Path | str):
    """The transformers tokenizer of the GGUF at `path`, converted once and then read from the cache."""
    from transformers import AutoTokenizer

    def save(tokenizer, folder: Path) -> None:
        tokenizer.save_pretrained(str(folder))
        (folder / _TOKENIZER_DONE).touch()  # last: the tokenizer's files are all there

    def name(tokenizer, where: str) -> None:
        tokenizer.name_or_path = where

    # Rewriting the tokenizer keeps the entry's config, and the other way round.
    return _converted(Path(path), "tokenizer", AutoTokenizer, save, name, done=_TOKENIZER_DONE,
                      carry_if=_CONFIG, carry=lambda file: file == _CONFIG)


def gguf_config(path: Path | str):
    """The transformers config of the GGUF at `path`, converted once and then read from the cache."""
    from transformers import AutoConfig

    def name(config, where: str) -> None:
        config._name_or_path = where

    return _converted(Path(path), "config", AutoConfig, lambda config, folder: config.save_pretrained(str(folder)),
                      name, done=_CONFIG, carry_if=_TOKENIZER_DONE, carry=lambda file: file != _CONFIG)


def _converted(path: Path, what: str, auto, save, name, *, done: str, carry_if: str, carry):
    """`auto.from_pretrained` of the GGUF at `path`, read from its cache entry when `done` is there, else
    converted and kept (`save`); `name` gives it the direct conversion's name_or_path (the GGUF's folder)."""
    entry = _entry(path)
    if (entry / done).is_file():
        try:
            loaded = auto.from_pretrained(str(entry))
            name(loaded, str(path.parent))
            return loaded
        except (OSError, ValueError, KeyError) as exc:  # ValueError covers json.JSONDecodeError
            log.warning("%s: cached %s unreadable (%s); converting %s again", entry, what, exc, path.name)
    converted = auto.from_pretrained(str(path.parent), gguf_file=path.name)
    _keep(entry, lambda folder: save(converted, folder), carry_if=carry_if, carry=carry)
    return converted


def _entry(path: Path) -> Path:
    import transformers

    stat = path.stat()
    identity = {"version": ENTRY_VERSION, "path": str(path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "transformers": transformers.__version__}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "gguf" / key


def _keep(entry: Path, write, *, carry_if: str, carry) -> None:
    """Write the entry anew with `write(folder)`, first copying the old entry's files for which `carry(name)`
    holds when it has `carry_if` (the other half, complete: its config, or its finished tokenizer).
    A cache that cannot be written costs only the next conversion."""
    try:
        with atomic_path(entry, directory=True) as folder:
            if (entry / carry_if).is_file():
                for f in entry.iterdir():
                    if f.is_file() and carry(f.name):
                        (folder / f.name).write_bytes(f.read_bytes())
            write(folder)
    except OSError as exc:
        log.warning("%s: could not keep the converted GGUF metadata (%s)", entry, exc)
