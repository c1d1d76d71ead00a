"""End to end on the real embedded model: dense vs magnitude@0.5, records and a report."""
from __future__ import annotations

import pandas as pd
import pytest

from auditor.cli import main
from tests.conftest import SAMPLE_BBQ


@pytest.mark.slow
def test_audit_writes_records_and_report(tmp_path, capsys):
    code = main(["audit", "--variant", "magnitude@0.5", "--n-items", "10", "--seeds", "0,1",
                 "--run", "e2e", "--reports", str(tmp_path), "--no-null-baselines", "--bbq", str(SAMPLE_BBQ)])
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "e2e"
    files = sorted(p.name for p in (run / "records").glob("*.parquet"))
    assert len(files) == 2 and any(f.startswith("dense") for f in files)
    records = pd.concat([pd.read_parquet(p) for p in (run / "records").glob("*.parquet")])
    # one row per (variant, seed, item), the same items for both variants
    assert len(records) == 2 * 2 * 10
    assert records.groupby("variant")["item_id"].apply(frozenset).nunique() == 1
    assert set(records["role"]) <= {"stereotype", "other", "unknown"}
    assert records[["logprob_0", "logprob_1", "logprob_2"]].le(0).all().all()
    # the chosen answer is the argmax of the three option log-probs (dataset indexing)
    lp = records[["logprob_0", "logprob_1", "logprob_2"]].to_numpy()
    assert (lp.argmax(axis=1) == records["chosen"].to_numpy()).all()
    report = (run / "report.md").read_text()
    assert "dequantized Q4_1" in report and "SAMPLE DATA" in report
    assert "magnitude@0.5" in report and "flip rate" in report
