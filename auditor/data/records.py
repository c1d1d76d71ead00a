"""Item-level records: one row per (variant, backend, protocol, seed, item), stored as Parquet.

Every metric, statistic, report figure and TUI view is computed from these rows.
Answers are in dataset indexing (ans0..ans2), whatever order they were shown in.
``question_index`` (BBQ's template number within a category) clusters items for
the template-level bootstrap; runs written before it was recorded read as one
template per item (``auditor.analysis.item_inference.templates``).

`protocol` names how the answer was read (PROTOCOLS): "strict" = argmax of the
option letters under one answer order; "debiased" = rows derived from the strict
rows of the cyclic orders (auditor.analysis.protocols); "cloze" = the
lm-evaluation-harness continuation protocol (auditor.data.cloze); "generative"
and "sampled" = a free-text answer (greedy, or the majority of sampled ones)
matched to an option (auditor.analysis.generative). Protocols are separate
analyses: never pool rows of two protocols.

Exact ties. Letter log-probs computed in bfloat16 move in steps of 1/8, so two
options can score exactly the same; argmax then picked the lowest dataset
index, which made "ans0" a hidden default. The scored position is now computed
in float32 (``auditor.scoring.backends.torch_backend``), and wherever two
top options still tie exactly (older records, the debiased mean of three
orders) the tie is broken by `tie_break`: a choice among the tied options drawn
uniformly by a hash of (protocol, seed, item_id), the same for every variant, so
it is reproducible, favours no index or letter, and equal evidence gets the same
answer in the reference and the variant. The cloze protocol keeps the
harness's rule (the earlier choice) for comparability with its numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import hashlib

import numpy as np
import pandas as pd

from auditor.core.files import atomic_path
from auditor.data.bbq import BBQItem

ROLE_STEREOTYPE = "stereotype"
ROLE_OTHER = "other"
ROLE_UNKNOWN = "unknown"

STRICT, DEBIASED, CLOZE = "strict", "debiased", "cloze"
GENERATIVE, SAMPLED = "generative", "sampled"  # free-text answers (auditor.analysis.generative)
PROTOCOLS = (STRICT, DEBIASED, CLOZE, GENERATIVE, SAMPLED)

COLUMNS = (
    "variant", "backend", "protocol", "seed", "item_id", "category", "example_id", "question_index", "condition",
    "polarity", "perm", "chosen", "role", "correct", "label", "stereotype_index", "unknown_index",
    "logprob_0", "logprob_1", "logprob_2",
)


LOGPROB_COLUMNS = ("logprob_0", "logprob_1", "logprob_2")


def tie_break(logprobs: Sequence[float], key: str) -> int:
    """The argmax of ``logprobs``; among exact ties, the option drawn by a hash of ``key`` (module docstring)."""
    values = np.asarray(logprobs, dtype=float)
    best = np.flatnonzero(values == np.nanmax(values)) if np.isfinite(values).any() else np.arange(len(values))
    if len(best) == 1:
        return int(best[0])
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int(best[int.from_bytes(digest[:8], "big") % len(best)])


def tie_key(protocol: str, seed: int, item_id: str) -> str:
    """The key `tie_break` hashes: one draw per (protocol, seed, item), shared by every variant."""
    return f"{protocol}/{int(seed)}/{item_id}"


def exact_ties(frame: pd.DataFrame) -> np.ndarray:
    """Per row, whether its two best option log-probs are exactly equal (False without log-prob columns)."""
    if not len(frame) or not all(c in frame.columns for c in LOGPROB_COLUMNS):
        return np.zeros(len(frame), dtype=bool)
    lp = np.sort(frame[list(LOGPROB_COLUMNS)].to_numpy(dtype=float), axis=1)
    return np.isfinite(lp[:, 2]) & (lp[:, 2] == lp[:, 1])


def answer_roles(chosen: np.ndarray, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(role, correct) of dataset answers ``chosen`` for the rows of ``frame`` (its unknown/stereotype/label)."""
    role = np.where(chosen == frame["unknown_index"].to_numpy(), ROLE_UNKNOWN,
                    np.where(chosen == frame["stereotype_index"].to_numpy(), ROLE_STEREOTYPE, ROLE_OTHER))
    return role, chosen == frame["label"].to_numpy()


def apply_tie_rule(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose top two log-probs tie exactly re-answered by `tie_break` (strict and debiased rows only).

    Records written before the rule took the lowest dataset index on a tie; this
    reads them as if they had been written with it. Other rows are unchanged.
    """
    if "protocol" not in frame.columns:
        return frame
    tied = exact_ties(frame) & frame["protocol"].isin((STRICT, DEBIASED)).to_numpy()
    if not tied.any():
        return frame
    out = frame.copy()
    sub = out.loc[tied]
    chosen = np.array([tie_break(lp, tie_key(p, s, i)) for lp, p, s, i in zip(
        sub[list(LOGPROB_COLUMNS)].to_numpy(dtype=float), sub["protocol"], sub["seed"], sub["item_id"])])
    role, correct = answer_roles(chosen, sub)
    out.loc[tied, "chosen"] = chosen
    out.loc[tied, "role"] = role
    out.loc[tied, "correct"] = correct
    return out


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
        # cloze keeps the harness's tie rule (the earlier choice); letters use the hashed one
        chosen = (int(np.argmax(data_lp)) if protocol == CLOZE
                  else tie_break(data_lp, tie_key(protocol, seed, item.item_id)))
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
    """Records of every file; rows written before protocols existed are "strict"; exact ties read with
    `apply_tie_rule` (older records took the lowest index)."""
    frames = [pd.read_parquet(p) for p in paths]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    if "protocol" not in out.columns:
        out.insert(min(2, len(out.columns)), "protocol", STRICT)
    return apply_tie_rule(out)
