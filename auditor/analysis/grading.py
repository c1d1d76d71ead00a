"""The whole grade of one protocol's records: comparison, position checks, validity and verdicts.

One function chain shared by the run view (``auditor.view.run``) and the
calibration bench (``auditor.benchmarks.calibration``), so what the bench
calibrates is exactly what a report grades.
"""
from __future__ import annotations

import pandas as pd

from auditor.analysis.comparison import comparison_table
from auditor.analysis.position import order_support_row, position_table
from auditor.analysis.protocols import order_support, select_protocol, with_derived_protocols
from auditor.analysis.validity import ReferenceValidity, reference_validity, variant_finding
from auditor.analysis.verdicts import RiskThresholds, Verdict, assess
from auditor.core.names import DENSE, TORCH
from auditor.data.records import DEBIASED


def positions_of(records: pd.DataFrame, all_records: pd.DataFrame, protocol: str, *, n_boot: int) -> pd.DataFrame:
    """``position_table`` of one protocol's records; debiased rows get their order support (their position check,
    from the strict rows in ``all_records``)."""
    positions = position_table(records, n_boot=n_boot)
    if protocol != DEBIASED or not len(records):
        return positions
    support = order_support(all_records, records)
    for i, p in positions.iterrows():
        unit = support[(support["variant"] == p["variant"]) & (support["backend"] == p["backend"])]
        for key, value in order_support_row(unit, n_boot=n_boot).items():
            positions.loc[i, key] = value
    return positions


def reference_position_row(positions: pd.DataFrame) -> dict | None:
    """The dense reference's position row, on torch when it was scored there (the reference backend)."""
    dense = positions[positions["variant"] == DENSE]
    if not len(dense):
        return None
    on_torch = dense[dense["backend"] == TORCH]
    return (on_torch if len(on_torch) else dense).iloc[0].to_dict()


def validity_settings(t: RiskThresholds) -> dict:
    return {"max_position_share": t.max_position_share, "max_position_spread": t.max_position_spread,
            "min_order_support": t.min_order_support}


def validity_of(positions: pd.DataFrame, t: RiskThresholds) -> tuple[ReferenceValidity | None, dict]:
    """(the reference's validity, {(variant, backend): the variant's own finding})."""
    ref = reference_position_row(positions)
    validity = None if ref is None else reference_validity(ref, **validity_settings(t))
    findings = {(p["variant"], p["backend"]): variant_finding(p, **validity_settings(t), reference=ref)
                for p in positions.to_dict(orient="records")}
    return validity, findings


def grade(records: pd.DataFrame, protocol: str, t: RiskThresholds, *, n_boot: int = 1000,
          categories: bool = True) -> tuple[pd.DataFrame, ReferenceValidity | None, list[Verdict]]:
    """(comparison table, reference validity, verdicts) of ``records`` (any protocols; derived ones are made)
    graded on ``protocol`` exactly as a report grades them."""
    all_records, _ = with_derived_protocols(records, (protocol,))
    sub = select_protocol(all_records, protocol)
    table = comparison_table(sub, DENSE, n_boot=n_boot, categories=categories)
    validity, findings = validity_of(positions_of(sub, all_records, protocol, n_boot=n_boot), t)
    finding = validity.short if validity is not None and not validity.valid else ""
    verdicts = [assess(row, t, finding, findings.get((row["variant"], row["backend"]), ""))
                for row in table[table["category"] == "all"].to_dict(orient="records")]
    return table, validity, verdicts
