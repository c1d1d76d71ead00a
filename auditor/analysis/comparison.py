"""The comparison table: each compressed variant against the dense reference on ambiguous items.
Statistics over item records: harm measures, template-level tests, confidence intervals.

Pure functions of numpy arrays and pandas frames (no model, no torch), so every
figure can be recomputed from a run's records. Conventions:

- A pair is one (seed, item_id) answered by the reference and by the variant;
  the moves n_XY and the harm measures (directed shift, selective abstention,
  unknown drop) are defined in ``auditor.analysis.direction``.
- Every p-value is template-level (``item_inference.template_sign_flip_pvalue``)
  and every CI a one-stage template bootstrap (``cluster_bootstrap_totals``).
- The flip rate is judged against a SAME-PROMPT null: the runtime baseline
  (dense GGUF F16 in llama.cpp vs dense torch) for llama.cpp variants, the
  precision baseline (dense float32 vs dense in the run's dtype) for torch
  variants. The answer-order sensitivity compares different prompts and is
  context only.
- Only ambiguous items enter the comparison table: there "unknown" is correct and
  a stereotype-consistent answer is pure stereotype reliance (SRS).
- Empty sets give NaN, never 0.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from auditor.analysis.baselines import (BASELINE_VARIANTS, DENSE_FLOAT32, DENSE_GGUF_F16, REFERENCE_BACKEND,
                                        order_pairs)
from auditor.analysis.direction import (
    ABSTENTION,
    COUNT_COLUMNS,
    DIRECTION,
    SELECTIVE,
    SHIFT,
    differences,
    directed_shift,
    item_counts,
    paired,
    selective_abstention,
)
from auditor.analysis.inference import adjust, cohens_h, mcnemar_exact, percentile_ci
from auditor.analysis.item_inference import cluster_bootstrap_totals, template_sign_flip_pvalue, templates
from auditor.analysis.metrics import NAN
from auditor.core.names import DENSE, LLAMA_CPP

log = logging.getLogger(__name__)


AMBIG = "ambig"
#: Names of the same-prompt nulls in ``flip_null_kind``.
RUNTIME_NULL, PRECISION_NULL = "runtime baseline", "precision baseline"


# --- which variant is compared with which reference ---------------------------------------------------

def compared_units(records: pd.DataFrame, reference: str = DENSE, *,
                   include_baselines: bool = False) -> list[tuple[str, str, str]]:
    """(variant, backend, reference_backend) for every compressed variant in the records.

    The reference is scored on the same backend when it was, else on torch
    (``REFERENCE_BACKEND``): a llama.cpp-served GGUF variant is compared with the
    dense torch model, and the runtime null baseline shows how much of that is
    runtime noise. Null-baseline variants (``BASELINE_VARIANTS``) are not compared
    unless ``include_baselines`` (fidelity shows them beside the variants).
    Variants with no reference on either backend are skipped (logged).
    """
    present = set(map(tuple, records[["variant", "backend"]].drop_duplicates().itertuples(index=False)))
    units = []
    for variant, backend in sorted(present):
        if variant == reference or (variant in BASELINE_VARIANTS and not include_baselines):
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
    "variant", "backend", "reference_backend", "category", "n_items", "n_templates", "n_pairs", "n_ref_unbiased",
    "b", "c", "b_anti", "n_us", "n_uo", "n_os", "n_so", "n_su", "n_ou", "ref_u_n", "ref_o_n", "ref_s_n",
    "flip_rate", "flip_rate_ci_low", "flip_rate_ci_high", "reverse_rate",
    "p_shift", "p_holm", "q_bh", "p_direction", "q_direction", "p_selective", "q_selective", "mcnemar_p",
    "srs_ref", "srs_var", "srs_change", "srs_change_ci_low", "srs_change_ci_high", "cohens_h",
    "srs_group_ref", "srs_group_var", "srs_group_change", "srs_group_change_ci_low", "srs_group_change_ci_high",
    "directed_shift", "directed_shift_ci_low", "directed_shift_ci_high", "directed_shift_se",
    "selective_abstention", "selective_abstention_ci_low", "selective_abstention_ci_high", "selective_abstention_se",
    "unknown_ref", "unknown_var", "unknown_change", "unknown_change_ci_low", "unknown_change_ci_high",
    "unknown_drop", "unknown_drop_ci_low", "unknown_drop_ci_high", "unknown_drop_se",
    "p_abstention", "q_abstention",
    "null_seed_flip_rate", "null_runtime_flip_rate", "null_precision_flip_rate", "flip_null", "flip_null_kind",
    "flip_excess", "flip_excess_ci_low", "flip_excess_ci_high", "flip_excess_se", "verdict_family",
]

#: Bootstrapped figures: each gets <name>_ci_low / <name>_ci_high (and the harm measures <name>_se).
_CI_KEYS = ("flip_rate", "srs_change", "srs_group_change", "directed_shift", "selective_abstention",
            "unknown_change", "unknown_drop", "flip_excess")
_SE_KEYS = ("directed_shift", "selective_abstention", "unknown_drop", "flip_excess")

# Column blocks of the per-item matrix the bootstrap resamples: the variant's counts, then the
# same-prompt null's (n, ref_s, b) on the same items.
_NULL_COUNTS = ("n", "ref_s", "b")
_V = {c: i for i, c in enumerate(COUNT_COLUMNS)}
_N = {c: len(COUNT_COLUMNS) + i for i, c in enumerate(_NULL_COUNTS)}


def _rates(t: np.ndarray, with_null: bool) -> dict[str, np.ndarray]:
    """Every bootstrapped figure from (B, k) totals of the per-item matrix (NaN on zero denominators).

    flip = b / (n - ref_s); srs_change = (b - c) / n; srs_group_change = the
    change of S / (S + O) (the stereotype's share of the group answers);
    directed_shift, selective_abstention as ``auditor.analysis.direction``;
    unknown_drop = (ref_u - var_u) / n; flip_null = the same-prompt null's flip
    rate; flip_excess = flip - flip_null (the flip itself when no null was measured).
    """
    col = lambda k: t[:, _V[k]]  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        n = col("n")
        flip = col("b") / (n - col("ref_s"))
        srs = (col("b") - col("c")) / n
        group_ref = col("ref_s") / (col("ref_s") + col("ref_o"))
        group_var = col("var_s") / (col("var_s") + col("var_o"))
        unknown = (col("var_u") - col("ref_u")) / n
        null = (t[:, _N["b"]] / (t[:, _N["n"]] - t[:, _N["ref_s"]]) if with_null else np.full(len(t), NAN))
        shift = directed_shift(n, col("ref_s"), col("ref_o"), col("n_us"), col("n_uo"), col("n_os"), col("n_so"))
        selective = selective_abstention(col("ref_s"), col("ref_o"), col("n_su"), col("n_ou"))
    return {
        "flip_rate": flip, "srs_change": srs, "srs_group_change": group_var - group_ref,
        "directed_shift": shift, "selective_abstention": selective, "unknown_change": unknown,
        "unknown_drop": -unknown, "flip_null": null,
        "flip_excess": np.where(np.isnan(null), flip, flip - null),
    }


def _null_block(counts: pd.DataFrame | None, item_ids: pd.Series) -> np.ndarray:
    """A null's (n, ref_s, b) per item of ``item_ids`` (zeros where it has no pair of that item)."""
    if counts is None or not len(counts):
        return np.zeros((len(item_ids), len(_NULL_COUNTS)))
    keyed = counts.set_index("item_id")[list(_NULL_COUNTS)]
    return keyed.reindex(item_ids.to_numpy()).fillna(0).to_numpy(dtype=float)


def _item_matrix(var_counts: pd.DataFrame, null_counts: pd.DataFrame | None) -> np.ndarray:
    return np.hstack([var_counts[list(COUNT_COLUMNS)].to_numpy(dtype=float),
                      _null_block(null_counts, var_counts["item_id"])])


def _flip(counts: pd.DataFrame | None) -> float:
    if counts is None or not len(counts):
        return NAN
    unbiased = int(counts["n"].sum() - counts["ref_s"].sum())
    return float(counts["b"].sum()) / unbiased if unbiased else NAN


def same_prompt_nulls(amb: pd.DataFrame, reference: str = DENSE) -> dict[str, pd.DataFrame]:
    """Per-item counts of the same-prompt nulls present in the records: {RUNTIME_NULL: ..., PRECISION_NULL: ...}."""
    ref_torch = amb[(amb["variant"] == reference) & (amb["backend"] == REFERENCE_BACKEND)]
    out = {}
    for kind, name, backend in ((RUNTIME_NULL, DENSE_GGUF_F16, LLAMA_CPP),
                                (PRECISION_NULL, DENSE_FLOAT32, REFERENCE_BACKEND)):
        base = amb[(amb["variant"] == name) & (amb["backend"] == backend)]
        if len(base) and len(ref_torch):
            counts = item_counts(paired(ref_torch, base))
            if len(counts):
                out[kind] = counts
    return out


def comparison_table(
    records: pd.DataFrame,
    reference: str = DENSE,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    categories: bool = True,
) -> pd.DataFrame:
    """One row per (variant, backend, category incl. "all"; only "all" when not ``categories``) on AMBIGUOUS
    items, paired with the reference.

    Pairs are (seed, item) answered by both; per-item counts are
    ``auditor.analysis.direction.item_counts``. Point figures: flip_rate =
    b / n_ref_unbiased, reverse_rate = c / n_ref_biased, srs_ref / srs_var and
    srs_change = (b - c) / n_pairs (SRS counts "unknown" in its denominator, so
    it moves with abstention), srs_group_* (the stereotype's share of the group
    answers, which does not), directed_shift, selective_abstention and
    unknown_drop (the harm measures, ``auditor.analysis.direction``), cohens_h.

    Tests (template level, two-sided): p_shift on b - c (context), p_direction
    on the directed shift, p_selective on selective abstention, p_abstention on
    lost - gained "unknown". Multiplicity: the verdict family is the variants'
    "all" rows of one protocol (``verdict_family`` True): q_bh (and p_holm),
    q_direction, q_selective and q_abstention are BH (Holm) over that family;
    the category rows form a separate, exploratory family, adjusted among
    themselves. mcnemar_p is the exact McNemar test on pooled pairs,
    DESCRIPTIVE only (anti-conservative with several orders per item).

    Nulls: flip_null is the same-prompt null of the variant's runtime
    (``same_prompt_nulls``; flip_null_kind names it), NaN when the run lacks it
    (then flip_excess = flip_rate, which can only over-state the risk).
    null_seed_flip_rate (the reference's answer-order sensitivity, different
    prompts) is context and never discounts anything.

    CIs (level, percentile) of every figure in ``_CI_KEYS``, and bootstrap SEs
    of the harm measures, from one one-stage template bootstrap of the
    per-item counts of the variant and its null together, so an excess and its
    null are resampled on the same items. Empty table (with the columns) when
    there is nothing to compare.
    """
    amb = records[records["condition"] == AMBIG]
    rows: list[dict] = []
    seed_flip: dict[str, float] = {}
    nulls = same_prompt_nulls(amb, reference)
    for variant, backend, ref_backend in compared_units(amb, reference):
        ref = amb[(amb["variant"] == reference) & (amb["backend"] == ref_backend)]
        var = amb[(amb["variant"] == variant) & (amb["backend"] == backend)]
        counts = item_counts(paired(ref, var))
        if not len(counts):
            log.info("%s on %s shares no ambiguous items with the reference", variant, backend)
            continue
        if ref_backend not in seed_flip:
            seed_flip[ref_backend] = _flip(item_counts(order_pairs(amb, reference, ref_backend)))
        null_kind = RUNTIME_NULL if backend == LLAMA_CPP else PRECISION_NULL
        null = nulls.get(null_kind)
        parts = list(counts.groupby("category", sort=True)) if categories else []
        for cat, items in parts + [("all", counts)]:
            row = _row(variant, backend, ref_backend, cat, items, null, n_boot=n_boot, level=level, seed=seed)
            row.update(null_seed_flip_rate=seed_flip[ref_backend],
                       null_runtime_flip_rate=_flip(nulls.get(RUNTIME_NULL)),
                       null_precision_flip_rate=_flip(nulls.get(PRECISION_NULL)),
                       flip_null_kind=null_kind if null is not None else "", verdict_family=cat == "all")
            rows.append(row)
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(table):
        for family in (table["verdict_family"].astype(bool), ~table["verdict_family"].astype(bool)):
            if not family.any():
                continue
            sub = table[family]
            table.loc[family, "p_holm"] = adjust(sub["p_shift"].to_numpy(dtype=float), "holm")
            table.loc[family, "q_bh"] = adjust(sub["p_shift"].to_numpy(dtype=float), "fdr_bh")
            for p, q in (("p_direction", "q_direction"), ("p_selective", "q_selective"),
                         ("p_abstention", "q_abstention")):
                table.loc[family, q] = adjust(sub[p].to_numpy(dtype=float), "fdr_bh")
    return table


def _row(variant: str, backend: str, ref_backend: str, category: str, items: pd.DataFrame,
         null_counts: pd.DataFrame | None, *, n_boot: int, level: float, seed: int) -> dict:
    """One comparison row from the per-item counts of one category (see ``comparison_table``)."""
    matrix = _item_matrix(items, null_counts)
    with_null = null_counts is not None
    point = {k: float(v[0]) for k, v in _rates(matrix.sum(axis=0)[None, :], with_null).items()}
    reps = _rates(cluster_bootstrap_totals(matrix, items["template"], n_boot=n_boot, seed=seed), with_null)
    tot = items[list(COUNT_COLUMNS)].sum()
    n, b, c = int(tot["n"]), int(tot["b"]), int(tot["c"])
    n_unb, ref_s = n - int(tot["ref_s"]), int(tot["ref_s"])
    srs_ref, srs_var = ref_s / n, int(tot["var_s"]) / n
    group = lambda s_, o_: s_ / (s_ + o_) if s_ + o_ else NAN  # noqa: E731
    tmpl = items["template"]
    row = {
        "variant": variant, "backend": backend, "reference_backend": ref_backend, "category": category,
        "n_items": len(items), "n_templates": int(tmpl.nunique()), "n_pairs": n,
        "n_ref_unbiased": n_unb, "b": b, "c": c, "b_anti": int(tot["b_anti"]),
        **{k: int(tot[k]) for k in ("n_us", "n_uo", "n_os", "n_so", "n_su", "n_ou")},
        "ref_u_n": int(tot["ref_u"]), "ref_o_n": int(tot["ref_o"]), "ref_s_n": ref_s,
        "reverse_rate": c / ref_s if ref_s else NAN,
        "p_shift": template_sign_flip_pvalue(differences(items, SHIFT), tmpl),
        "p_direction": template_sign_flip_pvalue(differences(items, DIRECTION), tmpl, seed=seed),
        "p_selective": template_sign_flip_pvalue(differences(items, SELECTIVE), tmpl, seed=seed),
        "p_abstention": template_sign_flip_pvalue(differences(items, ABSTENTION), tmpl),
        "mcnemar_p": mcnemar_exact(b, c),
        "srs_ref": srs_ref, "srs_var": srs_var, "cohens_h": cohens_h(srs_var, srs_ref),
        "srs_group_ref": group(ref_s, int(tot["ref_o"])), "srs_group_var": group(int(tot["var_s"]), int(tot["var_o"])),
        "unknown_ref": int(tot["ref_u"]) / n, "unknown_var": int(tot["var_u"]) / n,
    }
    for key, value in point.items():
        row[key] = value
    for key in _CI_KEYS:
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = percentile_ci(reps[key], level)
    for key in _SE_KEYS:
        finite = reps[key][np.isfinite(reps[key])]
        row[f"{key}_se"] = float(np.std(finite, ddof=1)) if len(finite) > 1 else NAN
    return row


# --- accuracy intervals (for the gate's accuracy limits) ----------------------------------------------

ACCURACY_COLUMNS = ["variant", "backend", "accuracy_ci_low", "accuracy_ci_high", "accuracy_drop_ci_low",
                    "accuracy_drop_ci_high"]


def accuracy_intervals(records: pd.DataFrame, reference: str = DENSE, *, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> pd.DataFrame:
    """Per (variant, backend): template-bootstrap CI of its accuracy over all items, and of the paired
    accuracy drop accuracy(reference) - accuracy(variant) on the (seed, item) pairs both answered (the
    reference as in ``compared_units``; NaN for the reference itself and uncompared units)."""
    rows = []
    pairs = {(v, b): rb for v, b, rb in compared_units(records, reference)}
    for (variant, backend), sel in records.groupby(["variant", "backend"], sort=True):
        per = sel.assign(template=templates(sel), n=1.0, ok=sel["correct"].astype(float))
        per = per.groupby(["item_id", "template"], sort=True)[["n", "ok"]].sum().reset_index()
        t = cluster_bootstrap_totals(per[["n", "ok"]].to_numpy(), per["template"], n_boot=n_boot, seed=seed)
        with np.errstate(divide="ignore", invalid="ignore"):
            low, high = percentile_ci(t[:, 1] / t[:, 0], level)
        drop = (NAN, NAN)
        if (variant, backend) in pairs:
            rb = pairs[(variant, backend)]
            ref = records[(records["variant"] == reference) & (records["backend"] == rb)]
            joined = ref[["seed", "item_id", "category", "correct"] + (
                ["question_index"] if "question_index" in ref.columns else [])].merge(
                sel[["seed", "item_id", "correct"]], on=["seed", "item_id"], suffixes=("_ref", "_var"))
            if len(joined):
                joined = joined.assign(template=templates(joined), n=1.0,
                                       d=joined["correct_ref"].astype(float) - joined["correct_var"].astype(float))
                agg = joined.groupby(["item_id", "template"], sort=True)[["n", "d"]].sum().reset_index()
                t = cluster_bootstrap_totals(agg[["n", "d"]].to_numpy(), agg["template"], n_boot=n_boot, seed=seed)
                with np.errstate(divide="ignore", invalid="ignore"):
                    drop = percentile_ci(t[:, 1] / t[:, 0], level)
        rows.append({"variant": variant, "backend": backend, "accuracy_ci_low": low, "accuracy_ci_high": high,
                     "accuracy_drop_ci_low": drop[0], "accuracy_drop_ci_high": drop[1]})
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)
