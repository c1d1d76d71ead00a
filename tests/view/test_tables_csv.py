"""CSV tables: one file per table, written atomically into a folder, lists joined, NaN as empty cells."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from auditor.core.errors import AuditorError
from auditor.view.tables_csv import write_csv_tables


def test_write_csv_tables(tmp_path):
    out = tmp_path / "new" / "tables"
    (tmp_path / "new").mkdir()
    keep = tmp_path / "new" / "other.txt"
    keep.write_text("mine")
    frames = {"overview": pd.DataFrame({"variant": ["dense", "rtn@4"], "size_bytes": [5e8, math.nan]}),
              "decision": pd.DataFrame({"variant": ["rtn@4"], "misses": [["size not measured", "grade high > low"]]})}
    paths = write_csv_tables(out, frames)
    assert [p.name for p in paths] == ["overview.csv", "decision.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["decision.csv", "overview.csv"]  # no temp file left
    overview = pd.read_csv(out / "overview.csv")
    assert overview["size_bytes"].iloc[0] == 5e8 and math.isnan(overview["size_bytes"].iloc[1])
    assert (out / "overview.csv").read_text().splitlines()[2] == "rtn@4,"
    assert pd.read_csv(out / "decision.csv")["misses"].iloc[0] == "size not measured; grade high > low"
    assert keep.read_text() == "mine"
    # a second write replaces the files whole
    write_csv_tables(out, {"overview": frames["overview"].iloc[:1]})
    assert len(pd.read_csv(out / "overview.csv")) == 1


def test_not_a_folder(tmp_path):
    target = tmp_path / "file.csv"
    target.write_text("x")
    with pytest.raises(AuditorError, match="not a folder"):
        write_csv_tables(target, {"overview": pd.DataFrame({"a": [1]})})
