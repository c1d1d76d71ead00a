"""Spread between draws of one spec: random masks ([compression] mask_seeds) and calibration samples (calib_seeds).

A random mask is one draw, and so is the calibration sample a data-dependent
method (Wanda) computes its mask from; the difference between two draws of the
same spec is noise a single run cannot show. Variants named SPEC#seedS
(`auditor.core.names.with_mask_seed`) are grouped by (SPEC, runtime); the table
gives each draw's flip rate and SRS and their range (max - min) over draws, and
what was drawn (`draw`): "random mask" for a chain with a random@ step, else
"calibration sample" (the seed picks the calibration windows,
`compressors.calibration.load_calibration`).
"""
from __future__ import annotations

import pandas as pd

from auditor.core.names import split_mask_seed

RANDOM_MASK, CALIBRATION_SAMPLE = "random mask", "calibration sample"
MASK_SPREAD_COLUMNS = ["spec", "backend", "draw", "mask_seeds", "flip_rates", "srs_values", "flip_rate_min", "flip_rate_max",
                       "flip_rate_range", "srs_min", "srs_max", "srs_range"]


def draw_kind(spec: str) -> str:
    """What a spec's seed draws: a random mask when a step is random@ (spec.has_random_mask's rule; that
    seed wins when a chain has both), else the calibration sample."""
    methods = [part.strip().partition("@")[0] for part in spec.split("+")]
    return RANDOM_MASK if "random" in methods else CALIBRATION_SAMPLE


def mask_spread_table(overview: pd.DataFrame) -> pd.DataFrame:
    """One row per (spec, runtime) scored under two or more mask seeds, from the variants table.

    `overview` needs columns variant, backend, flip_rate, srs (one row per
    variant and runtime). flip_rates / srs_values are tuples in mask-seed order;
    min, max and range ignore NaN (all NaN gives NaN).
    """
    rows = []
    if not len(overview):
        return pd.DataFrame(columns=MASK_SPREAD_COLUMNS)
    parsed = [(split_mask_seed(str(v)), b, f, s) for v, b, f, s in
              overview[["variant", "backend", "flip_rate", "srs"]].itertuples(index=False)]
    groups: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for (spec, seed), backend, flip, srs in parsed:
        if seed is not None:
            groups.setdefault((spec, str(backend)), []).append((seed, float(flip), float(srs)))
    for (spec, backend), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        members.sort()
        flips = pd.Series([m[1] for m in members])
        srs = pd.Series([m[2] for m in members])
        rows.append({"spec": spec, "backend": backend, "draw": draw_kind(spec),
                     "mask_seeds": tuple(m[0] for m in members),
                     "flip_rates": tuple(flips), "srs_values": tuple(srs),
                     "flip_rate_min": flips.min(), "flip_rate_max": flips.max(),
                     "flip_rate_range": flips.max() - flips.min(),
                     "srs_min": srs.min(), "srs_max": srs.max(), "srs_range": srs.max() - srs.min()})
    return pd.DataFrame(rows, columns=MASK_SPREAD_COLUMNS)
