"""Fidelity to the dense model on the same prompts: same-top-letter share and the 3-letter KL divergence.

llama.cpp users judge a quantized model by its KL divergence from the base model
and the share of positions where both pick the same top token
(``llama-perplexity --kl-divergence``, ggml-org/llama.cpp PR #5076 and #5081).
The records already keep what a cheap analogue needs: each option's log-prob at
the answer position (``logprob_0..2``, dataset indexing). Per (protocol,
variant, backend), paired with the dense reference on (protocol, seed, item_id):

- same_top_share = n(variant's argmax option == dense's) / n_pairs, where the
  argmax option is the records' ``chosen`` answer, the one every other figure
  (roles, flips) uses. Runs scored with bfloat16 logits hold exact ties of the
  top two log-probs, which the backend broke by shown position; a plain argmax
  over logprob_0..2 (dataset order, first index on a tie) then differs on those
  prompts. ``n_tied_pairs`` counts the pairs where either side's top two
  log-probs are exactly equal: the most such a re-reading can move;
- kl_mean = mean over pairs of KL(dense || variant) over the three options, in
  nats (natural log): each side's three log-probs are renormalised to sum to
  one (p_k = exp(lp_k) / sum_j exp(lp_j)), then KL = sum_k p_k (log p_k - log q_k).
  Terms with p_k = 0 add 0; a q_k = 0 under p_k > 0 gives +inf (kept, never hidden).
  kl_median and kl_p99 describe the per-pair distribution, as llama-perplexity does.

This is the distribution over the three letters only, not the full vocabulary:
it says how much the answer distribution moved, not how much the model moved.
Under the "cloze" protocol the three log-probs are the options' continuation
scores, renormalised the same way.

The reference is chosen as ``auditor.analysis.comparison.compared_units`` does:
dense on the variant's own backend when it was scored there, else dense on torch
(a llama.cpp variant against dense torch). Unlike the comparison table, the null
baselines (dense-gguf-f16, dense-float32) get rows too, so the runtime and
precision noise floors show beside the compressed variants. Both conditions
(ambiguous and disambiguated items) count unless ``condition`` is given.

CIs (level, percentile): a one-stage template-cluster bootstrap, i.e. BBQ
templates resampled with replacement (``auditor.analysis.item_inference.templates``),
each drawn template bringing all its pairs; a ratio of resampled totals. Empty
sets give NaN, never 0; an empty records frame gives an empty table with the columns.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from auditor.analysis.baselines import BASELINE_VARIANTS
from auditor.analysis.comparison import compared_units
from auditor.analysis.inference import percentile_ci
from auditor.analysis.item_inference import cluster_bootstrap_totals, templates
from auditor.core.names import DENSE
from auditor.data.records import LOGPROB_COLUMNS, STRICT

log = logging.getLogger(__name__)

LOGPROBS = list(LOGPROB_COLUMNS)
KEYS = ["protocol", "seed", "item_id"]
KIND_VARIANT, KIND_BASELINE = "variant", "baseline"

FIDELITY_COLUMNS = [
    "protocol", "variant", "backend", "reference_backend", "kind", "n_pairs", "n_items", "n_templates",
    "n_tied_pairs", "same_top_share", "same_top_ci_low", "same_top_ci_high", "kl_mean", "kl_ci_low", "kl_ci_high",
    "kl_median", "kl_p99",
]


def log_normalise(logprobs: np.ndarray) -> np.ndarray:
    """Each row of log-probs minus its log-sum-exp: the log of the row's probabilities renormalised to sum to 1."""
    lp = np.asarray(logprobs, dtype=float)
    top = np.max(lp, axis=1, keepdims=True)
    return lp - (top + np.log(np.sum(np.exp(lp - top), axis=1, keepdims=True)))


def letter_kl(ref_logprobs: np.ndarray, var_logprobs: np.ndarray) -> np.ndarray:
    """KL(ref || var) in nats per row of two (n, 3) log-prob arrays, each row renormalised to sum to 1."""
    log_p, log_q = log_normalise(ref_logprobs), log_normalise(var_logprobs)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return terms.sum(axis=1)


def fidelity_units(records: pd.DataFrame, reference: str = DENSE) -> list[tuple[str, str, str]]:
    """(variant, backend, reference_backend) of every non-reference variant, baselines included: the rule of
    ``auditor.analysis.comparison.compared_units``."""
    return compared_units(records, reference, include_baselines=True)


def fidelity_pairs(ref: pd.DataFrame, var: pd.DataFrame) -> pd.DataFrame:
    """Reference and variant rows joined on (protocol, seed, item_id): item_id, template, same_top, kl, tied."""
    left = ref[KEYS + ["chosen"] + LOGPROBS].assign(template=templates(ref).to_numpy())
    pairs = left.merge(var[KEYS + ["chosen"] + LOGPROBS], on=KEYS, suffixes=("_ref", "_var"))
    out = pairs[["item_id", "template"]].copy()
    out["same_top"] = (pairs["chosen_ref"].to_numpy() == pairs["chosen_var"].to_numpy()).astype(float)
    ref_lp, var_lp = pairs[[f"{c}_ref" for c in LOGPROBS]].to_numpy(), pairs[[f"{c}_var" for c in LOGPROBS]].to_numpy()
    out["kl"] = letter_kl(ref_lp, var_lp)
    out["tied"] = _top_tied(ref_lp) | _top_tied(var_lp)
    return out


def _top_tied(logprobs: np.ndarray) -> np.ndarray:
    """Rows whose two largest log-probs are exactly equal."""
    top = np.sort(np.asarray(logprobs, dtype=float), axis=1)
    return top[:, -1] == top[:, -2]


def fidelity_table(records: pd.DataFrame, reference: str = DENSE, *, condition: str | None = None,
                   n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (protocol, variant, backend): same-top share and 3-letter KL against the reference.

    See the module docstring for the formulas, the pairing and the bootstrap.
    ``condition`` ("ambig" or "disambig") restricts the pairs to one condition;
    None counts both. ``kind`` is "baseline" for the null baselines, else "variant".
    """
    if not len(records):
        return pd.DataFrame(columns=FIDELITY_COLUMNS)
    missing = [c for c in ["variant", "backend", "seed", "item_id", "chosen", *LOGPROBS] if c not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {', '.join(missing)}")
    recs = records if "protocol" in records.columns else records.assign(protocol=STRICT)
    if condition is not None:
        recs = recs[recs["condition"] == condition]
    rows = []
    for protocol, sub in recs.groupby("protocol", sort=True):
        for variant, backend, ref_backend in fidelity_units(sub, reference):
            ref = sub[(sub["variant"] == reference) & (sub["backend"] == ref_backend)]
            var = sub[(sub["variant"] == variant) & (sub["backend"] == backend)]
            pairs = fidelity_pairs(ref, var)
            if not len(pairs):
                log.info("%s on %s shares no prompts with the reference (%s)", variant, backend, protocol)
                continue
            rows.append({"protocol": protocol, "variant": variant, "backend": backend,
                         "reference_backend": ref_backend,
                         "kind": KIND_BASELINE if variant in BASELINE_VARIANTS else KIND_VARIANT,
                         **_figures(pairs, n_boot=n_boot, level=level, seed=seed)})
    return pd.DataFrame(rows, columns=FIDELITY_COLUMNS)


def _figures(pairs: pd.DataFrame, *, n_boot: int, level: float, seed: int) -> dict:
    """Point figures and one-stage template-bootstrap CIs of one variant's pairs."""
    per_template = pairs.groupby("template", sort=True).agg(n=("kl", "size"), same=("same_top", "sum"),
                                                            kl=("kl", "sum"))
    matrix = per_template[["n", "same", "kl"]].to_numpy(dtype=float)
    # one "item" per cluster: cluster_bootstrap_totals reduces to resampling templates
    reps = cluster_bootstrap_totals(matrix, per_template.index.to_numpy(), n_boot=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        same_reps, kl_reps = reps[:, 1] / reps[:, 0], reps[:, 2] / reps[:, 0]
    kl = pairs["kl"].to_numpy(dtype=float)
    out = {"n_pairs": len(pairs), "n_items": int(pairs["item_id"].nunique()), "n_templates": len(per_template),
           "n_tied_pairs": int(pairs["tied"].sum()),
           "same_top_share": float(pairs["same_top"].mean()), "kl_mean": float(kl.mean()),
           "kl_median": float(np.median(kl)),
           # an infinite KL is kept; "higher" then avoids interpolating inf - inf into NaN
           "kl_p99": float(np.quantile(kl, 0.99, method="linear" if np.isfinite(kl).all() else "higher"))}
    out["same_top_ci_low"], out["same_top_ci_high"] = percentile_ci(same_reps, level)
    out["kl_ci_low"], out["kl_ci_high"] = percentile_ci(kl_reps, level)
    return out
