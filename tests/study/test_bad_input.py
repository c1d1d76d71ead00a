"""Every bad input, end to end through `auditor run`: one clear message, exit code 2, nothing looking complete.

Each test runs the CLI in-process and asserts the message names the file, line
or option, the exit code is 2, and no finished-looking result is left behind.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest

from auditor.cli import main
from auditor.commands.gate import EXIT_INCOMPLETE
from tests.conftest import SAMPLE_BBQ
from tests.study.conftest import write_study

AGE_LINES = (SAMPLE_BBQ / "Age.jsonl").read_text().splitlines()


def _run(capsys, study: Path, *extra: str) -> tuple[int, str]:
    code = main(["run", str(study), *extra])
    return code, capsys.readouterr().err


def _bbq_dir(tmp_path: Path, lines: list[str], name: str = "Age.jsonl") -> Path:
    folder = tmp_path / "bbq"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def _edited(line: str, **changes) -> str:
    raw = json.loads(line)
    for key, value in changes.items():
        if value is None:
            del raw[key]
        else:
            raw[key] = value
    return json.dumps(raw)


def _assert_nothing_written(tmp_path: Path, name: str) -> None:
    assert not (tmp_path / "reports" / name).exists()


def _assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    # One message, on one line, last (a model loader's progress bar may come before it).
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("auditor: error: "), err
    assert err.rstrip("\n").splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], err


def test_malformed_jsonl_line(small_study, capsys, tmp_path):
    bbq = _bbq_dir(tmp_path, [AGE_LINES[0], AGE_LINES[1][:-20], AGE_LINES[2]])
    code, err = _run(capsys, small_study("bad", data={"bbq": str(bbq)}))
    _assert_refused(code, err, f"{bbq / 'Age.jsonl'}:2: malformed JSON")
    _assert_nothing_written(tmp_path, "bad")


def test_missing_field(small_study, capsys, tmp_path):
    bbq = _bbq_dir(tmp_path, [AGE_LINES[0], AGE_LINES[1], _edited(AGE_LINES[2], label=None)])
    code, err = _run(capsys, small_study("bad", data={"bbq": str(bbq)}))
    _assert_refused(code, err, f"{bbq / 'Age.jsonl'}:3: missing field(s) label")
    _assert_nothing_written(tmp_path, "bad")


def test_unknown_category_in_the_data(small_study, capsys, tmp_path):
    bbq = _bbq_dir(tmp_path, [_edited(AGE_LINES[0], category="Martian"), AGE_LINES[1]])
    code, err = _run(capsys, small_study("bad", data={"bbq": str(bbq)}))
    _assert_refused(code, err, f"{bbq / 'Age.jsonl'}:1: unknown category 'Martian'")
    _assert_nothing_written(tmp_path, "bad")


def test_unknown_category_in_the_study(small_study, capsys, tmp_path):
    study = small_study("bad", data={"bbq": str(SAMPLE_BBQ), "categories": ["Age", "Martian"]})
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{study}: data.categories: unknown category 'Martian'; valid: Age")
    _assert_nothing_written(tmp_path, "bad")


def test_empty_selection(small_study, capsys, tmp_path):
    disambig = [line for line in AGE_LINES if '"context_condition": "disambig"' in line]
    bbq = _bbq_dir(tmp_path, disambig)
    code, err = _run(capsys, small_study("bad", data={"bbq": str(bbq), "condition": "ambig"}))
    _assert_refused(code, err, f"{bbq / 'Age.jsonl'}: selection is empty")
    _assert_nothing_written(tmp_path, "bad")


def test_unknown_compressor(small_study, capsys, tmp_path):
    study = small_study("bad", variants=("magnitude@0.5", "wandaa@0.5"))
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{study}: compression: unknown compressor 'wandaa' in 'wandaa@0.5'",
                    "Did you mean wanda", "Valid:")
    _assert_nothing_written(tmp_path, "bad")


def test_level_out_of_range(small_study, capsys, tmp_path):
    study = small_study("bad", variants=("magnitude@1.5",))
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{study}: compression: 'magnitude@1.5': sparsity 1.5 is outside [0, 1)")
    _assert_nothing_written(tmp_path, "bad")


def test_missing_model(small_study, capsys, tmp_path):
    study = small_study("bad", extra_top={"models": [str(tmp_path / "no-such-model")]})
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{tmp_path / 'no-such-model'}: no such model file or directory")
    _assert_nothing_written(tmp_path, "bad")


def test_unsupported_model_pickled_weights(small_study, capsys, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    code, err = _run(capsys, small_study("bad", extra_top={"models": [str(folder)]}))
    _assert_refused(code, err, f"{folder}: no weights (model.safetensors or model.safetensors.index.json)",
                    "(pickled .bin weights are not loaded)")
    _assert_nothing_written(tmp_path, "bad")


def test_unsupported_model_file(small_study, capsys, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"ONNX....")
    code, err = _run(capsys, small_study("bad", extra_top={"models": [str(path)]}))
    _assert_refused(code, err, f"{path}: not a GGUF file (magic b'ONNX') nor an HF directory")
    _assert_nothing_written(tmp_path, "bad")


@pytest.fixture(scope="module")
def truncated_gguf(tmp_path_factory) -> Path:
    from auditor.artifacts.models import embedded_default_path

    data = embedded_default_path().read_bytes()
    path = tmp_path_factory.mktemp("gguf") / "truncated.gguf"
    path.write_bytes(data[: len(data) // 2])  # header and metadata intact, tensor data cut
    return path


def test_truncated_gguf_model(small_study, capsys, tmp_path, truncated_gguf):
    code, err = _run(capsys, small_study("bad", extra_top={"models": [str(truncated_gguf)]}))
    _assert_refused(code, err, f"{truncated_gguf}: unreadable GGUF")
    _assert_nothing_written(tmp_path, "bad")


def test_truncated_gguf_variant_in_llama_cpp_is_a_model_error(tmp_path, truncated_gguf):
    """A GGUF variant file cut short fails with ModelError, not a raw gguf or llama.cpp exception."""
    from auditor.core.errors import ModelError
    from auditor.core.names import LLAMA_CPP
    from auditor.scoring.backends.factory import available, make_backend
    from compressors.base import Variant

    if not available(LLAMA_CPP):
        pytest.skip("llama.cpp backend modules are not importable")
    variant = Variant("gguf-q8_0", model=None, gguf_path=truncated_gguf)
    with pytest.raises(ModelError, match=r"truncated.gguf: unreadable GGUF"):
        make_backend(variant, LLAMA_CPP, tokenizer=None, batch_size=1, pad_id=0, workdir=tmp_path)


def test_output_directory_under_a_regular_file(small_study, capsys, tmp_path):
    """A path below a regular file cannot be created (ENOTDIR), for root too."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    study = small_study("bad", extra_top={"output_dir": str(blocker / "reports")})
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{blocker / 'reports' / 'bad'}: output directory is not writable (Not a directory)",
                    f"check output_dir in {study}")
    assert blocker.read_text() == "not a folder"


def test_output_directory_not_writable(small_study, capsys, tmp_path, monkeypatch):
    """A read-only folder, simulated: tests run as root, which ignores permission bits, so the
    write probe is made to fail with EACCES as it would for a normal user on a chmod 0o500 folder."""
    original = Path.write_text

    def deny(self, *args, **kwargs):
        if ".write-test" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", deny)
    study = small_study("bad")
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{tmp_path / 'reports' / 'bad'}: output directory is not writable (Permission denied)")
    assert not list((tmp_path / "reports" / "bad").glob("*.json"))


def test_disk_full_while_writing_records(small_study, capsys, tmp_path, monkeypatch):
    """ENOSPC simulated inside the Parquet writer after part of the file is written: the unit is
    not marked finished, its temp file is removed, the run says failed, and a re-run completes it."""
    original = pd.DataFrame.to_parquet
    calls = {"n": 0}

    def full_disk(self, path, *args, **kwargs):
        if Path(path).parent.name == "records":
            calls["n"] += 1
            if calls["n"] == 2:  # the first unit is written, the second hits a full disk
                Path(path).write_bytes(b"PAR1" + b"\0" * 100)
                raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    study = small_study("full", variants=("magnitude@0.5",))
    run_dir = tmp_path / "reports" / "full"
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{run_dir / 'records'}/magnitude_0.5-", ".parquet: cannot write (No space left on device)")
    records = sorted(p.name for p in (run_dir / "records").iterdir())
    assert len(records) == 1 and records[0].startswith("dense-")  # no temp file, no partial file
    assert not (run_dir / "report.md").exists()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "failed" and "No space left on device" in state["error"]
    assert main(["status", str(run_dir)]) == 0
    assert "units: 1/2 finished" in capsys.readouterr().out
    assert main(["gate", str(run_dir), "--max-flip-rate", "1"]) == EXIT_INCOMPLETE  # nothing half-counted

    monkeypatch.setattr(pd.DataFrame, "to_parquet", original)
    code, err = _run(capsys, study)
    assert code == 0, err
    assert len(list((run_dir / "records").glob("*.parquet"))) == 2 and (run_dir / "report.md").is_file()


def test_changed_study_hash_is_refused_without_force(small_study, capsys, tmp_path):
    run_dir = tmp_path / "reports" / "same"
    (run_dir).mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"study": {"hash": "0" * 64}, "fingerprints": {}}))
    code, err = _run(capsys, small_study("same", variants=()))
    _assert_refused(code, err, f"{run_dir}: holds a run of a different study (study hash 000000000000",
                    "use --force")
    assert not (run_dir / "records").exists()


@pytest.mark.parametrize("text, fragment", [
    ('name = "x"\nseeds = [0,, 1]\n', "invalid TOML: Invalid value (at line 2, column 12)"),
    ('name = "x"\n[data]\nn_itmes = 5\n', "data.n_itmes: unknown key; valid keys here:"),
    ('name = "x"\ntrust_remote_code = true\n', "trust_remote_code: unknown key (remote model code is enabled "
                                               "only by the CLI flag --trust-remote-code)"),
    ('name = "x"\n[execution]\nshards = 0\n', "execution.shards: must be positive, got 0"),
])
def test_bad_study_file(tmp_path, capsys, text, fragment):
    study = tmp_path / "study.toml"
    study.write_text(text)
    code, err = _run(capsys, study)
    _assert_refused(code, err, f"{study}: {fragment}")


def test_missing_study_file(tmp_path, capsys):
    code, err = _run(capsys, tmp_path / "nope.toml")
    _assert_refused(code, err, f"{tmp_path / 'nope.toml'}: no such study file")


def test_ray_executor_without_ray_is_a_clear_error(small_study, capsys, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, err = _run(capsys, small_study("bad"), "--executor", "ray")
    _assert_refused(code, err, 'execution.executor = "ray" needs Ray, an optional extra',
                    "pip install 'compression-risk-auditor[ray]'")
    _assert_nothing_written(tmp_path, "bad")


def test_write_study_helper_round_trips(tmp_path):
    path = write_study(tmp_path / "s.toml", {"name": 'quote"d', "seeds": [0, 1]}, data={"n_items": 3})
    from auditor.study.spec import load_study

    study = load_study(path)
    assert study.name == 'quote"d' and study.seeds == (0, 1) and study.data.n_items == 3
