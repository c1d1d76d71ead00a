"""A planted run (tests/helpers_runs.py) whose study carries a [decision] table, as `auditor run` records it."""
from __future__ import annotations

import json
from pathlib import Path

from auditor.core.files import write_json


def with_decision(run: Path, decision: dict) -> Path:
    """Record ``decision`` (Constraints fields, as ``Study.decision`` holds them) in the run's manifest, where
    `auditor run` puts the parsed study (manifest["study"]["definition"]); return the run."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["study"] = {"name": run.name, "file": "study.toml", "definition": {"decision": decision}}
    write_json(manifest, run / "manifest.json")
    return run
