"""Answer-order sensitivity and runtime baseline: how many unbiased -> biased flips appear with NO compression.

The comparison table computes both again on each variant's own items
(``auditor.analysis.comparison``); this table is the run-wide summary.

A variant's flip rate only means something above these:

- **seed** ("answer-order sensitivity": dense vs dense under another order): for
  every answer-order seed s_k other than the first seed s_0, the flip rate of
  the dense model's answers under order s_k against its answers under s_0, on
  the same items, counting only the items whose two orders DIFFER (seeds drawn
  with replacement can repeat an order, and a repeated order can only agree
  with itself, which would understate the figure). Same weights, same
  runtime, only the option order differs. It is a sensitivity, not a null
  distribution: it says how much of a variant's change the order alone makes.
- **runtime** ("dense torch vs dense GGUF F16 in llama.cpp", runtime noise): the
  flip rate of the records of variant ``DENSE_GGUF_F16`` on backend
  ``LLAMA_CPP`` against the dense torch records, paired on (seed, item_id).
  The study runner writes that unit when null baselines are enabled; when it is
  absent the baseline is NaN and the row's ``note`` says so. It applies to
  llama.cpp-served variants only (torch variants share the reference's runtime).
- **precision** ("dense float32 vs dense in the run's compute dtype", precision
  noise): the flip rate of the dense torch records (computed in the run's dtype,
  e.g. bfloat16) against the records of variant ``DENSE_FLOAT32`` (the same
  weights computed in float32), paired on (seed, item_id): what the cheaper
  precision flips by itself. Only runs that compute in another dtype than
  float32 have it; without its records there is no row.

Flip rate = n(unbiased -> biased) / n(reference unbiased) as in
``auditor.analysis.metrics.transitions``, which does the counting here too.
"""
from __future__ import annotations

import logging

import pandas as pd

from auditor.analysis.direction import paired
from auditor.analysis.metrics import NAN, transitions
from auditor.core.names import DENSE, LLAMA_CPP, TORCH

log = logging.getLogger(__name__)

#: Variant name of the dense model exported to GGUF F16 and scored by llama.cpp (the runtime baseline).
DENSE_GGUF_F16 = "dense-gguf-f16"
#: Variant name of the dense model computed in float32 when the run computes in another dtype (precision baseline).
DENSE_FLOAT32 = "dense-float32"
#: Backend the dense reference is scored on; variants served elsewhere are compared against it.
REFERENCE_BACKEND = TORCH
#: Variants that exist only as null baselines: never compared as compressed variants.
BASELINE_VARIANTS = frozenset({DENSE_GGUF_F16, DENSE_FLOAT32})

#: Baseline kinds, as written in the ``baseline`` column.
SEED_BASELINE = "seed"
RUNTIME_BASELINE = "runtime"
PRECISION_BASELINE = "precision"

BASELINE_COLUMNS = [
    "baseline", "backend", "category", "seeds", "n_pairs", "n_ref_unbiased",
    "unbiased_to_biased", "biased_to_unbiased", "flip_rate", "note",
]


def _ambiguous(records: pd.DataFrame, condition: str) -> pd.DataFrame:
    return records[records["condition"] == condition]


def _empty_row(kind: str, backend: str, note: str) -> dict:
    return {"baseline": kind, "backend": backend, "category": "all", "seeds": "", "n_pairs": 0,
            "n_ref_unbiased": 0, "unbiased_to_biased": 0, "biased_to_unbiased": 0, "flip_rate": NAN,
            "note": note}


def differing_orders(base: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``other`` whose item was shown in a different answer order (``perm``) than in ``base``.

    Records without a perm column are kept whole (nothing to compare).
    """
    if "perm" not in base.columns or "perm" not in other.columns:
        return other
    shown = base.drop_duplicates("item_id").set_index("item_id")["perm"].astype(str)
    return other[other["perm"].astype(str).to_numpy() != other["item_id"].map(shown).astype(str).to_numpy()]


def order_pairs(records: pd.DataFrame, reference: str, backend: str, condition: str = "ambig") -> pd.DataFrame:
    """The reference's answers under s_0 (role_ref) next to its answers under each other seed s_k (role_var).

    Only items whose two orders differ (``differing_orders``); columns as
    ``auditor.analysis.direction.paired``, one row per (s_k, item). Empty with
    one seed.
    """
    ref = _ambiguous(records[(records["variant"] == reference) & (records["backend"] == backend)], condition)
    seeds = sorted(int(s) for s in ref["seed"].unique())
    if len(seeds) < 2:
        return paired(ref.iloc[0:0], ref.iloc[0:0])
    base = ref[ref["seed"] == seeds[0]]
    parts = [paired(base, differing_orders(base, ref[ref["seed"] == s]).assign(seed=seeds[0]))
             .assign(seed=s) for s in seeds[1:]]
    return pd.concat(parts, ignore_index=True)


def seed_baseline(records: pd.DataFrame, reference: str = DENSE, condition: str = "ambig") -> pd.DataFrame:
    """Answer-order sensitivity of the reference, per backend it was scored on and per category + "all".

    For each backend and each seed s_k != s_0 (s_0 = the smallest seed, 0 = dataset
    order), the reference's rows under s_k are paired item by item with its rows
    under s_0, on the items whose two orders differ. Counts are pooled over k: flip_rate = sum_k n_ub(k) / sum_k n(s_0
    unbiased) (the same pooled denominator the variants' flip rate uses when
    several seeds are paired). With one seed there is nothing to compare: one
    "all" row with NaN and a note.
    """
    rows: list[dict] = []
    ref = _ambiguous(records[records["variant"] == reference], condition)
    if not len(ref):
        note = f"no {condition} records of variant {reference!r}"
        return pd.DataFrame([_empty_row(SEED_BASELINE, REFERENCE_BACKEND, note)], columns=BASELINE_COLUMNS)
    for backend, frame in ref.groupby("backend", sort=True):
        seeds = sorted(int(s) for s in frame["seed"].unique())
        if len(seeds) < 2:
            note = f"{reference!r} on {backend!r} was scored under one seed ({seeds[0]}): no other answer order"
            log.info("seed baseline: %s", note)
            rows.append(_empty_row(SEED_BASELINE, str(backend), note))
            continue
        base = frame[frame["seed"] == seeds[0]]
        # Relabel s_k as s_0 so transitions() pairs the two answer orders of the same item.
        parts = [transitions(base, differing_orders(base, frame[frame["seed"] == s]).assign(seed=seeds[0]))
                 for s in seeds[1:]]
        pooled = pd.concat(parts, ignore_index=True)
        if not len(pooled):
            note = f"{reference!r} on {backend!r}: no item was shown in two different answer orders"
            rows.append(_empty_row(SEED_BASELINE, str(backend), note))
            continue
        pooled = pooled[pooled["condition"] == condition]
        for cat, f in pooled.groupby("category", sort=True):
            n_unb = int(f["n_ref_unbiased"].sum())
            n_ub = int(f["unbiased_to_biased"].sum())
            rows.append({
                "baseline": SEED_BASELINE, "backend": str(backend), "category": cat,
                "seeds": f"{seeds[0]} vs {','.join(map(str, seeds[1:]))}", "n_pairs": int(f["n_pairs"].sum()),
                "n_ref_unbiased": n_unb, "unbiased_to_biased": n_ub,
                "biased_to_unbiased": int(f["biased_to_unbiased"].sum()),
                "flip_rate": n_ub / n_unb if n_unb else NAN, "note": "",
            })
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


def runtime_baseline(records: pd.DataFrame, reference: str = DENSE, condition: str = "ambig") -> pd.DataFrame:
    """Runtime noise: ``DENSE_GGUF_F16`` on llama.cpp against the reference on torch, per category + "all".

    Pairs are (seed, item_id), so each answer order is compared with itself. NaN
    with a note when either side has no records (e.g. the runner did not add the
    unit because llama.cpp was unavailable or null baselines were disabled).
    """
    ref = _ambiguous(records[(records["variant"] == reference) & (records["backend"] == REFERENCE_BACKEND)], condition)
    gguf = _ambiguous(records[(records["variant"] == DENSE_GGUF_F16) & (records["backend"] == LLAMA_CPP)], condition)
    if not len(ref) or not len(gguf):
        missing = (f"{DENSE_GGUF_F16!r} on {LLAMA_CPP!r}" if not len(gguf)
                   else f"{reference!r} on {REFERENCE_BACKEND!r}")
        note = f"not measured: no {condition} records of {missing}"
        log.info("runtime baseline %s", note)
        return pd.DataFrame([_empty_row(RUNTIME_BASELINE, LLAMA_CPP, note)], columns=BASELINE_COLUMNS)
    t = transitions(ref, gguf)
    t = t[t["condition"] == condition]
    seeds = ",".join(str(s) for s in sorted(set(ref["seed"]) & set(gguf["seed"])))
    if not len(t):
        return pd.DataFrame([_empty_row(RUNTIME_BASELINE, LLAMA_CPP, "not measured: no paired items")],
                            columns=BASELINE_COLUMNS)
    return _transition_rows(RUNTIME_BASELINE, LLAMA_CPP, t, seeds)


def precision_baseline(records: pd.DataFrame, reference: str = DENSE, condition: str = "ambig") -> pd.DataFrame:
    """Precision noise: the reference on torch in the run's dtype against ``DENSE_FLOAT32``, per category + "all".

    The float32 records are the reference side: flip_rate = n(unbiased in float32 ->
    biased in the run's dtype) / n(unbiased in float32), paired on (seed, item_id).
    Empty (no rows) when the run has no float32 records, i.e. it computes in float32.
    """
    f32 = _ambiguous(records[(records["variant"] == DENSE_FLOAT32) & (records["backend"] == REFERENCE_BACKEND)],
                     condition)
    low = _ambiguous(records[(records["variant"] == reference) & (records["backend"] == REFERENCE_BACKEND)], condition)
    if not len(f32):
        return pd.DataFrame(columns=BASELINE_COLUMNS)
    if not len(low):
        return pd.DataFrame([_empty_row(PRECISION_BASELINE, REFERENCE_BACKEND,
                                        f"not measured: no {condition} records of {reference!r} on "
                                        f"{REFERENCE_BACKEND!r}")], columns=BASELINE_COLUMNS)
    t = transitions(f32, low)
    t = t[t["condition"] == condition]
    seeds = ",".join(str(s) for s in sorted(set(f32["seed"]) & set(low["seed"])))
    return _transition_rows(PRECISION_BASELINE, REFERENCE_BACKEND, t, seeds)


def _transition_rows(baseline: str, backend: str, t: pd.DataFrame, seeds: str) -> pd.DataFrame:
    """One baseline row per category row of `transitions` (the reference side first)."""
    return pd.DataFrame([{
        "baseline": baseline, "backend": backend, "category": r["category"], "seeds": seeds,
        "n_pairs": int(r["n_pairs"]), "n_ref_unbiased": int(r["n_ref_unbiased"]),
        "unbiased_to_biased": int(r["unbiased_to_biased"]), "biased_to_unbiased": int(r["biased_to_unbiased"]),
        "flip_rate": r["flip_rate"], "note": "",
    } for _, r in t.iterrows()], columns=BASELINE_COLUMNS)


def null_baselines(records: pd.DataFrame, reference: str = DENSE, condition: str = "ambig") -> pd.DataFrame:
    """Every null baseline, one row per (baseline, backend, category); NaN rows carry a note.

    The precision rows appear only in runs that computed the dense model in float32 too.
    """
    parts = [seed_baseline(records, reference, condition), runtime_baseline(records, reference, condition)]
    precision = precision_baseline(records, reference, condition)
    if len(precision):
        parts.append(precision)
    return pd.concat(parts, ignore_index=True)

