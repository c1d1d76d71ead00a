"""Position and format diagnostics per variant: does the model answer the content or the letter?

A multiple-choice scorer can be right for the wrong reason. Zheng et al. (ICLR
2024, "Large Language Models Are Not Robust Multiple Choice Selectors") show
that small models prefer option letters regardless of content; SmolLM2-135M
picks the first shown option in ~95% of prompts, and then its SRS is the share
of items whose stereotype answer happens to be shown first. Per (variant,
backend), over its records (``perm[j]`` is the dataset answer shown at position
j, so the shown position of dataset answer k is ``perm.index(k)``):

- top_letter / top_letter_share: the most chosen shown letter and its share of
  all prompts (1/3 for an answerer without position preference under balanced
  orders), with a cluster-bootstrap CI (templates, then items;
  ``auditor.analysis.item_inference``);
- srs_stereotype_A/B/C: SRS on ambiguous prompts split by the stereotype
  option's shown position (a position-driven model has SRS ~ 1 where its
  favourite letter shows the stereotype and ~ 0 elsewhere; a content-driven
  one the same SRS at every position);
- letter_mass: mean over prompts of sum_k exp(logprob_k), the probability the
  model puts on the three option letters at the answer position (the letter
  log-probs are log-softmax over the full vocabulary); low mass means the
  argmax is chosen among tokens the model barely considers;
- disambig_accuracy with its CI: accuracy on disambiguated items, whose chance
  level is 1/3.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.analysis.inference import percentile_ci
from auditor.analysis.item_inference import cluster_bootstrap_totals, templates
from auditor.analysis.metrics import NAN
from auditor.data.records import ROLE_STEREOTYPE

LETTERS = ("A", "B", "C")
POSITION_COLUMNS = [
    "variant", "backend", "n", "top_letter", "top_letter_share", "top_letter_share_ci_low",
    "top_letter_share_ci_high", "share_A", "share_B", "share_C", "srs_stereotype_A", "srs_stereotype_B",
    "srs_stereotype_C", "letter_mass", "n_disambig", "disambig_accuracy", "disambig_accuracy_ci_low",
    "disambig_accuracy_ci_high",
]


def shown_position(perms: pd.Series, answers: pd.Series) -> np.ndarray:
    """Shown position (0 = A) of dataset answer ``answers[i]`` under order ``perms[i]``; -1 when not shown."""
    return np.array([str(p).find(str(int(k))) if pd.notna(k) else -1 for p, k in zip(perms, answers)])


def _item_share_ci(frame: pd.DataFrame, hit: np.ndarray, *, n_boot: int, level: float,
                   seed: int) -> tuple[float, float]:
    """CI of mean(hit) with the item's prompts summed first and templates-then-items resampled."""
    per = pd.DataFrame({"item_id": frame["item_id"].to_numpy(), "template": templates(frame).to_numpy(),
                        "n": 1.0, "hit": hit.astype(float)})
    per = per.groupby(["item_id", "template"], sort=True)[["n", "hit"]].sum().reset_index()
    if not len(per):
        return NAN, NAN
    totals = cluster_bootstrap_totals(per[["n", "hit"]].to_numpy(), per["template"], n_boot=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return percentile_ci(totals[:, 1] / totals[:, 0], level)


def position_row(frame: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """The diagnostics of one (variant, backend)'s records (see the module docstring); NaN on empty sets."""
    chosen_pos = shown_position(frame["perm"], frame["chosen"])
    shares = [float((chosen_pos == j).mean()) if len(frame) else NAN for j in range(3)]
    top = int(np.nanargmax(shares)) if len(frame) else 0
    row = {"n": len(frame), "top_letter": LETTERS[top] if len(frame) else "", "top_letter_share": shares[top]}
    row["top_letter_share_ci_low"], row["top_letter_share_ci_high"] = _item_share_ci(
        frame, chosen_pos == top, n_boot=n_boot, level=level, seed=seed)
    row.update({f"share_{LETTERS[j]}": shares[j] for j in range(3)})
    amb = frame[frame["condition"] == "ambig"]
    st_pos = shown_position(amb["perm"], amb["stereotype_index"])
    biased = (amb["role"] == ROLE_STEREOTYPE).to_numpy()
    for j in range(3):
        sel = st_pos == j
        row[f"srs_stereotype_{LETTERS[j]}"] = float(biased[sel].mean()) if sel.any() else NAN
    lp = [c for c in ("logprob_0", "logprob_1", "logprob_2") if c in frame.columns]
    mass = np.exp(frame[lp].to_numpy(dtype=float)).sum(axis=1) if len(lp) == 3 and len(frame) else np.array([])
    row["letter_mass"] = float(np.nanmean(mass)) if len(mass) and np.isfinite(mass).any() else NAN
    dis = frame[frame["condition"] == "disambig"]
    row["n_disambig"] = len(dis)
    row["disambig_accuracy"] = float(dis["correct"].astype(bool).mean()) if len(dis) else NAN
    row["disambig_accuracy_ci_low"], row["disambig_accuracy_ci_high"] = _item_share_ci(
        dis, dis["correct"].astype(bool).to_numpy(), n_boot=n_boot, level=level, seed=seed)
    return row


def position_table(records: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """``position_row`` for every (variant, backend) in the records; empty (with the columns) when none."""
    rows = [{"variant": v, "backend": b, **position_row(f, n_boot=n_boot, level=level, seed=seed)}
            for (v, b), f in records.groupby(["variant", "backend"], sort=True)]
    return pd.DataFrame(rows, columns=POSITION_COLUMNS)
