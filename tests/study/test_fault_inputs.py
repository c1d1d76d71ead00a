"""The fault catalogue, input side: model problems before a run directory exists, closed pipes,
fewer items than asked, the sample's banner, spec spelling, `audit`'s flags, duplicate item ids."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.cli import EXIT_BROKEN_PIPE, main
from auditor.core.errors import DataError
from auditor.core.names import variant_id
from auditor.data.bbq import select_items
from auditor.data.sources import SAMPLE_BBQ, resolve_bbq
from auditor.study.runner import plan_study
from auditor.study.spec import load_study, parse_study
from tests.helpers_runs import ROOT, build_run

AGE = SAMPLE_BBQ / "Age.jsonl"


def _one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditor: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


# --- model problems: one line, exit 2, no run directory ---------------------------------------------------

def _model_dir(tmp_path: Path, config: str | None, weights: tuple[str, ...] = ("model.safetensors",)) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    for name in weights:
        (folder / name).write_bytes(b"\0" * 16)
    return folder


BAD_MODELS = {
    "invalid JSON": ('{"model_type": "llama",', ("model.safetensors",), "config.json: invalid JSON"),
    "not an object": ("[1]", ("model.safetensors",), "config.json: expected a JSON object, got list"),
    "stray safetensors, no weights": ('{"model_type": "llama"}', ("adapter.safetensors",),
                                      "no weights (model.safetensors or model.safetensors.index.json); "
                                      "found only adapter.safetensors"),
    "unsupported architecture": ('{"model_type": "martian", "architectures": ["MartianForCausalLM"]}',
                                 ("model.safetensors",),
                                 "unsupported architecture: architecture 'martian' (MartianForCausalLM)"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_is_refused_before_a_run_directory_exists(case, small_study, capsys, tmp_path):
    config, weights, fragment = BAD_MODELS[case]
    folder = _model_dir(tmp_path, config, weights)
    code = main(["run", str(small_study("bad", extra_top={"models": [str(folder)]}))])
    _one_error_line(code, capsys.readouterr().err, str(folder), fragment)
    assert not (tmp_path / "reports" / "bad").exists()


def test_bad_model_config_in_compress_and_audit(capsys, tmp_path, monkeypatch):
    folder = _model_dir(tmp_path, "[1]")
    code = main(["compress", "magnitude@0.5", "--model", str(folder), "--out", str(tmp_path / "out")])
    _one_error_line(code, capsys.readouterr().err, "config.json: expected a JSON object")
    assert not (tmp_path / "out").exists()
    monkeypatch.chdir(tmp_path)
    code = main(["audit", "--model", str(folder), "--run", "bad", "--reports", "reports"])
    _one_error_line(code, capsys.readouterr().err, "config.json: expected a JSON object")
    assert not (tmp_path / "reports" / "bad").exists()


def test_sharded_weights_with_a_missing_shard(small_study, capsys, tmp_path):
    folder = _model_dir(tmp_path, '{"model_type": "llama"}', ("model-00001-of-00002.safetensors",))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    code = main(["run", str(small_study("bad", extra_top={"models": [str(folder)]}))])
    _one_error_line(code, capsys.readouterr().err, "weight shard(s) missing: model-00002-of-00002.safetensors")


# --- closed stdout: quiet, exit 141 -----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["status", "gate", "report"])
def test_closed_stdout_ends_quietly(command, tmp_path):
    run_dir = build_run(tmp_path)
    args = {"status": ["status", str(run_dir)], "gate": ["gate", str(run_dir), "--max-flip-rate", "0.9"],
            "report": ["report", str(run_dir)]}[command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "auditor.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()  # the reader is gone before the command writes: `auditor status RUN | true`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == EXIT_BROKEN_PIPE, err
    assert err == ""


# --- say what was done -----------------------------------------------------------------------------------

def test_fewer_items_than_asked_is_a_warning_with_both_numbers(small_study, caplog):
    caplog.set_level(logging.WARNING, logger="auditor.data.bbq")
    selection = select_items([AGE], n=1000)
    n = len(selection.items)
    assert n < 1000 and f"asked for 1000 items, only {n} available" in caplog.text
    plan = plan_study(load_study(small_study("short", n_items=1000)))[0]
    total = len(plan.selection.items)
    assert any(f"asked for 1000 items, only {total} available" in note and f"scored {total}" in note
               for note in plan.notes)


def test_the_fixture_sample_keeps_its_banner_however_it_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    link = tmp_path / "linked"
    link.symlink_to(SAMPLE_BBQ)
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLE_BBQ, copy)
    for given in ("fixtures/bbq_sample", "fixtures/bbq_sample/", "./fixtures/../fixtures/bbq_sample",
                  str(link), str(copy), str(AGE), str(copy / "Age.jsonl")):
        source = resolve_bbq(given)
        assert source.is_sample and "NOT BBQ" in source.origin, given
    monkeypatch.setenv("AUDITOR_BBQ_DIR", "fixtures/bbq_sample")
    assert resolve_bbq(None).is_sample
    (copy / "Age.jsonl").write_text(AGE.read_text().replace("grandfather", "grandmother", 1))
    assert resolve_bbq(str(copy)).is_sample  # an edited copy still holds sample items (issue 32, M13)
    for name in [p.name for p in copy.glob("*.jsonl")]:  # items without the sample's mark: not the sample
        (copy / name).write_text((copy / name).read_text().replace("auditor fixture (not BBQ)", "elsewhere"))
    assert not resolve_bbq(str(copy)).is_sample


def test_specs_are_normalised_before_they_are_hashed(tmp_path):
    def study(*variants: str):
        return parse_study({"name": "s", "compression": {"variants": list(variants)}}, base_dir=str(tmp_path))

    spaced, tight = study("magnitude@0.5 + wanda@0.5", "magnitude @0.5"), study("magnitude@0.5+wanda@0.5",
                                                                                  "magnitude@0.5")
    assert spaced.variants == tight.variants == ("dense", "magnitude@0.5+wanda@0.5", "magnitude@0.5")
    assert spaced.hash == tight.hash
    assert variant_id("magnitude@0.5 + wanda@0.5") == variant_id("magnitude@0.5+wanda@0.5")
    # The same spec spelled twice is one variant.
    assert study("magnitude@0.5", " magnitude @ 0.5 ").variants == ("dense", "magnitude@0.5")


@pytest.mark.parametrize("flags, named", [
    (["--categories", "Martian"], "auditor audit: --categories: unknown category 'Martian'"),
    (["--variant", "wandaa@0.5"], "auditor audit: --variant: unknown compressor 'wandaa'"),
    (["--seeds", "1,1"], "auditor audit: --seeds: seeds must be distinct"),
])
def test_audit_messages_name_its_flags(flags, named, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["audit", "--run", "x", *flags])
    err = capsys.readouterr().err
    _one_error_line(code, err, named)
    assert "data." not in err and "compression" not in err


def test_duplicate_item_id_names_file_and_line(tmp_path):
    lines = AGE.read_text().splitlines()
    bad = tmp_path / "Age.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], lines[0]]) + "\n")
    with pytest.raises(DataError) as info:
        select_items([bad])
    assert str(info.value).startswith(f"{bad}:3: duplicate item ")
    assert f"(first at {bad}:1)" in str(info.value)
