"""`auditor bench calibration`: the simulation counts like the analysis, and the item-level test holds its level."""
from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.analysis.direction import item_counts
from auditor.benchmarks.calibration import ROLES, calibration_table, per_item_counts, simulate
from auditor.cli import main


def test_simulated_counts_match_the_analysis_counts():
    dense, var = simulate(30, 5, 0.5, 0.1, np.random.default_rng(0))
    pairs = pd.DataFrame({
        "item_id": np.repeat([f"it-{i:02d}" for i in range(30)], 5), "category": "Age",
        "template": np.repeat([f"it-{i:02d}" for i in range(30)], 5),
        "role_ref": [ROLES[x] for x in dense.ravel()], "role_var": [ROLES[x] for x in var.ravel()]})
    counts = item_counts(pairs)
    mine = per_item_counts(dense, var)
    for key in ("b", "c", "b_anti"):
        assert list(counts[key]) == list(mine[key]), key


def test_correlated_orders_inflate_pooled_mcnemar_but_not_the_item_level_test():
    table = calibration_table(n_items=60, reps=200, correlations=(1.0,), orders=(5,), seed=1)
    row = table.iloc[0]
    assert row["type1_pooled_mcnemar"] > 0.2  # each item counted five times
    assert row["type1_shift"] <= 0.06 and row["type1_verdict"] <= row["type1_shift"]
    assert row["power_shift"] > row["type1_shift"]


def test_command_prints_the_table(capsys):
    assert main(["bench", "calibration", "--items", "20", "--reps", "5"]) == 0
    out = capsys.readouterr().out
    assert "type-I shift" in out and "largest type-I error of the verdict's tests" in out
    assert len([line for line in out.splitlines() if "|" in line]) == 1 + 12  # header + 4 rho x 3 orders
    assert main(["bench", "calibration", "--reps", "0"]) == 2
