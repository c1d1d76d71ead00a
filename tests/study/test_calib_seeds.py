"""[compression] calib_seeds: a data-dependent spec (Wanda) run under several calibration draws (tiny model)."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.analysis.mask_seeds import CALIBRATION_SAMPLE, RANDOM_MASK, draw_kind
from auditor.cli import main
from auditor.core.errors import SpecError
from auditor.data.rundir import merged_records
from auditor.study.spec import parse_study
from auditor.view.run import RunView

LOGPROBS = ["logprob_0", "logprob_1", "logprob_2"]


def test_calib_seeds_repeat_data_dependent_specs_only():
    study = parse_study({"name": "t", "compression": {
        "variants": ["wanda@0.5", "magnitude@0.5", "random@0.5", "wanda@0.5+gguf-q8_0"], "calib_seeds": [3, 4]}})
    assert study.variants == ("dense", "wanda@0.5#seed3", "wanda@0.5#seed4", "magnitude@0.5", "random@0.5",
                              "wanda@0.5+gguf-q8_0#seed3", "wanda@0.5+gguf-q8_0#seed4")
    assert study.calib_seeds == (3, 4) and study.mask_seeds == ()
    both = parse_study({"name": "t", "compression": {"variants": ["wanda@0.5", "random@0.5"],
                                                     "calib_seeds": [1, 2], "mask_seeds": [5]}})
    assert both.variants == ("dense", "wanda@0.5#seed1", "wanda@0.5#seed2", "random@0.5#seed5")
    # The hash covers the draws (they are variants); a study without the key keeps its hash.
    assert study.hash != parse_study({"name": "t", "compression": {
        "variants": ["wanda@0.5", "magnitude@0.5", "random@0.5", "wanda@0.5+gguf-q8_0"]}}).hash
    with pytest.raises(SpecError, match=r"t.toml: compression.calib_seeds: calibration seeds must be distinct"):
        parse_study({"name": "t", "compression": {"variants": ["wanda@0.5"], "calib_seeds": [1, 1]}}, source="t.toml")
    with pytest.raises(SpecError, match=r"compression.calib_seeds: 'random@0.2\+wanda@0.5' draws both"):
        parse_study({"name": "t", "compression": {"variants": ["random@0.2+wanda@0.5"], "calib_seeds": [1, 2],
                                                  "mask_seeds": [0, 1]}}, source="t.toml")
    with pytest.raises(SpecError, match=r"calib_seeds: expected a list of an integer"):
        parse_study({"name": "t", "compression": {"variants": ["wanda@0.5"], "calib_seeds": ["a"]}}, source="t.toml")


def test_draw_kind():
    assert draw_kind("random@0.5") == RANDOM_MASK and draw_kind("random@0.3+gguf-q8_0") == RANDOM_MASK
    assert draw_kind("wanda@0.5") == CALIBRATION_SAMPLE and draw_kind("wanda@2:4+gguf-q4_k_m") == CALIBRATION_SAMPLE


def test_calib_seeds_in_a_study(small_study, capsys, tmp_path):
    study = small_study("calib", n_items=6, seeds=(0,), compression={"variants": ["wanda@0.5"], "calib_seeds": [0, 1]})
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "reports" / "calib"
    records = merged_records(run_dir)
    names = ["wanda@0.5#seed0", "wanda@0.5#seed1"]
    assert sorted(records["variant"].unique()) == ["dense", *names]
    lp = {v: records[records["variant"] == v].sort_values("item_id")[LOGPROBS].to_numpy() for v in names}
    # Two calibration draws give two masks, so two models.
    assert not np.allclose(lp[names[0]], lp[names[1]])
    # Calibration seed 1 is the draw a single wanda@0.5 run with compression seed 1 makes: the same model.
    single = small_study("calib1", n_items=6, seeds=(0,), compression={"variants": ["wanda@0.5"], "seed": 1})
    assert main(["run", str(single)]) == 0, capsys.readouterr().err
    other = merged_records(tmp_path / "reports" / "calib1")
    np.testing.assert_array_equal(other[other["variant"] == "wanda@0.5"].sort_values("item_id")[LOGPROBS].to_numpy(),
                                  lp[names[1]])

    view = RunView.load(run_dir, n_boot=50)
    spread = view.mask_spread
    assert list(spread["spec"]) == ["wanda@0.5"] and list(spread["draw"]) == [CALIBRATION_SAMPLE]
    assert spread.iloc[0]["mask_seeds"] == (0, 1)
    flips = view.overview.set_index("variant").loc[names, "flip_rate"].to_numpy()
    np.testing.assert_allclose(spread.iloc[0]["flip_rates"], flips)
    report = (run_dir / "report.md").read_text()
    assert "calibration sample" in report and "Random masks and calibration draws" in report
