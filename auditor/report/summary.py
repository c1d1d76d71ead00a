"""summary.json: the manifest and every table the report shows, as JSON (NaN as null)."""
from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from auditor.core.files import json_safe
from auditor.view.run import RunView


def to_json_rows(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe rows: NaN -> null, numpy scalars -> Python."""
    return json_safe(frame.to_dict(orient="records"))


def summary_dict(view: RunView) -> dict:
    """What summary.json holds: the manifest and every table the report shows, NaN as null."""
    return json_safe({
        "run": view.name,
        "manifest": view.manifest,
        "reference_precision": view.reference_precision,
        "thresholds": asdict(view.thresholds),
        "variants": to_json_rows(view.units),
        "overview": to_json_rows(view.overview),
        "verdicts": json_safe([asdict(v) for v in view.verdicts]),
        "metrics": to_json_rows(view.metrics),
        "transitions": to_json_rows(view.transitions),
        "comparison": to_json_rows(view.comparison),
        "null_baselines": to_json_rows(view.baselines),
        "paradox": to_json_rows(view.paradox),
        "notes": list(view.notes),
        "protocol": view.protocol,
        "protocols": to_json_rows(view.protocols),
        "mask_spread": to_json_rows(view.mask_spread),
    })
