"""One audit run: the dense reference and its compressed variants scored on the same BBQ prompts.

A run directory holds everything a report or the TUI needs:
    manifest.json                   configuration and provenance
    items.parquet                   the selected items' texts and answer roles
    records/<variant_id>__<backend>.parquet   item-level records (one per unit of work)
    variants/<variant_id>__<backend>.json     how the variant was made and scored
    summary.json, report.md         computed from the files above
Each unit's files are written under a temp name and renamed when complete, so a
re-run skips finished units and redoes interrupted ones.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from auditor.bbq import BBQSelection, select_items
from auditor.data import resolve_bbq
from auditor.engine import PromptSet, score
from auditor.errors import AuditorError
from auditor.models import ModelSource, load_model, load_tokenizer, resolve_model
from auditor.provenance import git_commit, machine, now_utc, package_versions
from auditor.records import items_frame, write_parquet

log = logging.getLogger(__name__)

DENSE = "dense"


@dataclass(frozen=True)
class AuditConfig:
    """Everything that defines a run; its JSON is stored in the manifest."""

    variants: tuple[str, ...] = ("magnitude@0.5",)
    model: str | None = None
    bbq: str | None = None
    categories: tuple[str, ...] | None = None
    condition: str = "both"
    n_items: int | None = None
    sample_seed: int = 0
    seeds: tuple[int, ...] = (0,)
    compress_seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    run_name: str = "demo"
    reports_dir: str = "reports"
    calib: str | None = None
    trust_remote_code: bool = False
    extra: dict = field(default_factory=dict)


def safe_name(name: str) -> str:
    """A run or variant name fit to be a path component (no separators, no dot-dot)."""
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "_", name).strip("._")
    if not cleaned:
        raise AuditorError(f"run name {name!r} has no usable characters")
    return cleaned[:100]


def unit_name(variant_spec: str, backend: str) -> str:
    from compressors.base import variant_id

    return f"{variant_id(variant_spec)}__{backend}"


def write_json(obj, path: Path) -> None:
    """Atomic JSON write (temp name + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str, allow_nan=False))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_audit(cfg: AuditConfig) -> Path:
    """Score dense and every variant; write records, summary and report; return the run dir."""
    from compressors.registry import parse_chain

    chains = {spec: parse_chain(spec) for spec in cfg.variants}  # bad specs fail before any work
    data = resolve_bbq(cfg.bbq)
    selection = select_items([data.path], categories=cfg.categories, condition=cfg.condition,  # type: ignore[arg-type]
                             n=cfg.n_items, seed=cfg.sample_seed, origin=data.origin)
    source = resolve_model(cfg.model)
    run_dir = _prepare_run_dir(Path(cfg.reports_dir) / safe_name(cfg.run_name))
    _write_manifest(run_dir, cfg, selection, source, data.is_sample)
    write_parquet(items_frame(selection.items), run_dir / "items.parquet")

    tokenizer = load_tokenizer(source)
    prompts = PromptSet.build(tokenizer, selection.items, cfg.seeds)
    dense_model = load_model(source, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    from auditor.backends.torch_backend import TorchBackend
    from compressors.base import Variant
    from compressors.calibration import load_calibration

    for spec in (DENSE, *cfg.variants):
        unit = unit_name(spec, "torch")
        if (run_dir / "records" / f"{unit}.parquet").exists():
            log.info("skipping finished unit %s", unit)
            continue
        variant = Variant(DENSE, model=copy.deepcopy(dense_model) if spec != DENSE else dense_model)
        steps = chains.get(spec, [])
        calibration = None
        if any(s.needs_calibration for s in steps):
            calibration = load_calibration(tokenizer, cfg.calib)
        for step in steps:
            variant = step.apply(variant, calibration=calibration, seed=cfg.compress_seed,
                                 workdir=run_dir / "artifacts")
        if variant.model is None:
            raise AuditorError(f"{spec}: served by llama.cpp; use a study with the llama.cpp backend")
        backend = TorchBackend(variant.model, batch_size=cfg.batch_size, pad_id=pad_id)
        result = score(backend, prompts, spec)
        write_json({**variant.describe(), "spec": spec, "backend": "torch", "scoring_wall_s": result.wall_s,
                    "per_prompt_ms": result.per_prompt_ms}, run_dir / "variants" / f"{unit}.json")
        write_parquet(result.records, run_dir / "records" / f"{unit}.parquet")
        del backend, variant

    from auditor.report.markdown import write_report

    write_report(run_dir)
    return run_dir


def _prepare_run_dir(run_dir: Path) -> Path:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise AuditorError(f"{run_dir}: output directory is not writable ({exc.strerror})") from None
    return run_dir


def _write_manifest(run_dir: Path, cfg: AuditConfig, selection: BBQSelection, source: ModelSource,
                    is_sample: bool) -> None:
    manifest = {
        "config": asdict(cfg),
        "created_utc": now_utc(),
        "model": {"name": source.name, "path": str(source.path), "kind": source.kind,
                  "reference_precision": source.reference_precision},
        "data": {"origin": selection.origin, "is_sample": is_sample, "files": list(selection.files),
                 "n_items": len(selection.items), "n_available": selection.n_available,
                 "counts": selection.counts, "n_unresolved": len(selection.unresolved),
                 "unresolved": [list(u) for u in selection.unresolved]},
        "seeds": list(cfg.seeds),
        "versions": package_versions(),
        "machine": machine(),
        "git_commit": git_commit(Path(__file__).resolve().parents[1]),
    }
    write_json(manifest, run_dir / "manifest.json")


def load_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise AuditorError(f"{run_dir}: not a run directory (no manifest.json)")
    return json.loads(path.read_text())


def record_files(run_dir: Path) -> Sequence[Path]:
    return sorted((run_dir / "records").glob("*.parquet"))
