"""Every committed study file parses (keys, specs, seeds and protocols checked) and points at what it says."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.study.spec import load_study

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted([*(ROOT / "studies").glob("*.toml"), *(ROOT / "docs" / "findings").glob("*.toml")])


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_study_file_parses(path):
    study = load_study(path)
    assert study.variants and study.seeds
    if study.data.bbq:  # the shared data beside the checkout, wherever the file sits
        assert study.path(study.data.bbq) == Path(os.path.normpath(ROOT.parent / "shared" / "bbq"))


def test_findings_studies_use_the_models_get_models_assembles():
    from tests.findings.test_get_models import SCRIPT

    names = {p.name for p in (ROOT / "docs" / "findings").glob("*.toml")}
    assert {"smollm2.toml", "gemma3.toml", "qwen2.5-coder-1.5b.toml"} <= names
    text = SCRIPT.read_text()
    for name in ("gemma3.toml", "qwen2.5-coder-1.5b.toml"):
        (model,) = load_study(ROOT / "docs" / "findings" / name).models
        assert Path(model).name in text  # the file get_models.py writes


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "findings").glob("*.toml")), ids=lambda p: p.stem)
def test_committed_findings_keep_their_study_hash(path):
    """A new study setting must keep the hash of studies written before it (its default left out of the
    hash), or every committed run is refused and its units redone."""
    import json

    manifest = path.parent / path.stem / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is not committed")
    assert load_study(path).hash == json.loads(manifest.read_text())["study"]["hash"]


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "findings").glob("*.toml")), ids=lambda p: p.stem)
def test_committed_findings_read_as_complete(path):
    """A change to what units write (a new descriptor field, a new file) must leave runs written before it
    complete and undamaged, as `auditor status` and the report read them."""
    from auditor.data.rundir import COMPLETE, run_status

    run = path.parent / path.stem
    if not (run / "manifest.json").is_file():
        pytest.skip(f"{run} is not committed")
    status = run_status(run)
    assert status.state == COMPLETE and not status.missing and not status.problems, (status.problems, status.detail)
