"""`auditor audit`: a run of dense + variants on one model, as an in-memory study through the runner.

There is one way runs are executed: `auditor.runner` (see its docstring for the
run directory layout). This module keeps `run_audit(AuditConfig)` for callers
that build a run from options, and the small run-directory helpers the report,
the statistics and the TUI import (DENSE, write_json, load_manifest, record_files).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from auditor.errors import AuditorError

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
    null_baselines: bool = True
    extra: dict = field(default_factory=dict)


def safe_name(name: str) -> str:
    """A run or variant name fit to be a path component (no separators, no dot-dot)."""
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "_", name).strip("._")
    if not cleaned:
        raise AuditorError(f"run name {name!r} has no usable characters")
    return cleaned[:100]


def unit_name(variant_spec: str, backend: str) -> str:
    """`<variant_id>__<backend>`: the file stem of an unsharded variant's records and descriptors."""
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


def study_from_config(cfg: AuditConfig):
    """The in-memory study `auditor audit` runs (validated like a study file): dense + cfg.variants."""
    from dataclasses import replace

    from auditor.study import parse_study

    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    doc = {
        "name": cfg.run_name, "output_dir": cfg.reports_dir, "models": [cfg.model or "smollm2"],
        "seeds": list(cfg.seeds), "null_baselines": cfg.null_baselines,
        "data": given(bbq=cfg.bbq, categories=list(cfg.categories) if cfg.categories else None,
                      condition=cfg.condition, n_items=cfg.n_items, sample_seed=cfg.sample_seed),
        "compression": {"variants": list(cfg.variants), "seed": cfg.compress_seed},
        "calibration": given(corpus=cfg.calib),
        "execution": {"batch_size": cfg.batch_size, "device": cfg.device},
    }
    study = parse_study(doc, source="auditor audit", base_dir=os.getcwd())
    return replace(study, trust_remote_code=cfg.trust_remote_code)


def run_audit(cfg: AuditConfig, *, force: bool = False) -> Path:
    """Score dense and every variant through the study runner; return the run dir."""
    from auditor.runner import run_study

    return run_study(study_from_config(cfg), force=force)[0]


def load_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise AuditorError(f"{run_dir}: not a run directory (no manifest.json)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise AuditorError(f"{path}: unreadable manifest ({exc})") from None


def record_files(run_dir: Path) -> Sequence[Path]:
    return sorted((run_dir / "records").glob("*.parquet"))
