"""Free-text answers matched to options: records, majority vote, parse failures, agreement with letters."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from auditor.analysis.generative import (ROLE_UNPARSED, generation_table, score_text_protocol, text_records, unparsed,
                                         vote)
from auditor.analysis.predictions import match_prediction
from auditor.analysis.protocols import protocol_table, select_protocol
from auditor.data.bbq import select_items
from auditor.data.prompt_format import choose_format
from auditor.data.records import COLUMNS, tie_break
from auditor.scoring.backends.torch_backend import TorchBackend
from auditor.scoring.generative import GenerationSettings, Generations, build_text_prompts
from tests.conftest import SAMPLE_BBQ, make_tiny_llama


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer):
    items = list(select_items([SAMPLE_BBQ], n=4, seed=2).items)
    return build_text_prompts(choose_format(True).wrap(smollm2_tokenizer), items, (0,))


def test_vote_takes_the_majority_and_breaks_ties_by_the_hashed_rule():
    assert vote([1, 1, 2, None, 0], "k") == 1
    assert vote([None, None], "k") is None and vote([], "k") is None
    assert vote([2, 0, None], "sampled/0/Age/1") == tie_break([1, 0, 1], "sampled/0/Age/1")
    assert vote([2, 0], "sampled/0/Age/1") in (0, 2)


def test_text_records_match_by_the_authors_rules(prompts):
    p = prompts[0]
    item = p.item
    k_unknown, k_other = item.unknown_index, next(k for k in range(3) if k not in (item.unknown_index,))
    texts = ((item.answers[k_other].upper() + ".",), ("no idea",), (item.answers[k_unknown], "xyz", "xyz"),
             ("xyz", "", "abc"))
    gens = Generations(tuple([p] * 4), texts, 0.0)
    rec = text_records("dense", "torch", "sampled", gens)
    assert list(rec.columns[:len(COLUMNS)]) == list(COLUMNS)
    # exact match ignoring case and a final period; nothing; majority of one match among three; no match at all
    assert list(rec["chosen"]) == [k_other, -1, k_unknown, -1]
    assert list(rec["n_parsed"]) == [1, 0, 1, 0] and list(rec["n_samples"]) == [1, 1, 3, 3]
    assert list(rec["role"])[1] == ROLE_UNPARSED and list(rec["role"])[2] == "unknown"
    assert not rec["correct"].iloc[1] and rec[["logprob_0", "logprob_1", "logprob_2"]].isna().all().all()
    assert json.loads(rec["texts"].iloc[2]) == list(texts[2])
    assert list(unparsed(rec)) == [False, True, False, True]


def test_a_random_model_mostly_fails_to_parse_and_every_failure_is_counted(smollm2_tokenizer, prompts):
    backend = TorchBackend(make_tiny_llama(seed=3), pad_id=2)
    settings = GenerationSettings(max_new_tokens=6, samples=2, temperature=1.0)
    frames = []
    for protocol in ("generative", "sampled"):
        rec, figures = score_text_protocol(backend, smollm2_tokenizer, prompts, "dense", protocol, settings)
        # The count is the records none of whose texts matched an option, recomputed here with the matcher.
        by_item = {p.item.item_id: p.item for p in prompts}
        no_match = sum(all(match_prediction(by_item[i], t) is None for t in json.loads(texts))
                       for i, texts in zip(rec["item_id"], rec["texts"]))
        assert figures[f"{protocol}_unparsed"] == no_match == int((rec["chosen"] < 0).sum())
        assert no_match >= len(prompts) // 2  # random text rarely names an option
        assert set(rec["prompt_format"]) == {"bbq-text-v1"}
        frames.append(rec)
    table = generation_table(pd.concat(frames, ignore_index=True))
    assert list(table["protocol"]) == ["generative", "sampled"]
    assert list(table["n_unparsed"]) == [int((f["chosen"] < 0).sum()) for f in frames]
    assert list(table["n_records"]) == [len(prompts)] * 2


def _rows(protocol, variant, chosen, seed=0):
    return pd.DataFrame({"protocol": protocol, "variant": variant, "backend": "torch", "seed": seed,
                         "item_id": [f"Age/{i}" for i in range(len(chosen))], "chosen": chosen,
                         "condition": "ambig", "role": ["unparsed" if c < 0 else "other" for c in chosen],
                         "correct": False, "label": 0, "stereotype_index": 1, "unknown_index": 2})


def test_generation_table_agreement_on_items_valid_in_both():
    records = pd.concat([_rows("strict", "dense", [0, 1, 2, 0, 1]), _rows("generative", "dense", [0, 2, 2, -1, -1]),
                         _rows("strict", "v", [0, 0, 0, 0, 0]), _rows("sampled", "v", [-1, -1, -1, -1, -1])],
                        ignore_index=True)
    table = generation_table(records).set_index(["protocol", "variant"])
    dense = table.loc[("generative", "dense")]
    # 3 parsed prompts compared with the letters: 2 agree (Age/0, Age/2), Age/1 differs.
    assert (dense["n_records"], dense["n_unparsed"], dense["n_compared"]) == (5, 2, 3)
    assert dense["unparsed_rate"] == pytest.approx(0.4) and dense["agreement"] == pytest.approx(2 / 3)
    v = table.loc[("sampled", "v")]
    assert v["n_unparsed"] == 5 and v["n_compared"] == 0 and np.isnan(v["agreement"])
    # Metrics leave unparsed answers out: the protocol's rows are the parsed ones only.
    assert list(select_protocol(records, "generative")["chosen"]) == [0, 2, 2]
    assert select_protocol(records, "sampled").empty and len(select_protocol(records, "strict")) == 10
    assert set(protocol_table(records)["protocol"]) == {"strict", "generative"}
    assert generation_table(records[records["protocol"] == "strict"]).empty

