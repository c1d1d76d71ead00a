"""`auditor score-predictions`: BBQ metrics for predictions made by another system."""
from __future__ import annotations

import json
from pathlib import Path

from auditor.analysis.predictions import score_predictions
from auditor.core.errors import AuditorError
from auditor.data.bbq import iter_json_objects


def register(sub) -> None:
    p = sub.add_parser("score-predictions", help="metrics for BBQ items with a prediction field (jsonl)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--field", required=True, help="name of the field holding the prediction (index 0-2 or answer text)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format for now)")
    p.set_defaults(func=run)


def run(args) -> int:
    scores = score_predictions(args.files, args.field)
    skipped = scores["_skipped"]
    if len(scores) == 1 and skipped["no_prediction"] and sum(skipped.values()) == skipped["no_prediction"]:
        # not one line has the field: a misspelt --field, not a file of predictions that all failed to match
        raise AuditorError(f"--field {args.field}: no line of {', '.join(map(str, args.files))} has this field "
                           f"({skipped['no_prediction']} lines; the first has {', '.join(_first_keys(args.files))})")
    print(json.dumps(scores, indent=2, sort_keys=True))
    return 0


def _first_keys(paths) -> list[str]:
    """The field names of the first object in `paths` (to show what --field could have been)."""
    for path in paths:
        for _, raw in iter_json_objects(Path(path)):
            return sorted(raw)
    return []
