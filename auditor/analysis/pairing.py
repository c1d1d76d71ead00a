"""Each variant's answer next to the dense reference's answer on the same (seed, item).

The pairing rule is `auditor.analysis.stats.compared_units` (same backend, else torch)
for compressed variants, and dense torch for the null-baseline variants.
"""
from __future__ import annotations

import pandas as pd

from auditor.analysis.baselines import BASELINE_VARIANTS, REFERENCE_BACKEND
from auditor.analysis.comparison import compared_units
from auditor.core.names import DENSE
from auditor.data.records import COLUMNS, ROLE_STEREOTYPE


def answers_with_reference(records: pd.DataFrame) -> pd.DataFrame:
    """Every record with the reference's role on the same (seed, item) and flip flags.

    The reference backend follows `auditor.analysis.stats.compared_units` (same backend, else torch).
    On AMBIGUOUS items only: flipped = reference unbiased and variant biased;
    reversed = the opposite. On a disambiguated item a move to the stereotype
    answer can be a move to the correct answer, so it is no flip; the
    disambig_flipped flag marks the moves to a stereotype answer that is WRONG
    there (label != stereotype_index), to be reported apart.
    """
    cols = [c for c in COLUMNS if c in records.columns]
    out = records[cols].copy()
    out["ref_role"] = pd.Series(pd.NA, index=out.index, dtype="object")
    if not len(records):
        out["flipped"], out["reversed"] = pd.Series(dtype=bool), pd.Series(dtype=bool)
        out["disambig_flipped"] = pd.Series(dtype=bool)
        return out
    for variant, backend, ref_backend in compared_units(records, DENSE) + baseline_units(records):
        ref = records[(records["variant"] == DENSE) & (records["backend"] == ref_backend)]
        mask = (out["variant"] == variant) & (out["backend"] == backend)
        keyed = ref.set_index(["seed", "item_id"])["role"]
        idx = pd.MultiIndex.from_arrays([out.loc[mask, "seed"], out.loc[mask, "item_id"]])
        out.loc[mask, "ref_role"] = keyed.reindex(idx).to_numpy()
    moved_in = out["ref_role"].notna() & (out["ref_role"] != ROLE_STEREOTYPE) & (out["role"] == ROLE_STEREOTYPE)
    ambig = out["condition"] == "ambig"
    out["flipped"] = ambig & moved_in
    out["reversed"] = ambig & (out["ref_role"] == ROLE_STEREOTYPE) & (out["role"] != ROLE_STEREOTYPE)
    stereotype_wrong = out["label"] != out["stereotype_index"] if "label" in out.columns else False
    out["disambig_flipped"] = ~ambig & moved_in & stereotype_wrong
    return out


def baseline_units(records: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Null-baseline variants are paired with the dense torch records (as auditor.analysis.baselines does)."""
    present = records[["variant", "backend"]].drop_duplicates()
    return [(v, b, REFERENCE_BACKEND) for v, b in present.itertuples(index=False) if v in BASELINE_VARIANTS]
