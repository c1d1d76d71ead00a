"""The paradox table: perplexity change next to SRS change per variant (the "Smart Pruning Paradox")."""
from __future__ import annotations

import logging
import math
from typing import Mapping

import pandas as pd

from auditor.analysis.comparison import AMBIG, compared_units
from auditor.analysis.metrics import NAN
from auditor.core.names import DENSE

log = logging.getLogger(__name__)


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

    ``metrics`` is ``auditor.analysis.summary.metrics_table`` (its category "all",
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
