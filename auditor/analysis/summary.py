"""Summary tables of a run's records: metrics per variant and category, transitions against the reference.

Pure functions of records, so a report or the TUI can always recompute them.
"""
from __future__ import annotations

import pandas as pd

from auditor.analysis.metrics import summarize, transitions
from auditor.core.names import DENSE


def metrics_table(records: pd.DataFrame) -> pd.DataFrame:
    """Metrics per (variant, backend, category, condition), pooled over seeds."""
    return summarize(records, by=("variant", "backend"))


def transition_table(records: pd.DataFrame, reference: str = DENSE, *, condition: str = "ambig") -> pd.DataFrame:
    """Transitions of every variant against the reference on the same backend, pooled over seeds.

    Ambiguous items by default: there unbiased -> biased is a flip. With
    condition="disambig" only the items whose stereotype answer is WRONG
    (label != stereotype_index) are counted, so a move to the correct answer is
    never reported as a flip; those rows are reported apart.
    """
    records = records[records["condition"] == condition]
    if condition != "ambig":
        records = records[records["label"] != records["stereotype_index"]]
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
