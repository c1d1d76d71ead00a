"""The demo study draws real BBQ when it sits beside the checkout, and says so; the fixture stays the fallback."""
from __future__ import annotations

import pytest

from auditor.data import fetch, sources
from auditor.study.runner import plan_study
from auditor.study.spec import load_study
from tests.conftest import ROOT

DEMO = ROOT / "studies" / "demo.toml"


@pytest.fixture
def no_fetched_copy(monkeypatch, tmp_path):
    monkeypatch.delenv(sources.BBQ_ENV, raising=False)
    monkeypatch.setattr(fetch, "user_bbq_dir", lambda: tmp_path / "never-fetched")


@pytest.mark.shared
def test_demo_plans_a_stratified_sample_of_real_bbq(shared_bbq, no_fetched_copy, monkeypatch):
    monkeypatch.setattr(sources, "SHARED_BBQ", shared_bbq)
    plan = plan_study(load_study(DEMO))[0]
    assert plan.data.path == shared_bbq and not plan.data.is_sample
    assert "beside the checkout" in plan.selection.origin and "regenerated" in plan.selection.origin
    counts = plan.selection.counts
    assert sum(counts.values()) == 80
    assert {k.split("/")[1] for k in counts} == {"ambig", "disambig"}
    assert len({k.split("/")[0] for k in counts}) == 9  # every category of the release


def test_demo_falls_back_to_the_fixture_sample(no_fetched_copy, monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "SHARED_BBQ", tmp_path / "no-shared")
    plan = plan_study(load_study(DEMO))[0]
    assert plan.data.is_sample and "NOT BBQ" in plan.selection.origin
