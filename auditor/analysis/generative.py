"""The free-text protocols: generated answers matched to options, their records, parse failures and agreement.

Protocols "generative" (greedy) and "sampled" (several draws at a temperature;
`auditor.scoring.generative`) answer each (item, answer order) prompt in text.
Text is matched to an option by the BBQ authors' rules, with the matcher of
`auditor score-predictions` (`auditor.analysis.predictions.match_prediction`).

One record per (variant, backend, protocol, seed, item), as for every
protocol, so pairing with the reference, flips and verdicts work unchanged:

- greedy: the answer the one text matched;
- sampled: the majority answer of the draws that matched (most votes; a tie
  goes to ``auditor.data.records.tie_break``'s hashed draw, the same for every
  variant). Majority rather than one row per draw: the analyses pair one answer
  per (item, order) with the reference's, and the majority of k draws at a low
  temperature is the model's modal free-text answer, the quantity the letter
  argmax estimates. Every draw's text stays in the record (`texts`, JSON).

A prompt none of whose texts matched is UNPARSED: its record keeps the texts,
`chosen` = -1 and role "unparsed". Metrics leave such records out
(`auditor.analysis.protocols.select_protocol`), as `score-predictions` leaves
out unmatched predictions; `generation_table` counts them per variant.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd

from auditor.analysis.predictions import match_prediction
from auditor.data.records import COLUMNS, STRICT, role_of, tie_break, tie_key
from auditor.scoring.generative import GENERATIVE, SAMPLED, TEXT_VERSION, GenerationSettings, Generations, generate

TEXT_PROTOCOLS = (GENERATIVE, SAMPLED)
ROLE_UNPARSED = "unparsed"
TEXT_COLUMNS = ("texts", "n_samples", "n_parsed")  # beside COLUMNS in a free-text protocol's records
GENERATION_COLUMNS = ["protocol", "variant", "backend", "n_records", "n_unparsed", "unparsed_rate", "n_compared",
                      "agreement"]


def text_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    """The free-text protocols among `protocols`, in the order listed (they are scored; debiased is derived)."""
    return tuple(p for p in protocols if p in TEXT_PROTOCOLS)


def vote(choices: Sequence[int | None], key: str) -> int | None:
    """The majority answer among matched choices (None entries did not match); ties by `tie_break(key)`."""
    counts = np.zeros(3)
    for c in choices:
        if c is not None:
            counts[c] += 1
    if not counts.any():
        return None
    return tie_break(counts, key)


def text_records(variant: str, backend: str, protocol: str, generations: Generations) -> pd.DataFrame:
    """One row per prompt of `generations` (module docstring); log-prob columns are NaN (no letter was read)."""
    rows = []
    for prompt, texts in zip(generations.prompts, generations.texts):
        item = prompt.item
        matched = [match_prediction(item, t) for t in texts]
        chosen = vote(matched, tie_key(protocol, prompt.seed, item.item_id))
        rows.append({
            "variant": variant, "backend": backend, "protocol": protocol, "seed": prompt.seed,
            "item_id": item.item_id, "category": item.category, "example_id": item.example_id,
            "question_index": item.question_index, "condition": item.condition, "polarity": item.polarity,
            "perm": "".join(map(str, prompt.perm)), "chosen": -1 if chosen is None else chosen,
            "role": ROLE_UNPARSED if chosen is None else role_of(item, chosen),
            "correct": chosen is not None and chosen == item.label, "label": item.label,
            "stereotype_index": item.stereotype_index, "unknown_index": item.unknown_index,
            "logprob_0": np.nan, "logprob_1": np.nan, "logprob_2": np.nan,
            "texts": json.dumps(list(texts), ensure_ascii=False), "n_samples": len(texts),
            "n_parsed": sum(m is not None for m in matched),
        })
    return pd.DataFrame(rows, columns=[*COLUMNS, *TEXT_COLUMNS])


def score_text_protocol(backend, tokenizer, prompts, variant: str, protocol: str,
                        settings: GenerationSettings) -> tuple[pd.DataFrame, dict]:
    """Generate and match one text protocol for `prompts` (`auditor.scoring.generative.build_text_prompts`):
    its records (prompt_format = TEXT_VERSION) and descriptor figures for the unit."""
    n, temperature = settings.draws(protocol)
    gens = generate(backend, tokenizer, prompts, n=n, temperature=temperature,
                    max_new_tokens=settings.max_new_tokens, seed=settings.seed)
    records = text_records(variant, backend.name, protocol, gens)
    records["prompt_format"] = TEXT_VERSION
    return records, {f"{protocol}_wall_s": gens.wall_s, f"{protocol}_unparsed": int((records["chosen"] < 0).sum())}


def unparsed(records: pd.DataFrame) -> np.ndarray:
    """Which rows are free-text answers that matched no option."""
    if "protocol" not in records.columns:
        return np.zeros(len(records), dtype=bool)
    return (records["protocol"].isin(TEXT_PROTOCOLS) & (records["chosen"] < 0)).to_numpy()


def generation_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per (free-text protocol, variant, backend): parse failures, and agreement with the letter protocol.

    n_unparsed = records whose texts matched no option; agreement = share of the
    (seed, item) prompts answered validly by both protocols where the free-text
    answer equals the strict (letter argmax) answer under the same answer order
    (NaN with no such prompt, e.g. a run without strict records).
    """
    rows = []
    if not len(records) or "protocol" not in records.columns:
        return pd.DataFrame(columns=GENERATION_COLUMNS)
    keys = ["variant", "backend", "seed", "item_id"]
    strict = records.loc[records["protocol"] == STRICT, keys + ["chosen"]]
    for protocol in [p for p in TEXT_PROTOCOLS if (records["protocol"] == p).any()]:
        sub = records[records["protocol"] == protocol]
        for (variant, backend), sel in sub.groupby(["variant", "backend"], sort=True):
            bad = int((sel["chosen"] < 0).sum())
            pairs = sel.loc[sel["chosen"] >= 0, keys + ["chosen"]].merge(strict, on=keys, suffixes=("", "_strict"))
            rows.append({"protocol": protocol, "variant": variant, "backend": backend, "n_records": len(sel),
                         "n_unparsed": bad, "unparsed_rate": bad / len(sel), "n_compared": len(pairs),
                         "agreement": float((pairs["chosen"] == pairs["chosen_strict"]).mean()) if len(pairs)
                         else np.nan})
    return pd.DataFrame(rows, columns=GENERATION_COLUMNS)
