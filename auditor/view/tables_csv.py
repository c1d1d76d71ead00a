"""A run's tables as CSV files, for spreadsheets and scripts that do not read Parquet.

``run_tables`` names the tables (item records, the variants overview, the
comparison table, and the fidelity and decision tables when given);
``write_csv_tables`` writes each as ``<name>.csv`` into a folder. Every file is
written atomically (``auditor.core.files.atomic_path``: a temp name, then one
rename), so a reader never sees half a file; other files in the folder are left
alone. Missing figures are empty cells (pandas writes NaN as ""), list cells are
joined with "; ".
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import pandas as pd

from auditor.core.errors import AuditorError
from auditor.core.files import atomic_path

log = logging.getLogger(__name__)


def run_tables(view, fidelity: pd.DataFrame | None = None,
               decision: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """{name: table} of a ``RunView``: records, overview, comparison, plus fidelity and decision when given."""
    tables = {"records": view.records, "overview": view.overview, "comparison": view.comparison}
    if fidelity is not None:
        tables["fidelity"] = fidelity
    if decision is not None:
        tables["decision"] = decision
    return tables


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """List and tuple cells joined with "; " (a CSV cell holds one value)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, (list, tuple))).any():
            out[col] = out[col].map(lambda v: "; ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    return out


def write_csv_tables(out_dir: Path | str, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write each table as ``out_dir/<name>.csv`` (atomically, folder created); the paths written.

    AuditorError naming the folder when it cannot be created or written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AuditorError(f"{out_dir}: not a folder (CSV tables go into a folder)")
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            path = out_dir / f"{name}.csv"
            with atomic_path(path) as tmp:
                _flat(frame).to_csv(tmp, index=False)
            written.append(path)
    except OSError as exc:
        raise AuditorError(f"{out_dir}: cannot write CSV tables ({exc.strerror or exc})") from None
    log.info("wrote %d CSV tables to %s", len(written), out_dir)
    return written
