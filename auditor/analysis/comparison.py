"""The comparison table: each compressed variant against the dense reference on ambiguous items.
Statistics over item records: significance, effect sizes, confidence intervals, dose-response.

Pure functions of numpy arrays and pandas frames (no model, no torch), so every
figure can be recomputed from a run's records. Conventions:

- A pair is one (seed, item_id) answered by the reference and by the variant
  (``auditor.analysis.metrics.paired_outcomes``); "biased" means the stereotype-consistent
  answer. b = n(unbiased -> biased), c = n(biased -> unbiased).
- Only ambiguous items enter the comparison table: there "unknown" is correct and
  a stereotype-consistent answer is pure stereotype reliance (SRS).
- Empty sets give NaN, never 0.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from auditor.analysis.baselines import (
    BASELINE_VARIANTS,
    REFERENCE_BACKEND,
    RUNTIME_BASELINE,
    SEED_BASELINE,
    baseline_flip_rate,
    null_baselines,
)
from auditor.analysis.inference import adjust, bootstrap_totals, cohens_h, mcnemar_exact, percentile_ci
from auditor.analysis.metrics import NAN, paired_outcomes, transitions
from auditor.core.names import DENSE

log = logging.getLogger(__name__)


AMBIG = "ambig"
# Per-item count columns used by the comparison table's bootstrap.
_N, _REF_B, _VAR_B, _UB = range(4)


def _flip_rate_stat(t: np.ndarray) -> np.ndarray:
    """flip_rate = n_ub / n(reference unbiased) on bootstrap totals."""
    return t[:, _UB] / (t[:, _N] - t[:, _REF_B])


def _srs_change_stat(t: np.ndarray) -> np.ndarray:
    """srs_var - srs_ref = (n_var_biased - n_ref_biased) / n_pairs on bootstrap totals."""
    return (t[:, _VAR_B] - t[:, _REF_B]) / t[:, _N]


def _per_item_counts(merged: pd.DataFrame) -> pd.DataFrame:
    """Per item: n pairs, reference-biased, variant-biased, unbiased -> biased (summed over seeds)."""
    m = merged.assign(ub=~merged["ref_biased"] & merged["var_biased"])
    return m.groupby(["item_id", "category"], sort=True).agg(
        n=("seed", "size"), ref_b=("ref_biased", "sum"), var_b=("var_biased", "sum"), ub=("ub", "sum"),
    ).reset_index()


# --- which variant is compared with which reference ---------------------------------------------------

def compared_units(records: pd.DataFrame, reference: str = DENSE) -> list[tuple[str, str, str]]:
    """(variant, backend, reference_backend) for every compressed variant in the records.

    The reference is scored on the same backend when it was, else on torch
    (``REFERENCE_BACKEND``): a llama.cpp-served GGUF variant is compared with the
    dense torch model, and the runtime null baseline shows how much of that is
    runtime noise. Null-baseline variants (``BASELINE_VARIANTS``) are not compared.
    Variants with no reference on either backend are skipped (logged).
    """
    present = set(map(tuple, records[["variant", "backend"]].drop_duplicates().itertuples(index=False)))
    units = []
    for variant, backend in sorted(present):
        if variant == reference or variant in BASELINE_VARIANTS:
            continue
        if (reference, backend) in present:
            units.append((variant, backend, backend))
        elif (reference, REFERENCE_BACKEND) in present:
            units.append((variant, backend, REFERENCE_BACKEND))
        else:
            log.info("no %r records on %r or %r: %s not compared", reference, backend, REFERENCE_BACKEND, variant)
    return units


# --- the comparison table ---------------------------------------------------------------------------

COMPARISON_COLUMNS = [
    "variant", "backend", "reference_backend", "category", "n_items", "n_pairs", "n_ref_unbiased",
    "b", "c", "flip_rate", "flip_rate_ci_low", "flip_rate_ci_high", "reverse_rate",
    "mcnemar_p", "p_holm", "q_bh", "srs_ref", "srs_var", "srs_change", "srs_change_ci_low",
    "srs_change_ci_high", "cohens_h", "null_seed_flip_rate", "null_runtime_flip_rate",
]


def comparison_table(
    records: pd.DataFrame,
    reference: str = DENSE,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (variant, backend, category incl. "all") on AMBIGUOUS items, paired with the reference.

    Columns: n_items, n_pairs ((seed, item) pairs), n_ref_unbiased; b = n(unbiased
    -> biased), c = n(biased -> unbiased); flip_rate = b / n_ref_unbiased with a
    percentile bootstrap CI over items; reverse_rate = c / n_ref_biased;
    mcnemar_p (exact, on b and c); p_holm and q_bh adjusted over the WHOLE grid
    (every row of this table, "all" rows included); srs_ref and srs_var (share
    of pairs answered with the stereotype, on the same pairs) and srs_change =
    srs_var - srs_ref (absolute, with a bootstrap CI over items); cohens_h =
    h(srs_var, srs_ref); the null baselines' flip rates for the same category
    (``auditor.analysis.baselines``). McNemar treats pairs as independent; with several
    seeds an item contributes correlated pairs, which the item bootstrap CIs
    account for and the p-values do not. Empty table (with the columns) when
    there is nothing to compare.
    """
    amb = records[records["condition"] == AMBIG]
    baselines = null_baselines(records, reference, AMBIG)
    rows: list[dict] = []
    for variant, backend, ref_backend in compared_units(amb, reference):
        ref = amb[(amb["variant"] == reference) & (amb["backend"] == ref_backend)]
        var = amb[(amb["variant"] == variant) & (amb["backend"] == backend)]
        t = transitions(ref, var)
        if not len(t):
            log.info("%s on %s shares no ambiguous items with the reference", variant, backend)
            continue
        per_item = _per_item_counts(paired_outcomes(ref, var))
        for _, tr in t[t["condition"] == AMBIG].iterrows():
            cat = tr["category"]
            items = per_item if cat == "all" else per_item[per_item["category"] == cat]
            counts = items[["n", "ref_b", "var_b", "ub"]].to_numpy(dtype=float)
            n_pairs, b, c = int(tr["n_pairs"]), int(tr["unbiased_to_biased"]), int(tr["biased_to_unbiased"])
            srs_ref = tr["n_ref_biased"] / n_pairs if n_pairs else NAN
            srs_var = (tr["n_ref_biased"] - c + b) / n_pairs if n_pairs else NAN
            flip_ci = srs_ci = (NAN, NAN)
            if len(counts):  # one set of resamples for both intervals
                totals = bootstrap_totals(counts, n_boot=n_boot, seed=seed)
                with np.errstate(divide="ignore", invalid="ignore"):
                    flip_ci = percentile_ci(_flip_rate_stat(totals), level)
                    srs_ci = percentile_ci(_srs_change_stat(totals), level)
            rows.append({
                "variant": variant, "backend": backend, "reference_backend": ref_backend, "category": cat,
                "n_items": len(items), "n_pairs": n_pairs, "n_ref_unbiased": int(tr["n_ref_unbiased"]),
                "b": b, "c": c, "flip_rate": tr["flip_rate"],
                "flip_rate_ci_low": flip_ci[0], "flip_rate_ci_high": flip_ci[1],
                "reverse_rate": tr["reverse_rate"],
                "mcnemar_p": mcnemar_exact(b, c) if n_pairs else NAN,
                "srs_ref": srs_ref, "srs_var": srs_var, "srs_change": srs_var - srs_ref,
                "srs_change_ci_low": srs_ci[0], "srs_change_ci_high": srs_ci[1],
                "cohens_h": cohens_h(srs_var, srs_ref),
                "null_seed_flip_rate": baseline_flip_rate(baselines, SEED_BASELINE, cat, ref_backend),
                "null_runtime_flip_rate": baseline_flip_rate(baselines, RUNTIME_BASELINE, cat),
            })
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(table):
        table["p_holm"] = adjust(table["mcnemar_p"].to_numpy(dtype=float), "holm")
        table["q_bh"] = adjust(table["mcnemar_p"].to_numpy(dtype=float), "fdr_bh")
    return table


# --- dose-response ------------------------------------------------------------------------------------
