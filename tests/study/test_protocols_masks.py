"""Studies with several scoring protocols and with random masks under several mask seeds (tiny model)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from auditor.cli import main
from auditor.core.errors import SpecError
from auditor.data.rundir import merged_records
from auditor.study.spec import parse_study
from auditor.view.run import RunView

LOGPROBS = ["logprob_0", "logprob_1", "logprob_2"]


def test_protocols_are_parsed_and_checked():
    study = parse_study({"name": "t", "seeds": [0, 1, 2], "protocols": ["debiased", "cloze"]}, source="t.toml")
    assert study.protocols == ("debiased", "cloze") and study.results_definition()["cloze"] is True
    assert "cloze" not in parse_study({"name": "t"}).results_definition()  # strict-only hashes are unchanged
    with pytest.raises(SpecError, match=r"t.toml: protocols: 'debiased' averages the three cyclic answer orders: "
                                        r"seeds must include 0, 1, 2 \(got \[0, 1\]\)"):
        parse_study({"name": "t", "seeds": [0, 1], "protocols": ["debiased"]}, source="t.toml")
    with pytest.raises(SpecError, match="protocols: unknown protocol 'fair'; valid: strict, debiased, cloze"):
        parse_study({"name": "t", "protocols": ["fair"]}, source="t.toml")


def test_mask_seeds_repeat_random_specs_only():
    study = parse_study({"name": "t", "compression": {"variants": ["random@0.5", "magnitude@0.5",
                                                                   "random@0.3+gguf-q8_0"], "mask_seeds": [0, 2]}})
    assert study.variants == ("dense", "random@0.5#seed0", "random@0.5#seed2", "magnitude@0.5",
                              "random@0.3+gguf-q8_0#seed0", "random@0.3+gguf-q8_0#seed2")
    with pytest.raises(SpecError, match=r"compression.mask_seeds: mask seeds must be distinct, got \[1, 1\]"):
        parse_study({"name": "t", "compression": {"variants": ["random@0.5"], "mask_seeds": [1, 1]}}, source="t.toml")
    with pytest.raises(SpecError, match="'random@0.5#seed1': '#' is reserved for mask seeds"):
        parse_study({"name": "t", "compression": {"variants": ["random@0.5#seed1"]}}, source="t.toml")


def test_a_study_with_three_protocols(small_study, capsys, tmp_path):
    study = small_study("proto", n_items=6, seeds=(0, 1, 2), extra_top={"protocols": ["debiased", "strict", "cloze"]})
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "reports" / "proto"
    records = merged_records(run_dir)
    # Scored: strict under three orders and cloze once, per variant and item; debiased is derived when read.
    assert records.groupby("protocol").size().to_dict() == {"strict": 2 * 3 * 6, "cloze": 2 * 6}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["protocols"] == ["debiased", "strict", "cloze"] and manifest["prompt_template"] == "bbq-letter-v2"
    descriptor = json.loads(next((run_dir / "units").glob("dense*.json")).read_text())
    assert descriptor["prompt_template"] == "bbq-letter-v2" and descriptor["cloze"] == "lm-eval-bbq-mc-1.0"
    view = RunView.load(run_dir, n_boot=50)
    assert view.protocol == "debiased" and set(view.records["protocol"]) == {"debiased"}
    assert len(view.records) == 2 * 6 and set(view.records["seed"]) == {0}
    # The debiased answer is the argmax of the strict rows' mean log-probs over the three orders.
    strict = records[records["protocol"] == "strict"].groupby(["variant", "item_id"])[LOGPROBS].mean()
    debiased = view.records.set_index(["variant", "item_id"]).loc[strict.index]
    assert (debiased["chosen"].to_numpy() == np.argmax(strict.to_numpy(), axis=1)).all()
    assert set(view.protocols["protocol"]) == {"debiased", "strict", "cloze"}
    assert RunView.load(run_dir, n_boot=50, protocol="cloze").records["protocol"].eq("cloze").all()
    report = (run_dir / "report.md").read_text()
    assert "scoring protocol debiased" in report and "## Scoring protocols" in report
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["protocol"] == "debiased" and {r["protocol"] for r in summary["protocols"]} == {
        "debiased", "strict", "cloze"}


def test_mask_seeds_in_a_study(small_study, capsys, tmp_path):
    study = small_study("masks", n_items=6, seeds=(0,), variants=("random@0.5",),
                        compression={"variants": ["random@0.5"], "mask_seeds": [0, 1, 2]})
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "reports" / "masks"
    records = merged_records(run_dir)
    names = ["random@0.5#seed0", "random@0.5#seed1", "random@0.5#seed2"]
    assert sorted(records["variant"].unique()) == ["dense", *names]
    lp = {v: records[records["variant"] == v][LOGPROBS].to_numpy() for v in names}
    assert not np.allclose(lp[names[0]], lp[names[1]]) and not np.allclose(lp[names[1]], lp[names[2]])
    # Mask seed 1 is the compression seed of that variant: the same model as random@0.5 with seed = 1.
    single = small_study("seed1", n_items=6, seeds=(0,), compression={"variants": ["random@0.5"], "seed": 1})
    assert main(["run", str(single)]) == 0, capsys.readouterr().err
    other = merged_records(tmp_path / "reports" / "seed1")
    np.testing.assert_array_equal(other[other["variant"] == "random@0.5"][LOGPROBS].to_numpy(), lp[names[1]])

    view = RunView.load(run_dir, n_boot=50)
    spread = view.mask_spread
    assert list(spread["spec"]) == ["random@0.5"] and spread.iloc[0]["mask_seeds"] == (0, 1, 2)
    flips = view.overview.set_index("variant").loc[names, "flip_rate"].to_numpy()
    np.testing.assert_allclose(spread.iloc[0]["flip_rates"], flips)
    assert spread.iloc[0]["flip_rate_range"] == pytest.approx(np.nanmax(flips) - np.nanmin(flips))
    assert "## Random masks" in (run_dir / "report.md").read_text()
