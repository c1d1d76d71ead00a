"""Effect sizes, multiplicity adjustment, bootstrap intervals and the (descriptive) pooled McNemar test."""
from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np

from auditor.analysis.item_inference import cluster_bootstrap_totals
from auditor.analysis.metrics import NAN

log = logging.getLogger(__name__)


ADJUST_METHODS = ("holm", "fdr_bh")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c.

    Shown as a DESCRIPTIVE column only: on (seed, item) pairs pooled over answer
    orders it treats an item's orders as independent and is anti-conservative
    (``auditor bench calibration``); the verdict uses the item-level
    ``item_inference.sign_flip_pvalue``.

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
    clusters: Sequence | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of a statistic of per-item totals, resampling templates, then ITEMS.

    ``per_item`` is (n_items, k): one row of counts per item, already summed over
    that item's seeds, so all answer orders of an item move together (seeds of
    one item are not independent). ``clusters`` labels each item's template
    (``item_inference.cluster_bootstrap_totals``); None = every item its own
    template, the plain item bootstrap. Each replicate sums the resampled rows to
    a (k,) total and ``statistic`` maps a (B, k) array of totals to (B,) values.
    The interval is the (1-level)/2 and (1+level)/2 quantiles of the finite
    replicates (Efron and Tibshirani 1993, ch. 13); replicates where the
    statistic is undefined (e.g. a zero denominator) are dropped. (NaN, NaN)
    when there are no items or no finite replicates.
    """
    data = np.asarray(per_item, dtype=float)
    if data.ndim != 2 or not len(data):
        return NAN, NAN
    labels = list(range(len(data))) if clusters is None else list(clusters)
    totals = cluster_bootstrap_totals(data, labels, n_boot=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return percentile_ci(statistic(totals), level)

