"""Exact ties of the option log-probs: the hashed tie rule, and old records read with it."""
from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.data.records import (CLOZE, STRICT, apply_tie_rule, exact_ties, read_records, tie_break, tie_key,
                                  write_parquet)


def test_tie_break_is_the_argmax_when_there_is_no_tie():
    assert tie_break([-1.0, -0.5, -2.0], "k") == 1
    assert tie_break([-np.inf, -3.0, -np.inf], "k") == 1


def test_tie_break_draws_among_the_tied_options_by_key_and_favours_no_index():
    tied = [-0.5, -0.5, -2.0]
    picks = [tie_break(tied, tie_key(STRICT, s, f"item-{i}")) for s in range(3) for i in range(400)]
    assert set(picks) == {0, 1}  # never the untied option
    share = np.mean(np.array(picks) == 0)
    assert 0.44 < share < 0.56  # a uniform draw, not "the lowest index" (binomial SE 0.014 at n = 1,200)
    # reproducible, and the same for every variant: the key has no variant in it
    assert tie_break(tied, tie_key(STRICT, 1, "item-7")) == tie_break(tied, tie_key(STRICT, 1, "item-7"))


def _rows(lp: list[tuple[float, float, float]], protocol: str = STRICT) -> pd.DataFrame:
    return pd.DataFrame([{
        "variant": "dense", "backend": "torch", "protocol": protocol, "seed": 0, "item_id": f"it-{i}",
        "category": "Age", "condition": "ambig", "perm": "012", "chosen": int(np.argmax(p)), "role": "x",
        "correct": False, "label": 2, "stereotype_index": 0, "unknown_index": 2,
        "logprob_0": p[0], "logprob_1": p[1], "logprob_2": p[2]} for i, p in enumerate(lp)])


def test_old_records_are_read_with_the_tie_rule_and_untied_rows_are_untouched(tmp_path):
    lp = [(-0.25, -0.25, -3.0)] * 200 + [(-3.0, -0.5, -0.25)]
    frame = _rows(lp)
    assert exact_ties(frame).sum() == 200
    path = tmp_path / "r.parquet"
    write_parquet(frame, path)
    read = read_records([path])
    tied = read.iloc[:200]
    assert set(tied["chosen"]) == {0, 1} and 0 < (tied["chosen"] == 1).sum() < 200
    # roles follow the new answer: index 0 is the stereotype here, 1 the other group
    assert set(tied.loc[tied["chosen"] == 0, "role"]) == {"stereotype"}
    assert set(tied.loc[tied["chosen"] == 1, "role"]) == {"other"}
    assert read.iloc[200]["chosen"] == 2 and read.iloc[200]["role"] == "x"  # untied: as written


def test_cloze_keeps_the_harness_rule():
    frame = _rows([(-0.25, -0.25, -3.0)] * 50, protocol=CLOZE)
    assert (apply_tie_rule(frame)["chosen"] == 0).all()
