"""`auditor score-predictions`: BBQ metrics for predictions made by another system."""
from __future__ import annotations

import json
from pathlib import Path

from auditor.analysis.predictions import score_predictions


def register(sub) -> None:
    p = sub.add_parser("score-predictions", help="metrics for BBQ items with a prediction field (jsonl)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--field", required=True, help="name of the field holding the prediction (index 0-2 or answer text)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format for now)")
    p.set_defaults(func=run)


def run(args) -> int:
    print(json.dumps(score_predictions(args.files, args.field), indent=2, sort_keys=True))
    return 0
