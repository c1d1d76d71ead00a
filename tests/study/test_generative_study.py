"""The free-text protocols in a study: [generation] settings, and one run on the embedded SmolLM2."""
from __future__ import annotations

import json

import pytest

from auditor.cli import main
from auditor.core.errors import SpecError
from auditor.data.rundir import merged_records
from auditor.scoring.generative import GenerationSettings
from auditor.study.spec import parse_study
from auditor.view.run import RunView
from tests.conftest import SAMPLE_BBQ
from tests.study.conftest import write_study


def test_generation_settings_are_parsed_and_checked():
    study = parse_study({"name": "t", "protocols": ["strict", "generative", "sampled"],
                         "generation": {"max_new_tokens": 8, "samples": 3, "temperature": 0.5, "seed": 7}})
    assert study.generation == GenerationSettings(max_new_tokens=8, samples=3, temperature=0.5, seed=7)
    definition = study.results_definition()
    assert definition["text_protocols"] == ["generative", "sampled"] and definition["generation"]["samples"] == 3
    # Studies without a free-text protocol keep their hash; the settings change it when one is scored.
    assert "generation" not in parse_study({"name": "t"}).results_definition()
    assert study.hash != parse_study({"name": "t", "protocols": ["strict", "generative", "sampled"],
                                      "generation": {"max_new_tokens": 8, "samples": 4, "temperature": 0.5,
                                                     "seed": 7}}).hash
    assert parse_study({"name": "t", "protocols": ["generative"]}).generation == GenerationSettings()
    for table, message in [
        ({"samples": 0}, r"t.toml: generation.samples: must be positive, got 0"),
        ({"temperature": 0}, r"generation.temperature: must be > 0 and <= 10 \(greedy decoding is the 'generative'"),
        ({"max_new_tokens": 1000}, r"generation.max_new_tokens: must be in \[1, 256\], got 1000"),
        ({"top_k": 5}, r"generation.top_k: unknown key; valid keys here: max_new_tokens, samples, seed, temperature"),
    ]:
        with pytest.raises(SpecError, match=message):
            parse_study({"name": "t", "protocols": ["sampled"], "generation": table}, source="t.toml")
    with pytest.raises(SpecError, match=r"t.toml: generation.samples: is set but no free-text protocol is scored"):
        parse_study({"name": "t", "generation": {"samples": 3}}, source="t.toml")


def test_free_text_protocols_on_smollm2(tmp_path, capsys):
    """A few items on the real embedded model: it runs, and prompts = parsed + unparsed everywhere."""
    n_items, seeds, samples = 3, (0,), 2  # small: every prompt is up to 8 decode steps per answer
    study = write_study(tmp_path / "gen.toml", {
        "name": "gen", "output_dir": str(tmp_path / "reports"), "models": ["smollm2"], "seeds": list(seeds),
        "null_baselines": False, "protocols": ["strict", "generative", "sampled"]},
        data={"bbq": str(SAMPLE_BBQ), "n_items": n_items}, compression={"variants": ["magnitude@0.2"]},
        execution={"batch_size": 8}, generation={"max_new_tokens": 8, "samples": samples, "temperature": 0.3})
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "reports" / "gen"
    records = merged_records(run_dir)
    per_protocol = 2 * len(seeds) * n_items  # (dense, magnitude@0.2) x seeds x items
    assert records.groupby("protocol").size().to_dict() == {"strict": per_protocol, "generative": per_protocol,
                                                            "sampled": per_protocol}
    text = records[records["protocol"].isin(["generative", "sampled"])]
    assert set(text.loc[text["protocol"] == "generative", "n_samples"]) == {1}
    assert set(text.loc[text["protocol"] == "sampled", "n_samples"]) == {samples}
    assert ((text["chosen"] < 0) == (text["n_parsed"] == 0)).all()

    view = RunView.load(run_dir, n_boot=50)
    table = view.generation.set_index(["protocol", "variant"])
    for (protocol, variant), row in table.iterrows():
        sel = text[(text["protocol"] == protocol) & (text["variant"] == variant)]
        assert row["n_records"] == len(sel) == len(seeds) * n_items
        assert row["n_unparsed"] == int((sel["chosen"] < 0).sum())
        assert row["n_compared"] == len(sel) - row["n_unparsed"]  # every prompt also has its strict answer
    assert len(table) == 4
    # The free-text protocol as the analysis: its parsed rows only, with verdicts like any protocol.
    generative = RunView.load(run_dir, n_boot=50, protocol="generative")
    parsed = text[(text["protocol"] == "generative") & (text["chosen"] >= 0)]
    assert len(generative.records) == len(parsed) and (generative.records["chosen"] >= 0).all()
    assert [v.variant for v in generative.verdicts] == ["magnitude@0.2"]
    report = (run_dir / "report.md").read_text()
    assert "## Letters vs free text" in report
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {r["protocol"] for r in summary["generation"]} == {"generative", "sampled"}
    descriptor = json.loads(next((run_dir / "units").glob("dense*.json")).read_text())
    assert descriptor["text_prompt"] == "bbq-text-v1"
    assert descriptor["generative_unparsed"] == int(((text["variant"] == "dense") & (text["protocol"] == "generative")
                                                     & (text["chosen"] < 0)).sum())
