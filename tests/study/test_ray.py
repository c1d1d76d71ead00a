"""The Ray executor on a local Ray cluster: the same records as the local executor; errors stay clear."""
from __future__ import annotations

import pandas as pd
import pytest

from auditor.cli import main
from auditor.commands.run import INCOMPLETE_EXIT
from auditor.data.rundir import merged_records

ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install '.[ray]')")


@pytest.fixture
def local_cluster():
    """A Ray cluster on this machine (2 CPUs), shut down after the test."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_units_equal_local_units(small_study, capsys, tmp_path, local_cluster):
    variants = ("magnitude@0.5",)
    assert main(["run", str(small_study("local", variants=variants, shards=2))]) == 0, capsys.readouterr().err
    code = main(["run", str(small_study("onray", variants=variants, shards=2)), "--executor", "ray"])
    assert code == 0, capsys.readouterr().err
    local, on_ray = tmp_path / "reports" / "local", tmp_path / "reports" / "onray"
    assert sorted(p.name for p in (on_ray / "records").glob("*.parquet")) == \
        sorted(p.name for p in (local / "records").glob("*.parquet"))
    pd.testing.assert_frame_equal(merged_records(on_ray), merged_records(local), check_exact=True)
    manifest = (on_ray / "manifest.json").read_text()
    assert '"executor": "ray"' in manifest


def test_an_error_inside_a_ray_task_is_reported_like_a_local_one(small_study, capsys, tmp_path, local_cluster):
    short = tmp_path / "short.txt"
    short.write_text("Too short to calibrate on.")
    study = small_study("raybad", variants=("wanda@0.5",), calibration={"corpus": str(short), "seq_len": 64})
    code = main(["run", str(study), "--executor", "ray"])
    err = capsys.readouterr().err
    # The unit fails alone, as it does locally: the others are scored, the run is incomplete (exit 3).
    assert code == INCOMPLETE_EXIT
    assert f"{short}: calibration text has" in err and "need more than seq_len=64" in err
    run_dir = tmp_path / "reports" / "raybad"
    assert not any(p.name.startswith("wanda") for p in (run_dir / "records").glob("*.parquet"))
    assert "wanda@0.5 on torch) FAILED" in (run_dir / "report.md").read_text()
