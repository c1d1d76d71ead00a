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
    for key in ("b", "c", "ref_s", "ref_o", "ref_u", "var_u", "n_us", "n_uo", "n_os", "n_so", "n_su", "n_ou"):
        assert list(counts[key]) == list(mine[key]), key


def test_correlated_orders_inflate_pooled_mcnemar_but_not_the_item_level_test():
    table = calibration_table(n_items=60, reps=200, correlations=(1.0,), orders=(5,), seed=1)
    row = table.iloc[0]
    assert row["type1_pooled_mcnemar"] > 0.2  # each item counted five times
    assert row["type1_shift"] <= 0.06 and row["type1_verdict"] <= 0.06
    assert row["power_shift"] > row["type1_shift"]


def test_command_prints_the_table(capsys):
    assert main(["bench", "calibration", "--items", "20", "--reps", "5"]) == 0
    out = capsys.readouterr().out
    assert "type-I shift" in out and "largest type-I error of the verdict's tests" in out
    assert len([line for line in out.splitlines() if "|" in line]) == 1 + 12  # header + 4 rho x 3 orders
    assert main(["bench", "calibration", "--reps", "0"]) == 2


# --- `--records RUN`: nulls and alternatives made from a run's records ------------------------------------

def _dense_run(tmp_path, n_items: int = 240, seed: int = 0):
    """A run directory whose dense torch records read the content: strict rows, three cyclic orders."""
    from auditor.data.prompts import CYCLIC_SEEDS, answer_order
    from auditor.data.records import apply_tie_rule, write_parquet

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        condition = "ambig" if i % 2 == 0 else "disambig"
        label = 2 if condition == "ambig" else int(rng.integers(0, 2))
        content = rng.normal(0, 1, 3)
        content[label] += 1.0  # it mostly reads the answer
        for s in CYCLIC_SEEDS:
            perm = answer_order(s)
            lp = content + 0.2 * np.eye(3)[perm[0]] - 2.0  # and a mild preference for the letter A
            chosen = int(np.argmax(lp))
            rows.append({"variant": "dense", "backend": "torch", "protocol": "strict", "seed": s,
                         "item_id": f"Age/{i}", "category": "Age", "example_id": i, "question_index": str(i // 4),
                         "condition": condition, "polarity": "neg", "perm": "".join(map(str, perm)),
                         "chosen": chosen, "role": "", "correct": chosen == label, "label": label,
                         "stereotype_index": 0, "unknown_index": 2,
                         "logprob_0": lp[0], "logprob_1": lp[1], "logprob_2": lp[2]})
    frame = pd.DataFrame(rows)
    frame["role"] = np.where(frame["chosen"] == 2, "unknown", np.where(frame["chosen"] == 0, "stereotype", "other"))
    (tmp_path / "records").mkdir()
    write_parquet(apply_tie_rule(frame), tmp_path / "records" / "dense.parquet")
    return tmp_path


def test_planted_shift_moves_srs_by_the_asked_amount_and_nulls_keep_the_reference(tmp_path):
    from auditor.benchmarks._calibration_records import SIM, load_base, scenario

    dense, others = load_base(_dense_run(tmp_path, n_items=600))
    rng = np.random.default_rng(3)
    recs = scenario("planted shift", dense, others, rng, shift=0.10)
    amb = recs[recs["condition"] == "ambig"]
    srs = lambda v: float((amb[amb["variant"] == v]["role"] == "stereotype").mean())  # noqa: E731
    assert abs((srs(SIM) - srs("dense")) - 0.10) < 0.05
    # a new letter preference changes answers only where the letter A was close to winning
    pref = scenario("letter preference", dense, others, rng)
    var = pref[pref["variant"] == SIM].reset_index(drop=True)
    assert 0 < (var["chosen"] != dense["chosen"]).mean() < 0.5


def test_records_calibration_grades_every_scenario_on_both_protocols(tmp_path, capsys):
    from auditor.benchmarks._calibration_records import NULLS

    run = _dense_run(tmp_path)
    assert main(["bench", "calibration", "--records", str(run), "--reps", "2", "--boot", "50", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["rows"]
    scenarios = {r["scenario"] for r in rows}
    # no other variant in this run: no template-swap pair, the other nulls and both planted shifts
    assert scenarios == set(NULLS[1:]) | {"anti-stereotype lean lost to noise", "planted shift +5 pts",
                                          "planted shift +10 pts"}
    assert {r["protocol"] for r in rows} == {"strict", "debiased"}
    for r in rows:
        total = r["elevated_or_high"] + r["low"] + r["not_shown"] + r["inconclusive"]
        assert 0.0 <= r["elevated_or_high"] <= 1.0 and total <= 1.0 + 1e-9
    assert main(["bench", "calibration", "--records", str(tmp_path / "nope")]) == 2
