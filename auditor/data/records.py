"""Item-level records: one row per (variant, backend, protocol, seed, item), stored as Parquet.

Every metric, statistic, report figure and TUI view is computed from these rows.
Answers are in dataset indexing (ans0..ans2), whatever order they were shown in.
``question_index`` (BBQ's template number within a category) clusters items for
the template-level bootstrap; runs written before it was recorded read as one
template per item (``auditor.analysis.item_inference.templates``).

`protocol` names how the answer was read (PROTOCOLS): "strict" = argmax of the
option letters under one answer order; "debiased" = rows derived from the strict
rows of the cyclic orders (auditor.analysis.protocols); "cloze" = the
lm-evaluation-harness continuation protocol (auditor.data.cloze). Protocols are
separate analyses: never pool rows of two protocols.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from auditor.core.files import atomic_path
from auditor.data.bbq import BBQItem

ROLE_STEREOTYPE = "stereotype"
ROLE_OTHER = "other"
ROLE_UNKNOWN = "unknown"

STRICT, DEBIASED, CLOZE = "strict", "debiased", "cloze"
PROTOCOLS = (STRICT, DEBIASED, CLOZE)

COLUMNS = (
    "variant", "backend", "protocol", "seed", "item_id", "category", "example_id", "question_index", "condition",
    "polarity", "perm", "chosen", "role", "correct", "label", "stereotype_index", "unknown_index",
    "logprob_0", "logprob_1", "logprob_2",
)


def role_of(item: BBQItem, chosen: int) -> str:
    if chosen == item.unknown_index:
        return ROLE_UNKNOWN
    return ROLE_STEREOTYPE if chosen == item.stereotype_index else ROLE_OTHER


def make_records(
    variant: str,
    backend: str,
    seed: int,
    items: Sequence[BBQItem],
    perms: Sequence[Sequence[int]],
    shown_logprobs: np.ndarray,
    protocol: str = STRICT,
) -> pd.DataFrame:
    """Rows for one seed. `shown_logprobs[i, j]` is the log-prob of letter j as shown for item i.

    For the cloze protocol `perm` is the dataset order and `shown_logprobs[i, k]` the
    score of dataset answer k (its best continuation's summed log-likelihood).
    """
    rows = []
    for item, perm, lp in zip(items, perms, shown_logprobs):
        data_lp = np.empty(3)
        for j, k in enumerate(perm):
            data_lp[k] = lp[j]
        chosen = int(np.argmax(data_lp))
        rows.append({
            "variant": variant, "backend": backend, "protocol": protocol, "seed": int(seed), "item_id": item.item_id,
            "category": item.category, "example_id": item.example_id, "question_index": item.question_index,
            "condition": item.condition, "polarity": item.polarity, "perm": "".join(map(str, perm)), "chosen": chosen,
            "role": role_of(item, chosen), "correct": chosen == item.label, "label": item.label,
            "stereotype_index": item.stereotype_index, "unknown_index": item.unknown_index,
            "logprob_0": float(data_lp[0]), "logprob_1": float(data_lp[1]), "logprob_2": float(data_lp[2]),
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def items_frame(items: Sequence[BBQItem]) -> pd.DataFrame:
    """Item texts for reports and the TUI, keyed by item_id."""
    return pd.DataFrame([{
        "item_id": it.item_id, "category": it.category, "example_id": it.example_id,
        "question_index": it.question_index, "condition": it.condition, "polarity": it.polarity, "context": it.context,
        "question": it.question, "ans0": it.answers[0], "ans1": it.answers[1], "ans2": it.answers[2],
        "label": it.label, "stereotype_index": it.stereotype_index, "unknown_index": it.unknown_index,
        "stereotyped_groups": ", ".join(it.stereotyped_groups), "subcategory": it.subcategory,
    } for it in items])


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a temp name in the same folder, renamed when complete."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_records(paths: Sequence[Path]) -> pd.DataFrame:
    """Records of every file; rows written before protocols existed are "strict"."""
    frames = [pd.read_parquet(p) for p in paths]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    if "protocol" not in out.columns:
        out.insert(min(2, len(out.columns)), "protocol", STRICT)
    return out
