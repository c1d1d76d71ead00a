"""Template-level inference: answer orders of an item are one unit, the items of a template one cluster.

Several answer orders (seeds) of one BBQ item are not independent observations:
a model that answers an item the same way under every order gives the same
outcome five times. Pooling (seed, item) pairs (McNemar) then counts one piece
of evidence five times and its type-I error at nominal 0.05 climbs to ~0.3.
Items written from one BBQ template share names and wording, so they are not
independent either: an item-level test rejects a true null 6-20% of the time at
nominal 0.05 on real records (docs/statistics.md). Every p-value here therefore
sums each template's items first, and every interval resamples templates:

- ``sign_flip_pvalue``: exact randomisation (sign-flip) test of T = sum_i d_i,
  d_i an integer per-item count difference such as b_i - c_i (Fisher 1935,
  ch. 21; Good 2005, "Permutation, Parametric and Bootstrap Tests of
  Hypotheses", sec. 3.1). Under H0 the reference's and the variant's answers
  to an item are exchangeable, so each d_i is symmetric about 0 whatever the
  correlation between the item's orders; flipping signs independently gives
  the exact null distribution of T. With one order per item d_i is in {-1, 0,
  1} and the test is McNemar's exact test.
- ``template_sign_flip_pvalue``: the same test on the per-template sums
  D_t = sum_{i in t} d_i (exact for integer sums; Monte Carlo with a fixed
  seed otherwise). Exact under a template-level exchangeable null; when the
  template means differ but sum to 0 it is conservative, since the flips'
  variance sum_t D_t^2 exceeds the true variance sum_t Var(D_t).
- ``cluster_bootstrap_totals``: one-stage cluster bootstrap, resampling whole
  templates with replacement and keeping their items (Davison and Hinkley
  1997, sec. 3.8; Field and Welsh 2007, "Bootstrapping clustered data", JRSS B
  69). A second stage that also resamples items inside each template counts
  the within-template variance twice (SEs 19-31% too wide on real records).
  A template is category + BBQ question_index.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.analysis.metrics import NAN

#: Largest len(pmf) * len(part) convolved directly; larger ones go through the FFT.
_DIRECT_MAX = 4_000_000
#: Two-sided, or one-sided toward positive / negative totals.
ALTERNATIVES = ("two-sided", "greater", "less")


def sign_flip_distribution(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(support, pmf) of T = sum_i s_i |d_i| with independent signs s_i = +-1 (p = 1/2 each).

    Exact: items sharing a value v contribute v (2K - m), K ~ Binomial(m, 1/2)
    (``scipy.stats.binom``); the groups are convolved on the integer support
    [-sum |d|, sum |d|]. ``d`` must hold integers (per-item count differences).
    Large supports (thousands of items) are convolved by FFT (``_fft_convolve``),
    exact up to ~1e-15 absolute rounding, which is clipped at 0.
    """
    from scipy.stats import binom

    values = np.abs(np.asarray(d))
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError("sign_flip_distribution needs integer per-item differences")
    values = values.astype(np.int64)
    values = values[values > 0]
    total = int(values.sum())
    pmf = np.zeros(2 * total + 1)
    pmf[total] = 1.0  # T = 0 before any item; index = T + total
    for v, m in zip(*np.unique(values, return_counts=True)):
        k = np.arange(m + 1)
        part = np.zeros(2 * int(v) * int(m) + 1)
        part[int(v) * 2 * k] = binom.pmf(k, m, 0.5)  # offsets v (2k - m) + v m
        full = np.convolve(pmf, part) if len(pmf) * len(part) <= _DIRECT_MAX else _fft_convolve(pmf, part)
        pmf = full[int(v) * int(m): int(v) * int(m) + 2 * total + 1]
    return np.arange(-total, total + 1), pmf


def _fft_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear convolution of two non-negative arrays by real FFT, negatives from rounding clipped to 0."""
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]
    return np.clip(out, 0.0, None)


def sign_flip_pvalue(d: np.ndarray | list, alternative: str = "two-sided") -> float:
    """Exact sign-flip p-value of T = sum_i d_i (see the module docstring).

    two-sided: P(|T| >= |t|); greater: P(T >= t); less: P(T <= t). Items with
    d_i = 0 carry no sign and drop out; no nonzero item gives p = 1 (the data
    cannot differ from H0). NaN entries raise ValueError.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    d = np.asarray(d, dtype=float)
    if np.isnan(d).any():
        raise ValueError("sign_flip_pvalue: NaN in the per-item differences")
    if not np.any(d):
        return 1.0
    t = float(d.sum())
    support, pmf = sign_flip_distribution(d)
    eps = 1e-9
    if alternative == "greater":
        p = pmf[support >= t - eps].sum()
    elif alternative == "less":
        p = pmf[support <= t + eps].sum()
    else:
        p = pmf[np.abs(support) >= abs(t) - eps].sum()
    return float(min(1.0, p))


def template_sums(d: np.ndarray | list, clusters: np.ndarray | list) -> np.ndarray:
    """Per-template sums of the per-item values ``d`` (templates in sorted order)."""
    values = np.asarray(d, dtype=float)
    codes, uniques = pd.factorize(pd.Series(list(clusters)), sort=True)
    if len(codes) != len(values):
        raise ValueError(f"{len(codes)} cluster labels for {len(values)} items")
    return np.bincount(codes, weights=values, minlength=len(uniques)) if len(values) else np.zeros(0)


#: Random sign vectors of the Monte Carlo sign-flip test (non-integer template sums).
MC_DRAWS = 20_000


def template_sign_flip_pvalue(d: np.ndarray | list, clusters: np.ndarray | list, alternative: str = "two-sided",
                              *, n_draws: int = MC_DRAWS, seed: int = 0) -> float:
    """Sign-flip p-value of T = sum_t D_t over template sums D_t (module docstring).

    Integer sums: exact (``sign_flip_pvalue``). Otherwise Monte Carlo with
    ``n_draws`` sign vectors, p = (1 + #{T* as extreme as T}) / (1 + n_draws)
    (Davison and Hinkley 1997, eq. 4.11), seeded, so it is reproducible.
    """
    sums = template_sums(d, clusters)
    if np.isnan(sums).any():
        raise ValueError("template_sign_flip_pvalue: NaN in the per-item values")
    rounded = np.round(sums)
    if np.allclose(sums, rounded, rtol=0, atol=1e-9):
        return sign_flip_pvalue(rounded, alternative)
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    nonzero = sums[sums != 0]
    if not len(nonzero):
        return 1.0
    t = float(nonzero.sum())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_draws, 2_000):  # chunks keep the sign matrix small with thousands of templates
        k = min(2_000, n_draws - start)
        signs = rng.integers(0, 2, size=(k, len(nonzero)), dtype=np.int8) * 2 - 1
        draws = signs @ nonzero
        eps = 1e-9 * max(1.0, abs(t))
        if alternative == "greater":
            hits += int((draws >= t - eps).sum())
        elif alternative == "less":
            hits += int((draws <= t + eps).sum())
        else:
            hits += int((np.abs(draws) >= abs(t) - eps).sum())
    return float((1 + hits) / (1 + n_draws))


def templates(frame: pd.DataFrame) -> pd.Series:
    """Template id per row: "category/question_index", or the item_id where question_index is not recorded.

    Runs written before records carried question_index fall back to one template
    per item, i.e. the ordinary item bootstrap.
    """
    if "question_index" in frame.columns:
        qi = frame["question_index"].astype("string")
        known = qi.notna() & (qi.str.len() > 0)
        out = frame["item_id"].astype(str).copy()
        out[known] = frame.loc[known, "category"].astype(str) + "/" + qi[known].astype(str)
        return out
    return frame["item_id"].astype(str)


def cluster_bootstrap_totals(per_item: np.ndarray, clusters: np.ndarray | list, *, n_boot: int = 1000,
                             seed: int = 0) -> np.ndarray:
    """(n_boot, k) totals of ``per_item`` rows under a one-stage cluster bootstrap.

    Each replicate draws T templates with replacement (m_t copies of template
    t, m ~ Multinomial(T, 1/T)) and keeps every item of a drawn template, so
    its total is sum_t m_t S_t with S_t the template's total. One item per
    template reduces this to the ordinary item bootstrap. Seeded.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    data = np.asarray(per_item, dtype=float)
    codes, uniques = pd.factorize(pd.Series(list(clusters)), sort=True)
    if len(codes) != len(data):
        raise ValueError(f"{len(codes)} cluster labels for {len(data)} items")
    n_templates = len(uniques)
    rng = np.random.default_rng(seed)
    width = data.shape[1] if data.ndim == 2 else 0
    if not n_templates:
        return np.full((n_boot, width), NAN)
    sums = np.zeros((n_templates, width))
    np.add.at(sums, codes, data)
    copies = rng.multinomial(n_templates, np.full(n_templates, 1.0 / n_templates), size=n_boot)
    return copies @ sums
