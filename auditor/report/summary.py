"""summary.json: the manifest and every table the report shows, as JSON (NaN as null)."""
from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from auditor.core.errors import AuditorError
from auditor.core.files import json_safe
from auditor.view.decision import reference_notes, run_decision
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
        "transitions_disambig_stereotype_wrong": to_json_rows(view.transitions_disambig),
        "positions": to_json_rows(view.positions),
        "reference_validity": json_safe(asdict(view.validity)) if view.validity is not None else None,
        "comparison": to_json_rows(view.comparison),
        "null_baselines": to_json_rows(view.baselines),
        "paradox": to_json_rows(view.paradox),
        "notes": list(view.notes),
        "completeness": None if view.status is None or not view.status.units else {
            "state": view.status.state, "n_planned": len(view.status.units), "n_finished": view.status.n_finished,
            "missing": [{"unit": u.id, "state": u.state, "problem": u.problem} for u in view.status.missing]},
        "protocol": view.protocol,
        "protocols": to_json_rows(view.protocols),
        "mask_spread": to_json_rows(view.mask_spread),
        "fidelity": to_json_rows(view.fidelity),
        "generation": to_json_rows(view.generation),
        "decision": decision_dict(view),
    })


def decision_dict(view: RunView) -> dict:
    """The report's decision under the study's [decision] constraints, as `auditor decide RUN --json` prints it
    (without the run's name), or the reason it cannot be read."""
    try:
        decision = run_decision(view)
    except AuditorError as exc:  # a damaged [decision] in the manifest: the report says so too
        return {"error": str(exc)}
    return {"notes": reference_notes(view), **decision.to_dict()}
