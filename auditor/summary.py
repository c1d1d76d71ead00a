"""Summary of a run: metrics per variant and category, and transitions against the dense reference.

Pure functions of the run's files, so a report or the TUI can always recompute it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from auditor.audit import DENSE, load_manifest, record_files
from auditor.metrics import finite_or_none, summarize, transitions
from auditor.records import read_records


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(manifest, records, items) of a run directory."""
    manifest = load_manifest(run_dir)
    records = read_records(record_files(run_dir))
    items_path = run_dir / "items.parquet"
    items = pd.read_parquet(items_path) if items_path.exists() else pd.DataFrame()
    return manifest, records, items


def metrics_table(records: pd.DataFrame) -> pd.DataFrame:
    """Metrics per (variant, backend, category, condition), pooled over seeds."""
    return summarize(records, by=("variant", "backend"))


def transition_table(records: pd.DataFrame, reference: str = DENSE) -> pd.DataFrame:
    """Transitions of every variant against the reference on the same backend, pooled over seeds."""
    frames = []
    for (variant, backend), frame in records.groupby(["variant", "backend"], sort=True):
        if variant == reference:
            continue
        ref = records[(records["variant"] == reference) & (records["backend"] == backend)]
        if not len(ref):
            continue
        t = transitions(ref, frame)
        t.insert(0, "backend", backend)
        t.insert(0, "variant", variant)
        frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def to_json_rows(frame: pd.DataFrame) -> list[dict]:
    return [{k: finite_or_none(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
