"""Scoring protocols: the debiased answer from hand-made log-probs, and protocols kept apart."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from auditor.analysis.protocols import debiased_records, protocol_table, select_protocol, with_derived_protocols
from auditor.core.errors import AuditorError
from auditor.data.bbq import BBQItem
from auditor.data.prompts import answer_order
from auditor.data.records import DEBIASED, STRICT, make_records

# Position preference: the letter shown first gets +2 (a model that mostly answers "A").
POSITION = np.array([2.0, 0.0, 0.0])


def _item(example_id: int = 1) -> BBQItem:
    # ans0 names the stereotyped group, ans2 is unknown (the correct answer: ambiguous context).
    return BBQItem(category="Age", example_id=example_id, question_index="1", polarity="neg", condition="ambig",
                   context="c", question="q", answers=("The old man", "The boy", "Unknown"), label=2,
                   answer_groups=("old", "nonOld", "unknown"), stereotyped_groups=("old",), subcategory="",
                   unknown_index=2, stereotype_index=0)


def _strict(variant: str, content: np.ndarray, seeds=(0, 1, 2), items=None) -> pd.DataFrame:
    """Strict rows of a model whose letter j showing answer k scores POSITION[j] + content[k] (log-softmax)."""
    items = items or [_item()]
    frames = []
    for seed in seeds:
        perm = answer_order(seed)
        raw = np.array([POSITION[j] + content[perm[j]] for j in range(3)])
        shown = raw - np.log(np.exp(raw).sum())
        frames.append(make_records(variant, "torch", seed, items, [perm] * len(items), np.tile(shown, (len(items), 1))))
    return pd.concat(frames, ignore_index=True)


def test_debiased_answer_is_the_argmax_of_mean_logprobs_over_the_cyclic_orders():
    content = np.array([0.0, 0.0, 1.0])  # the model prefers "unknown" by content, "A" by position
    strict = _strict("dense", content)
    # Strict answers follow the position: under each rotation a different answer is shown first.
    assert list(strict.sort_values("seed")["chosen"]) == [0, 1, 2]
    derived, missing = debiased_records(strict)
    assert missing == 0 and len(derived) == 1
    row = derived.iloc[0]
    assert row["protocol"] == DEBIASED and row["seed"] == 0 and row["perm"] == "012"
    assert row["chosen"] == 2 and row["role"] == "unknown" and bool(row["correct"])
    # By hand: every answer sits once in each position, so mean logprob_k = content[k] + mean(POSITION)
    # - mean over orders of log Z_s, with Z_s = sum_j exp(POSITION[j] + content[perm_s[j]]).
    log_z = [math.log(sum(math.exp(POSITION[j] + content[answer_order(s)[j]]) for j in range(3))) for s in (0, 1, 2)]
    for k in range(3):
        assert row[f"logprob_{k}"] == pytest.approx(content[k] + POSITION.mean() - np.mean(log_z), abs=1e-12)


def test_items_without_all_three_cyclic_orders_are_counted_not_guessed():
    a, b = _item(1), _item(2)
    strict = pd.concat([_strict("dense", np.zeros(3), seeds=(0, 1, 2), items=[a]),
                        _strict("dense", np.zeros(3), seeds=(0, 1, 3, 4), items=[b])], ignore_index=True)
    derived, missing = debiased_records(strict)
    assert list(derived["item_id"]) == ["Age/1"] and missing == 1
    _, notes = with_derived_protocols(strict, (STRICT, DEBIASED))
    assert any("1 (variant, runtime, item) lack one of the cyclic answer orders" in n for n in notes)


def test_protocols_are_separate_analyses():
    dense = _strict("dense", np.array([0.0, 0.0, 1.0]))  # content: unknown
    variant = _strict("wanda@0.5", np.array([1.5, 0.0, 0.0]))  # content: the stereotype
    records, _ = with_derived_protocols(pd.concat([dense, variant], ignore_index=True), (STRICT, DEBIASED))
    assert set(records["protocol"]) == {STRICT, DEBIASED}
    table = protocol_table(records).set_index(["protocol", "variant"])
    # Strict: the position decides, both models answer 0, 1, 2 under seeds 0, 1, 2: nothing flips
    # (2 reference pairs without the stereotype, seeds 1 and 2).
    assert table.loc[(STRICT, "wanda@0.5"), "n_ref_unbiased"] == 2
    assert table.loc[(STRICT, "wanda@0.5"), "flip_rate"] == 0.0
    assert table.loc[(STRICT, "dense"), "srs"] == pytest.approx(1 / 3)
    # Debiased: the content decides, dense says unknown and the variant the stereotype: one flip of one.
    assert table.loc[(DEBIASED, "wanda@0.5"), "flip_rate"] == 1.0
    assert table.loc[(DEBIASED, "wanda@0.5"), "srs"] == 1.0 and table.loc[(DEBIASED, "dense"), "srs"] == 0.0
    assert len(select_protocol(records, DEBIASED)) == 2 and len(select_protocol(records, STRICT)) == 6
    with pytest.raises(AuditorError, match="unknown scoring protocol 'fair'"):
        select_protocol(records, "fair")
