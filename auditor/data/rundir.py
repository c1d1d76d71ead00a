"""The run directory: its layout, its units, and the one reader of its state.

A run directory (one per study x model) holds:
    manifest.json            study hash and definition, fingerprints, versions, planned units, thresholds
    state.json               running / complete / failed / interrupted, with the error
    items.parquet            the selected items
    units/<unit>.json        how a scoring unit was computed, with its unit key
    records/<unit>.parquet   a scoring unit's item records
    ppl/<stem>.json          a perplexity unit's figures
    ppl/<stem>.kld-base.npz  the dense perplexity unit's full-vocabulary rows for the KLD (auditor.analysis.kld)
    measurements.json, measurements/<stem>.json   the measurement unit's figures (a study with [measure]),
                             or `auditor measure --out RUN`'s; sealed either way
    commits/<kind>__<unit>.json  a unit's commit record: its key and the size and sha256 of every
                             file it wrote (written last: the commit point)
    variants/<stem>.json     per (variant, backend): the shards' descriptors merged
    failed/<unit>.json       a unit that could not be built or computed: its reason and unit key
    summary.json, report.md, report.html, plots/   written by the report from the files above; summary.json
                             last, sealed, with the size and sha256 of the others and of the measurements read
    superseded/<utc>/        files of units a `--force` run did not keep

The study runner writes this layout and the view reads it; both take every path and
the run's state from here, so they cannot disagree. A unit is finished iff its commit
record exists, carries the planned unit key, and every file it lists still has the
recorded size and sha256 (`check_unit`); a listed file that differs makes the unit
"damaged", which `auditor status` names and `auditor run` recomputes.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd

from auditor.core.errors import AuditorError
from auditor.core.files import TEMP_MARK, json_safe, write_json
from auditor.core.names import unit_name
from auditor.data.records import COLUMNS, read_records

log = logging.getLogger(__name__)

SCORE = "score"
PPL = "ppl"
#: The measurement unit ([measure] in the study): size and speed of every variant's artifacts, one unit because
#: its timings interleave the variants (auditor.measure.measurement). Its name and variant are MEASURE_UNIT.
MEASURE = "measure"
MEASURE_UNIT = "measurements"
LAYOUT_DIRS = ("records", "units", "ppl", "variants", "commits", "failed")
KLD_BASE_SUFFIX = ".kld-base.npz"  # ppl/<stem>.kld-base.npz: a dense perplexity unit's rows (auditor.analysis.kld)
REPORT_FILES = ("summary.json", "report.md", "report.html", "report.pdf")
# `auditor report RUN --protocol P` writes a report on another scoring protocol into RUN/protocol-P/.
PROTOCOL_REPORT_PREFIX = "protocol-"
SPARSE_KERNELS_FILE = "sparse_kernels.json"  # `auditor bench sparse-kernels --out RUN`: dense vs sparse matmul timings
RECORD_ORDER = ["variant", "backend", "seed", "category", "example_id"]

# States a unit can be in: committed and verified, not (yet) committed, committed but a file differs.
FINISHED, PENDING, DAMAGED, UNIT_FAILED = "finished", "pending", "damaged", "failed"

# States a run can be in, as `auditor status`, the TUI and the report show them.
RUNNING, COMPLETE, FAILED, INTERRUPTED, INCOMPLETE = "running", "complete", "failed", "interrupted", "incomplete"


def protocol_report_dir(run_dir: Path, protocol: str) -> Path:
    """Where the report of `run_dir` on scoring protocol `protocol` goes (the run's own report stays)."""
    return Path(run_dir) / f"{PROTOCOL_REPORT_PREFIX}{protocol}"


@dataclass(frozen=True)
class Unit:
    """One unit of work: BBQ scoring of one item shard, or perplexity, of one variant on one backend; or the
    measurement of every variant (kind MEASURE, variant MEASURE_UNIT).

    `variant` is the records' variant column; `spec` the compressor chain that builds it
    (they differ for null baselines such as dense-gguf-f16, built from "dense").
    """

    kind: str  # SCORE | PPL | MEASURE
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
        if self.kind == MEASURE:
            return MEASURE_UNIT
        return f"{self.stem}__shard{self.shard}" if self.kind == SCORE and self.n_shards > 1 else self.stem

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    def final_path(self, run_dir: Path) -> Path:
        """The file whose existence means the unit is finished (written last, atomically)."""
        if self.kind == SCORE:
            return run_dir / "records" / f"{self.name}.parquet"
        if self.kind == MEASURE:
            return run_dir / MEASUREMENTS_FILE
        return run_dir / "ppl" / f"{self.name}.json"

    def descriptor_path(self, run_dir: Path) -> Path:
        """The JSON that holds the unit's key (for perplexity units, the final file itself)."""
        return run_dir / "units" / f"{self.name}.json" if self.kind == SCORE else self.final_path(run_dir)

    def failed_path(self, run_dir: Path) -> Path:
        """Where a unit that failed records why (removed when the unit is redone)."""
        return run_dir / "failed" / f"{self.kind}__{self.name}.json"  # a variant's score and ppl units both can fail

    def files(self, run_dir: Path) -> list[Path]:
        """The unit's files, its commit record and failure record included."""
        return list(dict.fromkeys([*self.written(run_dir), self.commit_path(run_dir), self.failed_path(run_dir)]))

    def written(self, run_dir: Path) -> list[Path]:
        """The files the unit writes (its commit record lists them): final file and descriptor, and for the
        measurement unit every measurements/<stem>.json beside measurements.json; for a perplexity unit its
        ppl/<stem>.kld-base.npz when it wrote one (the dense rows of auditor.analysis.kld)."""
        extra = sorted((run_dir / MEASUREMENTS_DIR).glob("*.json")) if self.kind == MEASURE else []
        if self.kind == PPL and self.kld_base_path(run_dir).is_file():
            extra.append(self.kld_base_path(run_dir))
        return list(dict.fromkeys([self.final_path(run_dir), self.descriptor_path(run_dir), *extra]))

    def kld_base_path(self, run_dir: Path) -> Path:
        """Where a dense perplexity unit keeps its full-vocabulary rows for the KLD of the other variants."""
        return run_dir / "ppl" / f"{self.name}{KLD_BASE_SUFFIX}"

    def commit_path(self, run_dir: Path) -> Path:
        """The commit record: written last, it is what makes the unit finished."""
        return run_dir / "commits" / f"{self.kind}__{self.name}.json"

    @classmethod
    def from_manifest(cls, raw: dict) -> "Unit":
        return cls(raw["kind"], raw["variant"], raw["spec"], raw["backend"], raw["shard"], raw["n_shards"])


#: The manifest's own digest (over every other field), written by the runner and checked by every reader:
#: a manifest edited or damaged since is refused, so no reader trusts a changed plan or threshold.
SEAL = "seal_sha256"


def manifest_seal(manifest: dict) -> str:
    """sha256 of the manifest's fields other than the seal, as JSON with sorted keys (whitespace-free)."""
    body = {k: v for k, v in json_safe(manifest).items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed(manifest: dict) -> dict:
    """The manifest as written (JSON-safe), with its seal."""
    return {**json_safe(manifest), SEAL: manifest_seal(manifest)}


#: A planned unit's fields in manifest.json and their types (checked by `load_manifest`).
UNIT_FIELDS = {"kind": str, "variant": str, "spec": str, "backend": str, "shard": int, "n_shards": int, "key": str}
#: Top-level manifest fields that must be JSON objects when present, and those that must be lists.
MANIFEST_OBJECTS = ("study", "config", "model", "data", "fingerprints", "prompt_format", "thresholds")
MANIFEST_LISTS = ("units", "notes", "protocols", "seeds")


def file_digest(path: Path) -> dict[str, int | str]:
    """{"size_bytes", "sha256"} of a file as it is on disk."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return {"size_bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def commit_record(run_dir: Path, unit: Unit, key: str, finished_utc: str, peak_rss: dict | None = None) -> dict:
    """The commit record of a unit whose files are written: its key and each file's size and sha256, and the
    unit's measured peak memory (`peak_rss_bytes`, `children_peak_rss_bytes`; auditor.study.units) when given."""
    files = unit.written(run_dir)
    return {"unit": unit.id, "unit_key": key, "finished_utc": finished_utc, **(peak_rss or {}),
            "files": {p.relative_to(run_dir).as_posix(): file_digest(p) for p in files}}


def read_commit(run_dir: Path, unit: Unit) -> dict | None:
    """A unit's commit record, or None when it has none readable."""
    try:
        doc = json.loads(unit.commit_path(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def _inside(run_dir: Path, rel: object) -> bool:
    """Is `rel` (a path a commit record lists) a relative path that stays inside the run directory?"""
    if not isinstance(rel, str) or not rel:
        return False
    parts = Path(rel).parts
    return not Path(rel).is_absolute() and ".." not in parts


def verify_file(path: Path, rel: str, want: object) -> str:
    """"" when `path` has the size and sha256 recorded in `want`, else why not (one phrase naming `rel`)."""
    if not path.is_file():
        return f"{rel} is missing"
    if not isinstance(want, dict):
        return f"{rel}: its record holds no size and sha256"
    try:
        size = path.stat().st_size
        if size != want.get("size_bytes"):
            return f"{rel} has {size} bytes, committed with {want.get('size_bytes')}"
        if file_digest(path)["sha256"] != want.get("sha256"):
            return f"{rel}: sha256 differs from its commit record"
    except OSError as exc:
        return f"{rel} is unreadable ({exc.strerror or exc})"
    return ""


def check_unit(run_dir: Path, unit: Unit, key: str) -> tuple[str, str]:
    """(FINISHED | PENDING | DAMAGED, why): is the unit committed under `key` with its files intact?

    PENDING: no readable commit record, or one made under another key (a stale unit).
    DAMAGED: committed under `key`, but a file it lists is missing or differs in size or sha256.
    """
    commit = read_commit(run_dir, unit)
    if commit is None:
        return PENDING, ("files without a commit record (the writer stopped before committing)"
                         if unit.final_path(run_dir).exists() else "")
    if commit.get("unit_key") != key:
        return PENDING, "committed under another unit key (stale)"
    final = unit.final_path(run_dir).relative_to(run_dir).as_posix()
    if final not in commit["files"]:  # the commit point must vouch for the file the view reads
        return DAMAGED, f"{unit.commit_path(run_dir).relative_to(run_dir).as_posix()} does not list {final}"
    for rel, want in sorted(commit["files"].items(), key=lambda kv: str(kv[0])):
        if not _inside(run_dir, rel):
            return DAMAGED, f"its commit record lists {rel!r}, not a file of the run directory"
        problem = verify_file(run_dir / rel, rel, want)
        if problem:
            return DAMAGED, problem
    return FINISHED, ""


def write_failed_unit(run_dir: Path, unit: Unit, key: str, reason: str, when_utc: str) -> Path:
    """Record that `unit` failed (it stays unfinished: the next run tries it again)."""
    path = unit.failed_path(run_dir)
    write_json({"unit": unit.name, "id": unit.id, "variant": unit.variant, "spec": unit.spec,
                "backend": unit.backend, "kind": unit.kind, "reason": reason, "unit_key": key,
                "failed_utc": when_utc}, path)
    return path


def failed_units(run_dir: Path, manifest: dict | None = None, unreadable: list[str] | None = None) -> list[dict]:
    """The failure records of planned units that are not finished (the manifest's units; every file without one).

    A record that is not a JSON object with a string "id" is skipped; its file and why go to `unreadable`
    (when given), so the caller can name it.
    """
    out = []
    planned = None if manifest is None else {Unit.from_manifest(raw).id: raw["key"] for raw in manifest.get("units", [])}
    for path in sorted((run_dir / "failed").glob("*.json")):
        rel = path.relative_to(run_dir).as_posix()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            if unreadable is not None:
                unreadable.append(f"{rel}: unreadable failure record ({getattr(exc, 'strerror', None) or exc})")
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            if unreadable is not None:
                unreadable.append(f"{rel}: malformed failure record (expected a JSON object with an \"id\")")
            continue
        if planned is not None and planned.get(doc.get("id")) != doc.get("unit_key"):
            continue  # a failure of a unit this plan does not have, or under another definition
        out.append(doc)
    return out


def load_manifest(run_dir: Path) -> dict:
    """manifest.json as a dict whose fields have the types the readers expect; AuditorError naming the file
    (and the field) otherwise."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise AuditorError(f"{run_dir}: not a run directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditorError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise AuditorError(f"{path}: unreadable manifest (not UTF-8 text)") from None
    except ValueError as exc:
        raise AuditorError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise AuditorError(f"{path}: unreadable manifest (not a JSON object)")
    if SEAL in manifest and manifest[SEAL] != manifest_seal(manifest):
        raise AuditorError(f"{path}: the manifest differs from its seal (edited or damaged since the run wrote "
                           "it); `auditor run` on its study rewrites it")
    problem = manifest_problem(manifest)
    if not problem and not manifest.get("units") and any((run_dir / "commits").glob("*.json")):
        problem = "it plans no units, but commits/ holds the commit records of units the runner wrote"
    if problem:
        raise AuditorError(f"{path}: malformed manifest ({problem}); `auditor run` on its study rewrites it")
    return manifest


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


def manifest_problem(manifest: dict) -> str:
    """What is structurally wrong with a manifest ("" when nothing): field types, and each planned unit's fields."""
    for name in MANIFEST_OBJECTS:
        if manifest.get(name) is not None and not isinstance(manifest[name], dict):
            return f"{name!r} must be an object, got {_type_name(manifest[name])}"
    for name in MANIFEST_LISTS:
        if manifest.get(name) is not None and not isinstance(manifest[name], list):
            return f"{name!r} must be a list, got {_type_name(manifest[name])}"
    if not all(isinstance(p, str) for p in manifest.get("protocols") or []):
        return "'protocols' must be a list of names"
    ids: set[str] = set()
    for i, raw in enumerate(manifest.get("units") or []):
        if not isinstance(raw, dict):
            return f"units[{i}] must be an object, got {_type_name(raw)}"
        for field, kind in UNIT_FIELDS.items():
            value = raw.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"units[{i}].{field} must be {'an integer' if kind is int else 'a string'}, got " + (
                    "nothing" if field not in raw else f"{_type_name(value)} {value!r}"[:80])
        if raw["kind"] not in (SCORE, PPL, MEASURE):
            return f"units[{i}].kind must be {SCORE!r}, {PPL!r} or {MEASURE!r}, got {raw['kind']!r}"[:160]
        if not 0 <= raw["shard"] < raw["n_shards"]:
            return f"units[{i}]: shard {raw['shard']} is outside 0..n_shards-1 (n_shards {raw['n_shards']})"
        unit_id = Unit.from_manifest(raw).id
        if any(sep in unit_id for sep in ("/", "\\", "\x00")):
            return f"units[{i}]: unit name {unit_id!r} is not a plain file name"[:160]
        if unit_id in ids:
            return f"units[{i}]: unit {unit_id} is planned twice"
        ids.add(unit_id)
    return ""


def merged_descriptor(stem: str, descriptors: list[dict], shard_names: list[str]) -> dict:
    """variants/<stem>.json: the shards' unit descriptors merged (counts and times summed, ms/prompt pooled)."""
    merged = {k: v for k, v in descriptors[0].items() if k not in ("shard", "unit", "unit_key", "finished_utc")}
    n_prompts = sum(d.get("n_prompts", 0) for d in descriptors)
    wall = sum(d.get("scoring_wall_s", 0.0) or 0.0 for d in descriptors)
    merged.update(unit=stem, shards=shard_names, n_items=sum(d.get("n_items", 0) for d in descriptors),
                  n_prompts=n_prompts, scoring_wall_s=wall,
                  ms_per_prompt=1000 * wall / n_prompts if n_prompts else None,
                  unit_wall_s=sum(d.get("unit_wall_s", 0.0) or 0.0 for d in descriptors))
    for key in ("planned_tokens", "computed_tokens"):  # the backend's token counts; None when a shard lacks one
        counts = [d.get(key) for d in descriptors]
        if any(key in d for d in descriptors):  # runs written before the counts keep their merged files as they are
            merged[key] = sum(counts) if all(isinstance(c, int) for c in counts) else None
    return merged


def _committed_merge(run_dir: Path, manifest: dict, stem: str) -> dict | None:
    """The merge of the committed descriptors of `stem`'s score units, None when one is missing or unreadable
    (the unit's own status reports that)."""
    units = [Unit.from_manifest(raw) for raw in manifest.get("units") or [] if raw["kind"] == SCORE]
    units = [u for u in units if u.stem == stem and u.descriptor_path(run_dir).is_file()]
    try:
        descs = [json.loads(u.descriptor_path(run_dir).read_text(encoding="utf-8")) for u in units]
    except (OSError, ValueError):
        return None
    if not descs or not all(isinstance(d, dict) for d in descs):
        return None
    return json.loads(json.dumps(json_safe(merged_descriptor(stem, descs, [u.name for u in units]))))


def variants_problems(run_dir: Path, manifest: dict) -> list[str]:
    """variants/*.json that are not the merged descriptor of a planned (variant, backend): unreadable, not a
    JSON object, naming another variant or backend, or differing from the merge of its units' committed
    descriptors (``merged_descriptor``; the descriptors are in the commit records). The view makes a row of each such file, so a
    damaged one would be judged as a variant of its own. [] when the manifest plans no units."""
    planned = {unit_name(raw["variant"], raw["backend"]): (raw["variant"], raw["backend"])
               for raw in manifest.get("units") or [] if raw["kind"] == SCORE}
    if not planned:
        return []
    out = []
    for path in sorted((run_dir / "variants").glob("*.json")):
        rel = path.relative_to(run_dir).as_posix()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out.append(f"{rel} is unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__})")
            continue
        want = planned.get(path.stem)
        if not isinstance(doc, dict) or want is None or (doc.get("variant"), doc.get("backend")) != want:
            out.append(f"{rel} is not the descriptor of a planned variant"
                       + (f" ({want[0]} on {want[1]})" if want else ""))
            continue
        merged = _committed_merge(run_dir, manifest, path.stem)
        # its figures (times, sizes, step reports) must be those of the committed unit descriptors it merges
        if merged is not None and {k: v for k, v in doc.items() if k in merged} != merged:
            out.append(f"{rel} differs from the committed descriptors of its units")
    return out


def items_problem(run_dir: Path, manifest: dict) -> str:
    """"" when items.parquet is as the run wrote it, else why not (one phrase naming the file).

    The runner records its size and sha256 in manifest["data"]["items_file"]; a run made before that
    (or by hand) is only checked to have the file when its manifest plans units.
    """
    path = run_dir / "items.parquet"
    want = (manifest.get("data") or {}).get("items_file")
    if want is not None:
        problem = verify_file(path, "items.parquet", want)
        return problem.replace("its commit record", "manifest.json's record of it")
    if manifest.get("units") and not path.is_file():
        return "items.parquet is missing"
    return ""


#: Files a report reads beside the scoring records: the measurement unit's (or `auditor measure --out RUN`'s, which
#: no commit record vouches for) and `auditor bench sparse-kernels --out RUN`'s. The measurement JSON is sealed;
#: the report records the digest of each.
MEASUREMENTS_FILE = "measurements.json"
MEASUREMENTS_DIR = "measurements"
#: summary.json's field holding the report's record: the size and sha256 of every file the report wrote
#: ("written", relative to its folder) and read beside the committed units ("read", relative to the run).
#: summary.json is written last and sealed, so it is the report's commit point.
REPORT_RECORD = "report_files"


def report_inputs(run_dir: Path) -> list[Path]:
    """The files of `run_dir` a report reads beside the committed units, those that exist."""
    candidates = (run_dir / MEASUREMENTS_FILE, *sorted((run_dir / MEASUREMENTS_DIR).glob("*.json")),
                  run_dir / SPARSE_KERNELS_FILE)
    return [p for p in candidates if p.is_file()]


def report_record(out_dir: Path, run_dir: Path, written: Sequence[Path], read: Sequence[Path]) -> dict:
    """The report's record (REPORT_RECORD): size and sha256 of what it wrote into `out_dir` and read from `run_dir`."""
    return {"written": {p.relative_to(out_dir).as_posix(): file_digest(p) for p in written},
            "read": {p.relative_to(run_dir).as_posix(): file_digest(p) for p in read}}


def sealed_json_problem(path: Path, rel: str) -> str:
    """"" when the JSON object at `path` carries no seal (written before seals) or matches it, else why not."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"{rel} is unreadable ({exc.strerror or exc})"
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        return f"{rel} is unreadable ({type(exc).__name__})"
    if not isinstance(doc, dict):
        return f"{rel} is malformed (not a JSON object)"
    if SEAL in doc and doc[SEAL] != manifest_seal(doc):
        return f"{rel} differs from its seal (edited or damaged since it was written)"
    return ""


def _report_record_of(run_dir: Path) -> tuple[dict | None, str]:
    """(the run's own report record, why it cannot be read); (None, "") for no report or one written before
    records were."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None, ""
    problem = sealed_json_problem(path, "summary.json")
    if problem:
        return None, problem
    record = json.loads(path.read_text(encoding="utf-8")).get(REPORT_RECORD)
    if record is None:
        return None, ""
    if not (isinstance(record, dict) and all(isinstance(record.get(k), dict) for k in ("written", "read"))):
        return None, f"summary.json is malformed (its {REPORT_RECORD!r} is not the report's record)"
    return record, ""


def report_input_problems(run_dir: Path) -> list[str]:
    """What a report cannot be written from (one phrase naming each file): a sealed input (measurements.json,
    measurements/*.json) that differs from its seal, or an input the run's report was written from that is gone.
    `auditor report` refuses these (fail closed): a silently smaller report would drop what it showed."""
    out = [problem for path in report_inputs(run_dir)
           if (problem := sealed_json_problem(path, path.relative_to(run_dir).as_posix()))]
    record, _ = _report_record_of(run_dir)
    for rel in sorted((record or {}).get("read", {})):
        if _inside(run_dir, rel) and not (run_dir / rel).exists():
            out.append(f"{rel} is missing (the run's report was written from it)")
    return out


def report_output_problems(run_dir: Path) -> list[str]:
    """Where the run's own report differs from its record: a written file (report.md, report.html, plots/*.png)
    missing or changed, an input changed since, or summary.json itself damaged. `auditor report` rewrites it."""
    record, problem = _report_record_of(run_dir)
    if record is None and not problem and (run_dir / "report.md").is_file() and not (
            run_dir / "summary.json").exists():
        problem = "summary.json is missing (report.md has no record to be checked against)"
    if record is None:
        return [problem] if problem else []
    out = []
    for kind in ("written", "read"):
        for rel, want in sorted(record[kind].items()):
            if not _inside(run_dir, rel):
                out.append(f"summary.json lists {rel!r}, not a file of the run directory")
            elif kind == "written" or (run_dir / rel).exists():  # a missing input is an input problem
                found = verify_file(run_dir / rel, rel, want).replace("its commit record", "the report's record")
                if found:
                    out.append(found + (" (changed since the report was written)" if kind == "read" else ""))
    return out


def report_problems(run_dir: Path) -> list[str]:
    """Every problem of the run's report and the files it was written from (inputs first)."""
    return [*report_input_problems(run_dir), *report_output_problems(run_dir)]


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


def _alive(pid: int) -> bool:
    """Whether a process `pid` runs on this host (one we may not signal runs too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (ProcessLookupError, OverflowError, OSError):
        return False
    return True


def remove_temp_files(run_dir: Path) -> None:
    """Temp files of an interrupted writer, in the run directory, its layout folders, plots/ and measurements/.

    The caller holds the lock, so no run writes them now; `auditor report` and `auditor measure` write without
    it, so a temp file whose writer (the pid in its name) is still alive, and not this process, is left to it."""
    for folder in (run_dir, *(run_dir / d for d in (*LAYOUT_DIRS, "plots", MEASUREMENTS_DIR))):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not (is_temp_file(path) and path.is_file()):
                continue
            pid = int(path.name.rsplit(TEMP_MARK, 1)[1])
            if pid == os.getpid() or not _alive(pid):
                log.info("removing temp file of an interrupted write: %s", path)
                path.unlink(missing_ok=True)


#: Where a unit worker builds a variant's artifacts (a GGUF export, a saved model): artifacts/<variant id>.<pid>.
ARTIFACTS_DIR = "artifacts"


def remove_stale_artifacts(run_dir: Path) -> list[Path]:
    """Artifact folders of workers that are gone (the caller holds the lock, so none of this run's workers
    is alive): a killed unit's half-written GGUF export would otherwise stay for good. Returns what went."""
    folder = run_dir / ARTIFACTS_DIR
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        suffix = path.name.rsplit(".", 1)[-1]
        if path.is_dir() and not path.is_symlink() and suffix.isdigit() and int(suffix) != os.getpid():
            log.info("removing the artifacts of an interrupted unit: %s", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    try:
        folder.rmdir()  # once empty
    except OSError:
        pass
    return removed


# --- the lock ------------------------------------------------------------------------------------


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive flock on <run>/.lock; the kernel releases it when the process dies, even by SIGKILL."""
    path = run_dir / ".lock"
    try:
        fh = open(path, "a+")
    except OSError as exc:  # a read-only run directory, or a .lock that is a folder
        raise AuditorError(f"{path}: cannot open the run's lock file ({exc.strerror or exc}); "
                           "a run directory must be writable to run in it") from None
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
    if not path.is_file():
        raise AuditorError(f"{path}: the run's lock file is not a regular file; remove it (no auditor process "
                           "can hold it)")
    try:  # read-only: a reader must work on a read-only copy of a run (CI artifacts)
        fh = open(path, "rb")
    except OSError as exc:
        raise AuditorError(f"{path}: cannot open the run's lock file ({exc.strerror or exc})") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().decode("utf-8", "replace").strip() or "unknown process"
        except OSError:  # a file system without locks: nobody can hold it either
            return None
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
    state: str  # FINISHED | PENDING | DAMAGED | UNIT_FAILED
    final: str = ""  # the unit's final file, relative to the run directory
    problem: str = ""  # why it is damaged or failed (or what a pending unit left behind)
    peak_rss_bytes: int | None = None  # a finished unit's peak resident memory, from its commit record


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    study: str
    study_hash: str
    state: str  # RUNNING | COMPLETE | INTERRUPTED | FAILED | INCOMPLETE
    detail: str
    units: tuple[UnitStatus, ...]  # as planned in the manifest; () when it plans none (hand-made runs)
    has_report: bool
    problems: tuple[str, ...] = ()  # damaged run-level files (items.parquet, failure records), one phrase each
    # the report and the files it was written from (`report_problems`): not the units', so not `problems`
    # (a report rewritten over them must not call the run incomplete); the gate fails on them too
    report_problems: tuple[str, ...] = ()

    @property
    def n_finished(self) -> int:
        return sum(u.state == FINISHED for u in self.units)

    @property
    def missing(self) -> tuple[UnitStatus, ...]:
        """Planned units that do not count: pending or damaged."""
        return tuple(u for u in self.units if u.state != FINISHED)

    @property
    def damaged(self) -> tuple[UnitStatus, ...]:
        return tuple(u for u in self.units if u.state == DAMAGED)

    @property
    def is_complete(self) -> bool:
        """Every planned unit is finished and no run-level file is damaged (a run whose manifest plans no
        units has no units to check)."""
        return not self.missing and not self.problems

    def incomplete_text(self) -> str:
        """"incomplete: N of M units finished (...)", the line the report and the gate open with."""
        damaged = [u.id for u in self.damaged] + list(self.problems)
        damaged_text = f"; damaged: {', '.join(damaged)}" if damaged else ""
        return f"incomplete: {self.n_finished} of {len(self.units)} units finished ({self.state}{damaged_text})"

    def counted_files(self, kind: str) -> list[Path] | None:
        """Final files of the finished units of `kind`: the only ones the view reads.

        None when the manifest plans no units (a run made by hand or by an older version):
        then every file in the folder counts, as before.
        """
        if not self.units:
            return None
        return [self.run_dir / u.final for u in self.units if u.kind == kind and u.state == FINISHED]


def read_state_file(run_dir: Path) -> dict:
    """state.json as the runner last wrote it ({} when absent or unreadable)."""
    try:
        doc = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def state_file_problem(run_dir: Path) -> str:
    """"" when state.json is absent (a hand-made run) or as the runner writes it, else what is wrong with it."""
    path = run_dir / "state.json"
    if not path.exists():
        return ""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"state.json is unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    if not isinstance(doc, dict) or not isinstance(doc.get("state"), str):
        return "state.json is malformed (no \"state\")"
    if SEAL in doc and doc[SEAL] != manifest_seal(doc):
        return "state.json differs from its seal (edited or damaged since the run wrote it)"
    return ""


def _peak_rss(run_dir: Path, unit: Unit) -> int | None:
    """The unit's peak resident memory as its commit record keeps it: its own process's or, when higher, the
    bound of the children it waited for where it rose (auditor.core.rss.children_peak_bytes: never below a
    child's own peak, so the highest over a run's records is never below any one process's); None for a
    record without one (runs before it was kept, or not Linux)."""
    doc = read_commit(run_dir, unit) or {}
    peaks = [doc.get(k) for k in ("peak_rss_bytes", "children_peak_rss_bytes")]
    peaks = [p for p in peaks if isinstance(p, int) and not isinstance(p, bool)]
    return max(peaks) if peaks else None


def run_status(run_dir: Path, manifest: dict | None = None) -> RunStatus:
    """What a run directory holds: planned units, which are finished, and whether a process runs it.

    A run whose state.json says "running" but whose lock nobody holds was killed: it is
    "interrupted", whoever asks.
    """
    manifest = load_manifest(run_dir) if manifest is None else manifest
    units = []
    problems: list[str] = []
    failures = {doc["id"]: str(doc.get("reason", "")) for doc in failed_units(run_dir, manifest, problems)}
    items = items_problem(run_dir, manifest)
    if items:
        problems.insert(0, items)
    problems += variants_problems(run_dir, manifest)
    state_problem = state_file_problem(run_dir)
    if state_problem:
        problems.append(state_problem)
    for raw in manifest.get("units", []):
        unit = Unit.from_manifest(raw)
        state, problem = check_unit(run_dir, unit, raw["key"])
        if state != FINISHED and unit.id in failures:
            state, problem = UNIT_FAILED, failures[unit.id]
        units.append(UnitStatus(unit.id, unit.kind, unit.variant, unit.backend, unit.shard, state,
                                unit.final_path(run_dir).relative_to(run_dir).as_posix(), problem,
                                _peak_rss(run_dir, unit) if state == FINISHED else None))
    state_doc = read_state_file(run_dir)
    holder = lock_holder(run_dir)
    recorded = state_doc.get("state", "unknown")
    if holder:
        state, detail = RUNNING, f"held by {holder}"
    elif recorded in (RUNNING, INTERRUPTED):
        state, detail = INTERRUPTED, (f"the process that ran it (pid {state_doc.get('pid')}) is gone; "
                                      "run it again to resume")
    elif recorded == FAILED:
        state, detail = FAILED, str(state_doc.get("error") or "")
    elif units and all(u.state == FINISHED for u in units):
        state, detail = COMPLETE, ""
    elif any(u.state == UNIT_FAILED for u in units):
        failed = [u for u in units if u.state == UNIT_FAILED]
        state, detail = INCOMPLETE, f"{len(failed)} unit(s) failed: " + "; ".join(
            f"{u.id}: {u.problem}" for u in failed)
    else:  # units left pending on purpose (`auditor run --only`), or damaged since
        pending = sum(u.state == PENDING for u in units)
        state, detail = INCOMPLETE, str(state_doc.get("error") or (
            f"{pending} planned unit(s) pending" if pending else recorded))
    if state == COMPLETE and problems:
        state, detail = INCOMPLETE, ""
    damaged = [u.id for u in units if u.state == DAMAGED]
    if damaged and not holder:
        said = f"{len(damaged)} damaged unit(s): {', '.join(damaged)}; `auditor run` recomputes them"
        detail = said if state == INCOMPLETE and detail in ("", recorded) else f"{detail}; {said}"
    if problems and not holder:
        said = "damaged: " + "; ".join(problems)
        detail = said if state == INCOMPLETE and detail in ("", recorded) else f"{detail}; {said}"
    study = manifest.get("study", {}) if isinstance(manifest.get("study"), dict) else {}
    return RunStatus(run_dir, str(study.get("name", run_dir.name)), str(study.get("hash", "")), state, detail,
                     tuple(units), (run_dir / "report.md").is_file(), tuple(problems),
                     tuple(report_problems(run_dir)))
