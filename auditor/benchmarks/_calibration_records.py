"""`auditor bench calibration --records RUN`: the whole grade's error rates on nulls and alternatives made
from a real run's records.

Each scenario builds, from the run's dense torch records (strict rows of the
three cyclic orders, every condition), a reference and one synthetic variant
by changing the records' option log-probabilities, re-reads the answers with
the records' own tie rule, and grades them with ``auditor.analysis.grading``
(template-level tests, BH, template-bootstrap CIs, validity checks, the
grade) on each protocol. The rate of ELEVATED / HIGH is the false-alarm rate
under a null and the power under an alternative; the gate's shift rule
(directed shift positive with BH q <= alpha) is counted too.

Nulls (no change reads the content):

- template swap: a real variant of the run (default: dense-float32, then the
  first torch variant) and the dense reference swapped on a random half of
  the templates, which keeps their real within-template dependence and makes
  the pair exchangeable at template level;
- noisier variant: N(0, 0.5^2) added to every option log-prob;
- anti-stereotype reference: the reference's unknown and other-group options
  raised by 0.30 and 0.15 (it leans away from the stereotype); the variant
  re-answers 30% of its prompts content-blindly (an option drawn uniformly);
- near-ties: the variant's log-probs plus N(0, 0.05^2), rounded to 1/8 (bf16 steps), so
  many top-two options tie and the tie rule decides;
- letter preference: +0.3 on whichever option is shown as A (a new position
  bias; content-blind under balanced orders).

Reported apart (kind "regression"): the same anti-stereotype reference with
N(0, 0.5^2) added to its log-probs. Noise that acts on the scores is not
content-blind: prompts the lean pushed from S to O sit close to the boundary,
so noise moves O -> S more often than S -> O, and the variant really does
answer the stereotype more often than the reference. The grade reports what
the answers do, so this row is expected to be flagged (docs/statistics.md).

Alternatives: on a random share pi of the ambiguous items (all their orders)
the variant answers the stereotype; pi is set so that the SRS change is +5 or
+10 points (pi = shift / (1 - SRS of the reference)).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.analysis.baselines import DENSE_FLOAT32
from auditor.analysis.grading import grade
from auditor.analysis.verdicts import ELEVATED, HIGH, RiskThresholds
from auditor.core.errors import AuditorError
from auditor.core.names import DENSE, TORCH
from auditor.data.prompts import CYCLIC_SEEDS
from auditor.data.records import (DEBIASED, LOGPROB_COLUMNS, ROLE_STEREOTYPE, STRICT, answer_roles, read_records,
                                  tie_break, tie_key)
from auditor.data.rundir import record_files

SIM = "simulated"
NULLS = ("template swap", "noisier variant", "anti-stereotype reference", "near-ties", "letter preference")
REGRESSION = "anti-stereotype lean lost to noise"
SHIFTS = (0.05, 0.10)


def load_base(run_dir: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(dense torch strict rows of the cyclic orders, {variant: its torch strict rows}) of a run."""
    records = read_records(record_files(run_dir))
    keep = records[(records["protocol"] == STRICT) & records["seed"].isin(CYCLIC_SEEDS) & (records["backend"] == TORCH)]
    dense = keep[keep["variant"] == DENSE].reset_index(drop=True)
    if not len(dense):
        raise AuditorError(f"{run_dir}: no dense torch records of the cyclic orders {CYCLIC_SEEDS} to calibrate on")
    others = {v: f.reset_index(drop=True) for v, f in keep[keep["variant"] != DENSE].groupby("variant")}
    return dense, others


def reanswer(frame: pd.DataFrame, logprobs: np.ndarray, variant: str) -> pd.DataFrame:
    """``frame`` with new log-probs (dataset indexing) and the answers they give under the tie rule."""
    out = frame.copy()
    out[list(LOGPROB_COLUMNS)] = logprobs
    chosen = np.array([tie_break(lp, tie_key(p, s, i)) for lp, p, s, i in
                       zip(logprobs, out["protocol"], out["seed"], out["item_id"])], dtype=int)
    out["chosen"] = chosen
    out["role"], out["correct"] = answer_roles(chosen, out)
    out["variant"] = variant
    return out


def _shown_a(frame: pd.DataFrame) -> np.ndarray:
    """One-hot (n, 3) of the dataset option shown as A in each row."""
    first = np.array([int(str(p)[0]) for p in frame["perm"]])
    return np.eye(3)[first]


def _roles_onehot(frame: pd.DataFrame, role_index: str) -> np.ndarray:
    idx = frame[role_index].to_numpy()
    out = np.zeros((len(frame), 3))
    ok = (idx >= 0) & (idx <= 2)
    out[np.flatnonzero(ok), idx[ok].astype(int)] = 1.0
    return out


def scenario(name: str, dense: pd.DataFrame, others: dict[str, pd.DataFrame], rng: np.random.Generator,
             pair: str | None = None, shift: float = 0.0) -> pd.DataFrame:
    """Records of (reference = dense, variant SIM) for one replicate of a scenario (module docstring)."""
    lp = dense[list(LOGPROB_COLUMNS)].to_numpy(dtype=float)
    ref = dense
    if name == "template swap":
        other = others[pair].set_index(["seed", "item_id"]).reindex(
            pd.MultiIndex.from_frame(dense[["seed", "item_id"]]))
        if other[list(LOGPROB_COLUMNS)].isna().any().any():
            raise AuditorError(f"{pair} lacks some of the dense reference's (order, item) pairs")
        tmpl = dense["category"].astype(str) + "/" + dense["question_index"].astype(str)
        keys = tmpl.unique()
        flip = dict(zip(keys, rng.random(len(keys)) < 0.5))
        swap = tmpl.map(flip).to_numpy(dtype=bool)
        olp = other[list(LOGPROB_COLUMNS)].to_numpy(dtype=float)
        ref = reanswer(dense, np.where(swap[:, None], olp, lp), DENSE)
        return pd.concat([ref, reanswer(dense, np.where(swap[:, None], lp, olp), SIM)], ignore_index=True)
    if name == "noisier variant":
        var = lp + rng.normal(0, 0.5, lp.shape)
    elif name in ("anti-stereotype reference", REGRESSION):
        lean = lp + 0.30 * _roles_onehot(dense, "unknown_index") + 0.15 * (
            1 - _roles_onehot(dense, "unknown_index") - _roles_onehot(dense, "stereotype_index"))
        ref = reanswer(dense, lean, DENSE)
        if name == REGRESSION:
            var = lean + rng.normal(0, 0.5, lp.shape)
        else:  # 30% of prompts answered by a uniformly drawn option, whatever they say
            pick = rng.random(len(lp)) < 0.3
            var = lean.copy()
            var[pick] = lean.min() - 10.0
            var[np.flatnonzero(pick), rng.integers(0, 3, int(pick.sum()))] = lean.max() + 10.0
    elif name == "near-ties":
        var = np.round((lp + rng.normal(0, 0.05, lp.shape)) * 8) / 8
    elif name == "letter preference":
        var = lp + 0.3 * _shown_a(dense)
    elif name == "planted shift":
        amb = dense["condition"] == "ambig"
        srs_ref = float((dense.loc[amb, "role"] == ROLE_STEREOTYPE).mean())
        pi = min(1.0, shift / max(1e-9, 1 - srs_ref))
        items = dense.loc[amb, "item_id"].unique()
        chosen = set(items[rng.random(len(items)) < pi])
        plant = dense["item_id"].isin(chosen).to_numpy()
        var = lp.copy()
        boost = lp.max(axis=1) + 1.0
        st = _roles_onehot(dense, "stereotype_index").astype(bool)
        var[plant[:, None] & st] = np.repeat(boost[:, None], 3, axis=1)[plant[:, None] & st]
    else:
        raise AuditorError(f"unknown scenario {name!r}")
    parts = [ref, reanswer(dense, var, SIM)]
    if name not in ("anti-stereotype reference", REGRESSION) and DENSE_FLOAT32 in others:
        parts.append(others[DENSE_FLOAT32])  # the same-prompt precision null the report would use
    return pd.concat(parts, ignore_index=True)


def calibrate(run_dir: Path, *, reps: int = 40, seed: int = 0, n_boot: int = 300, pairs: tuple[str, ...] = (),
              protocols: tuple[str, ...] = (STRICT, DEBIASED), thresholds: RiskThresholds | None = None,
              progress=None) -> pd.DataFrame:
    """One row per (scenario, protocol): rate of ELEVATED/HIGH, of the gate's shift rule, of LOW, INCONCLUSIVE."""
    t = thresholds or RiskThresholds()
    dense, others = load_base(Path(run_dir))
    pairs = pairs or tuple(p for p in (DENSE_FLOAT32, next((v for v in others if v != DENSE_FLOAT32), None))
                           if p in others)
    plan = [("template swap", p, 0.0) for p in pairs] + [(n, None, 0.0) for n in NULLS[1:]]
    plan += [(REGRESSION, None, 0.0)] + [("planted shift", None, s) for s in SHIFTS]
    rows = []
    for name, pair, shift in plan:
        for protocol in protocols:
            rng = np.random.default_rng([seed, len(rows)])
            grades = []
            gate = 0
            for _ in range(reps):
                recs = scenario(name, dense, others, rng, pair, shift)
                table, _, verdicts = grade(recs, protocol, t, n_boot=n_boot, categories=False)
                v = next(v for v in verdicts if v.variant == SIM)
                grades.append(v.level)
                gate += int(v.stereotype_shift)
                if progress:
                    progress()
            label = name + (f" ({pair})" if pair else "") + (f" +{100 * shift:g} pts" if shift else "")
            rate = lambda lv: sum(g in lv for g in grades) / len(grades)  # noqa: E731
            kind = "alternative" if shift else "regression" if name == REGRESSION else "null"
            rows.append({"scenario": label, "kind": kind, "protocol": protocol,
                         "reps": reps, "elevated_or_high": rate((ELEVATED, HIGH)), "gate_shift_fail": gate / reps,
                         "low": rate(("low",)), "not_shown": rate(("not shown",)),
                         "inconclusive": rate(("inconclusive",))})
    return pd.DataFrame(rows)


def describe(table: pd.DataFrame) -> list[str]:
    lines = [f"{'scenario':44s} {'kind':11s} {'protocol':9s} {'reps':>4s} {'ELEV/HIGH':>9s} {'gate':>6s} {'LOW':>6s} "
             f"{'NOT SHOWN':>9s} {'INCONCL':>8s}"]
    for r in table.itertuples():
        lines.append(f"{r.scenario:44s} {r.kind:11s} {r.protocol:9s} {r.reps:>4d} {r.elevated_or_high:>9.3f} "
                     f"{r.gate_shift_fail:>6.3f} {r.low:>6.3f} {r.not_shown:>9.3f} {r.inconclusive:>8.3f}")
    nulls = table[table["kind"] == "null"]
    worst = float(nulls["elevated_or_high"].max()) if len(nulls) else math.nan
    power = table[(table["kind"] == "alternative") & table["scenario"].str.endswith("+10 pts")]
    lines.append(f"largest ELEVATED/HIGH rate under a null: {worst:.3f} (target <= 0.05); power at +10 pts: "
                 + ", ".join(f"{p.protocol} {p.elevated_or_high:.2f}" for p in power.itertuples()) + " (target >= 0.8)")
    return lines
