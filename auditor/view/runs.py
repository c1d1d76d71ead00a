"""Run directories under a reports folder: the list the TUI opens with, and finding one by name."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from auditor.core.errors import AuditorError
from auditor.data.rundir import LAYOUT_DIRS, load_manifest, run_status

log = logging.getLogger(__name__)


RUN_COLUMNS = ["run", "path", "created_utc", "model", "reference_precision", "n_items", "is_sample", "n_units",
               "state", "n_planned"]


#: Files and folders only the study runner writes: a folder holding one of them but no manifest.json is a run
#: whose manifest was lost (listed as broken), not an unrelated folder (skipped).
RUN_MARKS = ("state.json", "items.parquet", *LAYOUT_DIRS)


def looks_like_run(path: Path) -> bool:
    """Whether `path` is a run directory, intact or not: it has a manifest.json or a file only runs have."""
    return path.is_dir() and any((path / name).exists() for name in ("manifest.json", *RUN_MARKS))


def list_runs(reports_dir: Path | str) -> pd.DataFrame:
    """Run directories under `reports_dir` (`looks_like_run`), newest first; a damaged one is listed as
    broken with the reason, so the healthy runs beside it still open."""
    reports_dir = Path(reports_dir)
    rows = []
    if reports_dir.is_dir():
        for path in sorted(reports_dir.iterdir()):
            if not looks_like_run(path):
                continue
            try:
                manifest = load_manifest(path)
                status = run_status(path, manifest)
            except (AuditorError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                # listed as broken (a lost manifest.json too); opening it names the damage
                log.warning("broken run %s: %s", path, exc)
                rows.append({"run": path.name, "path": str(path), "created_utc": "", "model": "unknown",
                             "reference_precision": "unknown", "n_items": None, "is_sample": False, "n_units": 0,
                             "state": f"broken: {exc}", "n_planned": None})
                continue
            model, data = manifest.get("model", {}) or {}, manifest.get("data", {}) or {}
            rows.append({
                "run": path.name, "path": str(path), "created_utc": str(manifest.get("created_utc", "")),
                "model": str(model.get("name", "unknown")),
                "reference_precision": str(model.get("reference_precision", "unknown")),
                "n_items": data.get("n_items"), "is_sample": bool(data.get("is_sample", False)),
                # finished (verified) units of the plan; every records file when the manifest plans none
                "n_units": status.n_finished if status.units else len(list((path / "records").glob("*.parquet"))),
                "state": status.state, "n_planned": len(status.units) or None,
            })
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values(["created_utc", "run"], ascending=[False, True]).reset_index(drop=True)


def resolve_run(text: str | Path, reports_dir: Path | str = "reports") -> Path:
    """A run directory from a path or a run name under `reports_dir`; AuditorError naming both places."""
    path = Path(text)
    if path.is_dir():
        return path
    named = Path(reports_dir) / str(text)
    if named.is_dir():
        return named
    places = " and ".join(dict.fromkeys(str(p) for p in (path, named)))
    raise AuditorError(f"{text}: no such run directory (looked at {places})")
