"""`auditor card RUN VARIANT`: a model card whose model-index the Hub's own parser reads back."""
from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from auditor.cli import main
from auditor.report.card import model_card
from auditor.view.run import RunView
from tests.helpers_runs import PLANTED_HIGH, build_run


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    return RunView.load(build_run(tmp_path_factory.mktemp("reports")), n_boot=100)


def test_card_front_matter_parses_and_carries_the_run_figures(view):
    text = model_card(view, PLANTED_HIGH)
    card = ModelCard(text)  # huggingface_hub parses the YAML front matter and the model-index
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    row = view.overview.set_index("variant").loc[PLANTED_HIGH]
    assert results["BBQ accuracy (all items)"] == pytest.approx(row["accuracy"])
    assert results["directed shift toward the stereotype vs the uncompressed model"] == pytest.approx(
        row["directed_shift"])
    assert {r.dataset_type for r in card.data.eval_results} == {"nyu-mll/BBQ"}
    assert "**Grade: HIGH**" in text and "### Limitations" in text and "U.S. English" in text
    assert "dequantized" in text  # the reference precision is part of the provenance


def test_card_command_writes_and_refuses_unknown_variants(view, tmp_path, capsys):
    out = tmp_path / "card.md"
    assert main(["card", str(view.run_dir), "rtn@4", "--out", str(out)]) == 0
    assert ModelCard(out.read_text()).data.eval_results
    assert main(["card", str(view.run_dir), "nope@0.5"]) == 2
    err = capsys.readouterr().err
    assert "no compressed variant 'nope@0.5'" in err and "rtn@4 [torch]" in err
