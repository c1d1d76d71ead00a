"""The run directory: its layout, its units, and the one reader of its state.

A run directory (one per study x model) holds:
    manifest.json            study hash and definition, fingerprints, versions, planned units, thresholds
    state.json               running / complete / failed / interrupted, with the error
    items.parquet            the selected items
    units/<unit>.json        how a scoring unit was computed, with its unit key (written first)
    records/<unit>.parquet   a scoring unit's item records (written last: the commit point)
    ppl/<stem>.json          a perplexity unit's figures (its own commit point)
    variants/<stem>.json     per (variant, backend): the shards' descriptors merged
    measurements/            `auditor measure` figures per storage format
    summary.json, report.md, report.html, plots/   written by the report from the files above
    superseded/<utc>/        files of units a `--force` run did not keep

The study runner writes this layout and the view reads it; both take every path and
the run's state from here, so they cannot disagree.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd

from auditor.core.errors import AuditorError
from auditor.core.files import TEMP_MARK
from auditor.core.names import unit_name
from auditor.data.records import COLUMNS, read_records

log = logging.getLogger(__name__)

SCORE = "score"
PPL = "ppl"
LAYOUT_DIRS = ("records", "units", "ppl", "variants")
REPORT_FILES = ("summary.json", "report.md", "report.html")
SPARSE_KERNELS_FILE = "sparse_kernels.json"  # `auditor bench sparse-kernels --out RUN`: dense vs sparse matmul timings
RECORD_ORDER = ["variant", "backend", "seed", "category", "example_id"]

# States a run can be in, as `auditor status`, the TUI and the report show them.
RUNNING, COMPLETE, FAILED, INTERRUPTED, INCOMPLETE = "running", "complete", "failed", "interrupted", "incomplete"


@dataclass(frozen=True)
class Unit:
    """One unit of work: BBQ scoring of one item shard, or perplexity, of one variant on one backend.

    `variant` is the records' variant column; `spec` the compressor chain that builds it
    (they differ for null baselines such as dense-gguf-f16, built from "dense").
    """

    kind: str  # SCORE | PPL
    variant: str
    spec: str
    backend: str  # "torch" | "llama.cpp"
    shard: int = 0
    n_shards: int = 1

    @property
    def stem(self) -> str:
        """`<variant_id>__<backend>`: the name of the variant's files in variants/ and ppl/."""
        return unit_name(self.variant, self.backend)

    @property
    def name(self) -> str:
        return f"{self.stem}__shard{self.shard}" if self.kind == SCORE and self.n_shards > 1 else self.stem

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    def final_path(self, run_dir: Path) -> Path:
        """The file whose existence means the unit is finished (written last, atomically)."""
        if self.kind == SCORE:
            return run_dir / "records" / f"{self.name}.parquet"
        return run_dir / "ppl" / f"{self.name}.json"

    def descriptor_path(self, run_dir: Path) -> Path:
        """The JSON that holds the unit's key (for perplexity units, the final file itself)."""
        return run_dir / "units" / f"{self.name}.json" if self.kind == SCORE else self.final_path(run_dir)

    def files(self, run_dir: Path) -> list[Path]:
        return list(dict.fromkeys([self.final_path(run_dir), self.descriptor_path(run_dir)]))

    @classmethod
    def from_manifest(cls, raw: dict) -> "Unit":
        return cls(raw["kind"], raw["variant"], raw["spec"], raw["backend"], raw["shard"], raw["n_shards"])


def stored_key(run_dir: Path, unit: Unit) -> str | None:
    """The unit key a finished unit was computed under, or None when it has none readable."""
    try:
        return json.loads(unit.descriptor_path(run_dir).read_text()).get("unit_key")
    except (OSError, ValueError, AttributeError):
        return None


def is_finished(run_dir: Path, unit: Unit, key: str) -> bool:
    """The unit's final file exists and was computed under `key`."""
    return unit.final_path(run_dir).is_file() and stored_key(run_dir, unit) == key


def load_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise AuditorError(f"{run_dir}: not a run directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise AuditorError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise AuditorError(f"{path}: unreadable manifest (not a JSON object)")
    return manifest


def manifest_thresholds(manifest: dict) -> dict[str, float]:
    """The threshold settings a run carries: manifest["thresholds"] or its study's [thresholds] table."""
    study = manifest.get("study") if isinstance(manifest.get("study"), dict) else {}
    found = manifest.get("thresholds") or (study or {}).get("thresholds") or {}
    return dict(found) if isinstance(found, dict) else {}


def record_files(run_dir: Path) -> Sequence[Path]:
    return sorted((run_dir / "records").glob("*.parquet"))


def merged_records(run_dir: Path) -> pd.DataFrame:
    """Every finished unit's records in one frame, in a deterministic order (variant, backend, seed, item)."""
    records = read_records(record_files(run_dir))
    if not len(records):
        return pd.DataFrame(columns=list(COLUMNS))
    return records.sort_values(RECORD_ORDER, kind="stable").reset_index(drop=True)


def is_temp_file(path: Path) -> bool:
    """A temp file of an atomic write (`auditor.core.files`), left behind when its writer died."""
    return path.name.startswith(".") and TEMP_MARK in path.name and path.name.rsplit(TEMP_MARK, 1)[1].isdigit()


def remove_temp_files(run_dir: Path) -> None:
    """Temp files of an interrupted writer (the caller holds the lock, so nobody is writing them now)."""
    for folder in (run_dir, *(run_dir / d for d in LAYOUT_DIRS)):
        if folder.is_dir():
            for path in folder.iterdir():
                if is_temp_file(path) and path.is_file():
                    log.info("removing temp file of an interrupted write: %s", path)
                    path.unlink()


# --- the lock ------------------------------------------------------------------------------------


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive flock on <run>/.lock; the kernel releases it when the process dies, even by SIGKILL."""
    path = run_dir / ".lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise AuditorError(f"{run_dir}: another auditor process ({holder}) is running this study; "
                               "wait for it or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fh.close()


def lock_holder(run_dir: Path) -> str | None:
    """The lock holder's description when a process is running this run directory, else None."""
    path = run_dir / ".lock"
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            return fh.read().strip() or "unknown process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


# --- the state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitStatus:
    id: str
    kind: str
    variant: str
    backend: str
    shard: int
    state: str  # finished | pending


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    study: str
    study_hash: str
    state: str  # RUNNING | COMPLETE | INTERRUPTED | FAILED | INCOMPLETE
    detail: str
    units: tuple[UnitStatus, ...]
    has_report: bool

    @property
    def n_finished(self) -> int:
        return sum(u.state == "finished" for u in self.units)


def read_state_file(run_dir: Path) -> dict:
    """state.json as the runner last wrote it ({} when absent or unreadable)."""
    try:
        doc = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def run_status(run_dir: Path, manifest: dict | None = None) -> RunStatus:
    """What a run directory holds: planned units, which are finished, and whether a process runs it.

    A run whose state.json says "running" but whose lock nobody holds was killed: it is
    "interrupted", whoever asks.
    """
    manifest = load_manifest(run_dir) if manifest is None else manifest
    units = []
    for raw in manifest.get("units", []):
        unit = Unit.from_manifest(raw)
        finished = is_finished(run_dir, unit, raw["key"])
        units.append(UnitStatus(unit.id, unit.kind, unit.variant, unit.backend, unit.shard,
                                "finished" if finished else "pending"))
    state_doc = read_state_file(run_dir)
    holder = lock_holder(run_dir)
    recorded = state_doc.get("state", "unknown")
    if holder:
        state, detail = RUNNING, f"held by {holder}"
    elif recorded in (RUNNING, INTERRUPTED):
        state, detail = INTERRUPTED, (f"the process that ran it (pid {state_doc.get('pid')}) is gone; "
                                      "run it again to resume")
    elif recorded == FAILED:
        state, detail = FAILED, state_doc.get("error") or ""
    elif units and all(u.state == "finished" for u in units):
        state, detail = COMPLETE, ""
    else:
        state, detail = INCOMPLETE, recorded
    study = manifest.get("study", {}) if isinstance(manifest.get("study"), dict) else {}
    return RunStatus(run_dir, study.get("name", run_dir.name), study.get("hash", ""), state, detail, tuple(units),
                     (run_dir / "report.md").is_file())
