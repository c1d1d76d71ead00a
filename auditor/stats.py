"""Statistics over item records: significance, effect sizes, confidence intervals, dose-response.

Pure functions of numpy arrays and pandas frames (no model, no torch), so every
figure can be recomputed from a run's records. Conventions:

- A pair is one (seed, item_id) answered by the reference and by the variant
  (``auditor.metrics.paired_outcomes``); "biased" means the stereotype-consistent
  answer. b = n(unbiased -> biased), c = n(biased -> unbiased).
- Only ambiguous items enter the comparison table: there "unknown" is correct and
  a stereotype-consistent answer is pure stereotype reliance (SRS).
- Empty sets give NaN, never 0.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from auditor.audit import DENSE
from auditor.baselines import (
    BASELINE_VARIANTS, REFERENCE_BACKEND, RUNTIME_BASELINE, SEED_BASELINE, baseline_flip_rate, null_baselines,
)
from auditor.errors import SpecError
from auditor.metrics import NAN, paired_outcomes, transitions
from auditor.records import ROLE_STEREOTYPE

log = logging.getLogger(__name__)

AMBIG = "ambig"
ADJUST_METHODS = ("holm", "fdr_bh")


# --- tests and effect sizes --------------------------------------------------------------------------

def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c.

    Under H0 (no change in P(biased)) b ~ Binomial(b + c, 1/2), so
    p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)) (McNemar 1947;
    exact form as in statsmodels' ``mcnemar(exact=True)``, equal to
    ``scipy.stats.binomtest(b, b + c).pvalue``). No discordant pairs: p = 1
    (the data cannot differ from H0). Negative counts raise ValueError.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, int(b)], [int(c), 0]], exact=True).pvalue)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h between two proportions: h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p2)) (Cohen 1988, sec. 6.2).

    |h| = 0.2 small, 0.5 medium, 0.8 large. Positive when p1 > p2. NaN when
    either proportion is NaN; proportions outside [0, 1] raise ValueError.
    """
    if math.isnan(p1) or math.isnan(p2):
        return NAN
    for p in (p1, p2):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"proportion {p} outside [0, 1]")
    return 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p2))


def adjust(pvalues: Sequence[float] | np.ndarray, method: str) -> np.ndarray:
    """Multiple-comparison adjustment over the whole grid of p-values.

    method "holm" (Holm 1979, family-wise error) or "fdr_bh" (Benjamini and
    Hochberg 1995, false discovery rate; the result is a q-value), via
    ``statsmodels.stats.multitest.multipletests``. NaN p-values (untestable
    cells) are left out of the family and come back as NaN.
    """
    if method not in ADJUST_METHODS:
        raise ValueError(f"unknown adjustment {method!r} (valid: {', '.join(ADJUST_METHODS)})")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, NAN)
    finite = ~np.isnan(p)
    if finite.any():
        from statsmodels.stats.multitest import multipletests

        out[finite] = multipletests(p[finite], method=method)[1]
    return out


def bootstrap_totals(per_item: np.ndarray, *, n_boot: int = 1000, seed: int = 0, chunk: int = 250) -> np.ndarray:
    """(n_boot, k) totals of ``per_item`` rows resampled with replacement (items are the unit).

    Replicate b is sum_i w_bi * per_item[i] with w_b ~ Multinomial(n, 1/n), built
    from n seeded uniform draws of item indices (a weight matrix product, so large
    item sets stay fast). Seeded: the same inputs and seed give the same totals.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    data = np.asarray(per_item, dtype=float)
    n = len(data)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, data.shape[1]))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        weights = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)
        out[start:start + size] = weights @ data
    return out


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(1-level)/2 and (1+level)/2 quantiles of the finite replicates; (NaN, NaN) when none is finite."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return NAN, NAN
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_ci(
    per_item: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of a statistic of per-item totals, resampling ITEMS with replacement.

    ``per_item`` is (n_items, k): one row of counts per item, already summed over
    that item's seeds, so all answer orders of an item move together (the item is
    the unit of resampling; seeds of one item are not independent). Each
    replicate sums the resampled rows to a (k,) total and ``statistic`` maps a
    (B, k) array of totals to (B,) values. The interval is the (1-level)/2 and
    (1+level)/2 quantiles of the finite replicates (Efron and Tibshirani 1993,
    ch. 13); replicates where the statistic is undefined (e.g. a zero denominator)
    are dropped. (NaN, NaN) when there are no items or no finite replicates.
    """
    data = np.asarray(per_item, dtype=float)
    if data.ndim != 2 or not len(data):
        return NAN, NAN
    totals = bootstrap_totals(data, n_boot=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return percentile_ci(statistic(totals), level)


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
    (``auditor.baselines``). McNemar treats pairs as independent; with several
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

@dataclass(frozen=True)
class SpecLevel:
    """Method, family and numeric level of the first step of a variant spec; n_steps of the chain."""

    method: str
    family: str
    level: float | None
    n_steps: int


def spec_level(spec: str) -> SpecLevel:
    """Parse "wanda@0.5" / "rtn@4:g64" / "dense" with the registry's own level parsers.

    Uses ``compressors.registry.REGISTRY`` entries (the parsers ``parse_chain``
    uses) without instantiating compressors, so no torch or runtime module is
    imported. "dense" is method "dense", family "none", level 0. Unknown methods
    raise SpecError (with the registry's message).
    """
    from compressors.registry import REGISTRY, parse_one

    text = spec.strip()
    if text in ("", DENSE):
        return SpecLevel(DENSE, "none", 0.0, 0)
    steps = text.split("+")
    first = steps[0].strip()
    name, at, level_text = first.partition("@")
    entry = REGISTRY.get(name)
    if entry is None:
        parse_one(first)  # raises the registry's SpecError with its "did you mean" hint
        raise SpecError(f"unknown compressor {name!r} in {spec!r}")  # not reached: parse_one raised
    level, _ = entry.parse_level(level_text if at else None, first)
    return SpecLevel(name, entry.family, level, len(steps))


@dataclass(frozen=True)
class DoseResponse:
    """Logistic fit logit P(biased) = intercept + slope * level for one method, clustered by item."""

    method: str
    backend: str
    levels: tuple[float, ...]
    n_obs: int
    n_items: int
    intercept: float
    slope: float
    slope_se: float
    slope_se_naive: float
    slope_ci_low: float
    slope_ci_high: float
    p_value: float
    note: str = ""

    def as_row(self) -> dict:
        row = asdict(self)
        row["levels"] = ",".join(f"{x:g}" for x in self.levels)
        return row


def _level_frame(records: pd.DataFrame, method: str, reference: str) -> tuple[pd.DataFrame, str]:
    """Rows of the method's single-step variants (+ the reference at level 0 for pruning), with a level column."""
    levels: dict[str, float] = {}
    family = ""
    for variant in records["variant"].unique():
        if variant == reference or variant in BASELINE_VARIANTS:
            continue
        try:
            parsed = spec_level(str(variant))
        except SpecError:
            continue  # not a registry spec (e.g. a named export): not part of any method's dose-response
        if parsed.method == method and parsed.n_steps == 1 and parsed.level is not None:
            levels[str(variant)] = float(parsed.level)
            family = parsed.family
    if family == "prune":
        levels[reference] = 0.0  # sparsity 0 is the dense model itself
    frame = records[records["variant"].isin(list(levels))]
    return frame.assign(level=frame["variant"].map(levels).astype(float)), family


def dose_response(
    records: pd.DataFrame,
    method: str,
    *,
    backend: str = REFERENCE_BACKEND,
    reference: str = DENSE,
    condition: str = AMBIG,
) -> DoseResponse:
    """Logistic regression of P(biased) on compression level for one method, item-clustered SEs.

    Observations are the (variant, seed, item) rows of the method's single-step
    variants on ``backend`` (chains such as wanda@0.5+gguf-q4_k_m are left out:
    their quantization step confounds the level), ``condition`` items only; y = 1
    when the answer is stereotype-consistent. Pruning methods include the
    reference at level 0 (sparsity); methods with other levels (rtn: bits) use
    their variants' levels only. The model logit P(y=1) = a + b * level is fit by
    statsmodels GLM (Binomial, logit link); slope_se is the cluster-robust SE with
    item_id as the cluster (every seed and level of an item share its cluster;
    Cameron and Miller 2015), slope_se_naive the model-based SE, the CI and
    p-value are Wald with the clustered SE. NaN fields with a note when there are
    fewer than two levels, no variation in y, or the fit fails.
    """
    sel = records[(records["backend"] == backend) & (records["condition"] == condition)]
    frame, _ = _level_frame(sel, method, reference)
    levels = tuple(sorted(float(x) for x in frame["level"].unique())) if len(frame) else ()
    y = (frame["role"] == ROLE_STEREOTYPE).to_numpy(dtype=float)
    n_items = int(frame["item_id"].nunique()) if len(frame) else 0

    def empty(note: str) -> DoseResponse:
        log.info("dose-response %s on %s: %s", method, backend, note)
        return DoseResponse(method, backend, levels, len(frame), n_items, NAN, NAN, NAN, NAN, NAN, NAN, NAN, note)

    if len(levels) < 2:
        return empty(f"fewer than two levels on {backend!r} ({', '.join(f'{x:g}' for x in levels) or 'none'})")
    if y.min() == y.max():
        return empty("no variation in the outcome (all biased or all unbiased)")
    import statsmodels.api as sm
    from scipy.stats import norm

    x = sm.add_constant(frame["level"].to_numpy(dtype=float))
    groups = pd.factorize(frame["item_id"])[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sm.GLM(y, x, family=sm.families.Binomial())
            clustered = model.fit(cov_type="cluster", cov_kwds={"groups": groups})
            naive = model.fit()
    except (ValueError, np.linalg.LinAlgError) as exc:
        return empty(f"fit failed: {exc}")
    intercept, slope = (float(v) for v in clustered.params)
    se = float(clustered.bse[1])
    z = float(norm.ppf(0.975))
    return DoseResponse(method, backend, levels, len(frame), n_items, intercept, slope, se, float(naive.bse[1]),
                        slope - z * se, slope + z * se, float(clustered.pvalues[1]))


def dose_response_table(records: pd.DataFrame, *, backend: str = REFERENCE_BACKEND,
                        reference: str = DENSE) -> pd.DataFrame:
    """dose_response for every method with at least one numeric-level single-step variant on the backend."""
    methods = set()
    for variant in records.loc[records["backend"] == backend, "variant"].unique():
        try:
            parsed = spec_level(str(variant))
        except SpecError:
            continue
        if parsed.n_steps == 1 and parsed.level is not None and parsed.method != DENSE:
            methods.add(parsed.method)
    rows = [dose_response(records, m, backend=backend, reference=reference).as_row() for m in sorted(methods)]
    columns = list(DoseResponse.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns)


# --- the paradox table --------------------------------------------------------------------------------

PARADOX_COLUMNS = ["variant", "backend", "ppl_ref", "ppl_var", "ppl_change_pct", "srs_ref", "srs_var",
                   "srs_change", "srs_change_pct"]


def _pct_change(new: float, old: float) -> float:
    """100 * (new - old) / old; NaN when old is 0 or either value is NaN."""
    if math.isnan(new) or math.isnan(old) or old == 0:
        return NAN
    return 100.0 * (new - old) / old


def _ppl_frame(ppl: pd.DataFrame | Mapping[str, float]) -> pd.DataFrame:
    if isinstance(ppl, pd.DataFrame):
        if not {"variant", "ppl"} <= set(ppl.columns):
            raise ValueError("perplexity frame needs columns 'variant' and 'ppl' (and optionally 'backend')")
        return ppl
    return pd.DataFrame({"variant": list(ppl), "ppl": [float(v) for v in ppl.values()]})


def _lookup_ppl(ppl: pd.DataFrame, variant: str, backend: str) -> float:
    sel = ppl[ppl["variant"] == variant]
    if "backend" in ppl.columns:
        sel = sel[sel["backend"] == backend]
    return float(sel["ppl"].iloc[0]) if len(sel) else NAN


def paradox_table(metrics: pd.DataFrame, ppl: pd.DataFrame | Mapping[str, float],
                  reference: str = DENSE) -> pd.DataFrame:
    """Perplexity change % vs stereotype-reliance change % per variant (the "paradox" of the studies).

    ``metrics`` is ``auditor.summary.metrics_table`` (its category "all",
    condition "ambig" rows give SRS); ``ppl`` maps variant -> perplexity, or is a
    frame with columns variant, ppl and optionally backend. ppl_change_pct =
    100 (ppl_var - ppl_ref) / ppl_ref; srs_change = srs_var - srs_ref (points)
    and srs_change_pct = 100 (srs_var - srs_ref) / srs_ref. The reference is
    taken on the variant's backend when present, else on torch. NaN where a
    perplexity was not measured or srs_ref is 0.
    """
    ppl_frame = _ppl_frame(ppl)
    sel = metrics[(metrics["category"] == "all") & (metrics["condition"] == AMBIG)]
    srs_of = {(r["variant"], r["backend"]): float(r["srs"]) for _, r in sel.iterrows()}
    rows = []
    for variant, backend, ref_backend in compared_units(sel, reference):
        ppl_ref = _lookup_ppl(ppl_frame, reference, ref_backend)
        ppl_var = _lookup_ppl(ppl_frame, variant, backend)
        srs_ref, srs_var = srs_of[(reference, ref_backend)], srs_of[(variant, backend)]
        rows.append({
            "variant": variant, "backend": backend, "ppl_ref": ppl_ref, "ppl_var": ppl_var,
            "ppl_change_pct": _pct_change(ppl_var, ppl_ref), "srs_ref": srs_ref, "srs_var": srs_var,
            "srs_change": srs_var - srs_ref, "srs_change_pct": _pct_change(srs_var, srs_ref),
        })
    return pd.DataFrame(rows, columns=PARADOX_COLUMNS)
