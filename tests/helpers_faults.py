"""A finished run with planned units and commit records, built without a model, for the fault catalogue.

`build_planned_run` starts from tests/helpers_runs.build_run (planted answers, the real file layout)
and adds what the study runner writes around it: the manifest's planned units with their keys,
each unit's descriptor and commit record (size and sha256 of its files), the digest of
items.parquet and state.json "complete". So status, report, gate and the TUI read it as a run the
runner finished, in milliseconds.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from auditor.core.files import write_json
from auditor.data.rundir import SCORE, Unit, commit_record, file_digest, merged_descriptor, sealed
from tests.helpers_runs import build_run

FINISHED_UTC = "2026-01-01T00:00:00+00:00"


def planned_units(variants: Sequence[str]) -> list[Unit]:
    return [Unit(SCORE, spec, spec, "torch") for spec in ("dense", *variants)]


def build_planned_run(root: Path, name: str = "planned", *, variants: Sequence[str] = ("magnitude@0.5",),
                      thresholds: dict | None = None) -> Path:
    """`root/name`: dense + `variants` on torch, every unit planned in the manifest and committed."""
    run = build_run(root, name, variants=variants, thresholds=thresholds, script_in_context=False)
    units = planned_units(variants)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["study"] = {"name": name, "hash": "0" * 64, "definition": {}}
    manifest["units"] = [{**asdict(u), "name": u.name, "id": u.id, "key": f"key-{u.name}"} for u in units]
    manifest["data"]["items_file"] = file_digest(run / "items.parquet")
    write_json(sealed(manifest), run / "manifest.json")
    for u in units:
        info = json.loads((run / "variants" / f"{u.stem}.json").read_text())
        write_json({**info, "unit": u.name, "unit_key": f"key-{u.name}", "finished_utc": FINISHED_UTC},
                   u.descriptor_path(run))
        write_json(commit_record(run, u, f"key-{u.name}", FINISHED_UTC), u.commit_path(run))
        # variants/<stem>.json as the runner writes it: the merge of the committed descriptors
        desc = json.loads(u.descriptor_path(run).read_text())
        write_json(merged_descriptor(u.stem, [desc], [u.name]), run / "variants" / f"{u.stem}.json")
    write_json(sealed({"state": "complete", "pid": 1, "n_units": len(units), "n_finished": len(units),
                       "error": None}), run / "state.json")
    return run


def unit_files(run: Path, variant: str) -> list[Path]:
    """Every file of `variant`'s torch scoring unit, its merged variants/ descriptor included."""
    unit = Unit(SCORE, variant, variant, "torch")
    return [*unit.files(run), run / "variants" / f"{unit.stem}.json"]


class _Measured:
    """What `auditor measure` hands write_measurements (its `to_json`): one storage row per variant, no timings."""

    def __init__(self, variants: Sequence[str]) -> None:
        self.variants = variants

    def to_json(self) -> dict:
        return {"measurements": [
            {"variant": v, "family": "dense" if v == "dense" else "compressed", "format": "safetensors",
             "layout": "float32", "runtime": "torch", "path": "hf", "size_bytes": 1_000_000 * (i + 1),
             "bits_per_weight": 32.0} for i, v in enumerate(("dense", *self.variants))]}


def add_report(run: Path, variants: Sequence[str] = ("magnitude@0.5",)) -> Path:
    """`run` with measurements.json and measurements/<unit>.json as `auditor measure --out RUN` writes them
    (sealed), then the report written from them (plots, report.md, report.html, summary.json with its record)."""
    from auditor.measure.measurement import write_measurements
    from auditor.report.markdown import write_report

    write_measurements(_Measured(variants), run)
    write_report(run)
    return run
