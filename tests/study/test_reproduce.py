"""Acceptance (issue 30): the report's reproduce command, run in a fresh folder with the study text the manifest
embeds and the same model and data files, recreates the same item records; every sha256 is full and right."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from auditor.cli import main
from auditor.data.rundir import merged_records
from auditor.study.reproduce import reproduce_command
from tests.conftest import FIXTURE_CORPUS, SAMPLE_BBQ
from tests.study.conftest import write_study

SHA256 = re.compile(r"\b[0-9a-f]{64}\b")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_shell_line(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a recorded `[VAR=value ...] auditor run ...` line as a user would, with this interpreter's auditor."""
    words = shlex.split(line)
    env = dict(os.environ)
    while words and re.match(r"^[A-Z_]+=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[:2] == ["auditor", "run"], line
    return subprocess.run([sys.executable, "-m", "auditor.cli", *words[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_reproduce_command_recreates_the_records(tmp_path, tiny_model_dir, monkeypatch, capsys):
    first = tmp_path / "first"
    first.mkdir()
    # Relative output_dir: the study's paths start at its own folder, so a copy elsewhere writes its own run.
    write_study(first / "small.toml", {"name": "small", "output_dir": "reports", "models": [str(tiny_model_dir)],
                                       "seeds": [0, 1], "null_baselines": False},
                data={"bbq": str(SAMPLE_BBQ), "n_items": 12}, compression={"variants": ["magnitude@0.5"]},
                execution={"batch_size": 8}, perplexity={"corpus": str(FIXTURE_CORPUS), "max_tokens": 128})
    monkeypatch.chdir(first)
    assert main(["run", "small.toml"]) == 0
    run_dir = first / "reports" / "small"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rep = manifest["reproduce"]

    # The command and the study file, with its full sha256 and its text.
    assert rep["command"] == reproduce_command("small.toml")
    assert rep["working_dir"] == str(first)
    assert rep["study_file"]["sha256"] == _sha(first / "small.toml")
    assert rep["study_file"]["text"] == (first / "small.toml").read_text()
    # Every input file with the sha256 of its bytes: the whole model folder, the BBQ files read, the corpus.
    files = rep["files"]
    model_files = sorted(p for p in tiny_model_dir.rglob("*") if p.is_file())
    assert [r["path"] for r in files["model"]] == [str(p) for p in model_files]
    assert any(p.suffix == ".safetensors" for p in model_files) and any(p.name == "config.json" for p in model_files)
    assert [r["sha256"] for r in files["model"]] == [_sha(p) for p in model_files]
    assert [r["path"] for r in files["bbq"]] == manifest["data"]["files"]
    assert all(r["sha256"] == _sha(Path(r["path"])) for r in files["bbq"])
    assert files["perplexity_corpus"] == [{"path": str(FIXTURE_CORPUS), "size_bytes": FIXTURE_CORPUS.stat().st_size,
                                           "sha256": _sha(FIXTURE_CORPUS)}]
    assert "calibration_corpus" not in files  # magnitude pruning reads no calibration text

    # The report prints the command and every digest whole.
    for name in ("report.md", "report.html"):
        text = (run_dir / name).read_text()
        assert rep["command"] in text, name
        digests = set(SHA256.findall(text))
        wanted = {r["sha256"] for role in files.values() for r in role} | {rep["study_file"]["sha256"]}
        assert wanted <= digests, (name, wanted - digests)

    # A fresh folder with the embedded study text and the same model and data paths.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "small.toml").write_text(rep["study_file"]["text"])
    assert _sha(fresh / "small.toml") == rep["study_file"]["sha256"]
    res = _run_shell_line(rep["command"], fresh)
    assert res.returncode == 0, res.stderr[-3000:]
    again = fresh / "reports" / "small"
    assert json.loads((again / "manifest.json").read_text())["study"]["hash"] == manifest["study"]["hash"]
    before, after = merged_records(run_dir), merged_records(again)
    assert len(before) == 2 * 12 * 2  # dense + one variant, 12 items, 2 seeds
    pd.testing.assert_frame_equal(before, after)  # records carry no wall time: every column must match
