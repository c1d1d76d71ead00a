"""The fault catalogue of issue #32 (../shared/reviews/reliability.md): one test per case, each failing on the
code before the fix.

Every case is a finished run damaged one way (tests/helpers_faults.build_planned_run: a run with planned
units and commit records, built without a model in milliseconds), or a bad input, and what the commands
must then do: no traceback, one line naming the file or option, the documented exit code (docs/study.md),
and a gate that never passes what it did not measure.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.text import Text

from auditor.cli import main
from auditor.commands.gate import EXIT_INCOMPLETE, EXIT_INVALID_REFERENCE
from auditor.commands import run as run_command
from auditor.core.errors import AuditorError
from auditor.data import rundir
from auditor.data.rundir import run_lock, run_status
from tests.helpers_faults import add_report, build_planned_run, unit_files
from tests.helpers_runs import build_run
from tests.study import conftest as study_fixtures
from tests.study.conftest import write_study

small_study, tiny_model_dir = study_fixtures.small_study, study_fixtures.tiny_model_dir  # the study tests' fixtures

GATE = ("--max-flip-rate", "0.9", "--accept-invalid-reference")


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, *names: str) -> None:
    """stderr is exactly one `auditor: error:` line naming each of `names` (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditor: error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, err)


def junit_failures(path: Path) -> dict[str, str]:
    suite = ET.parse(path).getroot().find("testsuite")
    return {case.get("name"): case.find("failure").get("type") for case in suite.iter("testcase")
            if case.find("failure") is not None}


def edit_manifest(run: Path, **changes) -> None:
    """Change manifest fields as a hand-made or older manifest would have them (no seal: nothing to check it
    against), so the field checks themselves are what is tested."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.pop(rundir.SEAL)
    manifest.update(changes)
    (run / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def run(tmp_path) -> Path:
    return build_planned_run(tmp_path / "reports", variants=("magnitude@0.5", "rtn@4"))


# --- HIGH ------------------------------------------------------------------------------------------------------


def test_the_intact_planned_run_passes(run, capsys):
    """The yardstick of the cases below: the same run undamaged is complete and its gate passes."""
    assert run_status(run).is_complete
    code, out, _ = cli(capsys, "gate", run, *GATE)
    assert code == 0, out
    assert "complete: 3 of 3 units finished and verified" in out and "2 of 2 variants pass" in out


def test_h2_a_planned_variant_never_scored_fails_the_gate_even_with_allow_incomplete(run, tmp_path, capsys):
    for path in unit_files(run, "rtn@4"):  # killed before its unit ran: no records, no variants/ file
        path.unlink(missing_ok=True)
    junit = tmp_path / "gate.xml"
    code, out, _ = cli(capsys, "gate", run, *GATE, "--allow-incomplete", "--junit", junit)
    assert code == EXIT_INCOMPLETE, out
    assert "NOT JUDGED rtn@4 [torch]: no finished unit (pending)" in out
    assert "1 of 2 variants pass (1 planned variant(s) not judged)" in out
    assert junit_failures(junit) == {"rtn@4 [torch]": "NotJudged"}


def test_m1_a_missing_dense_reference_fails_closed_even_with_allow_incomplete(run, tmp_path, capsys):
    for path in unit_files(run, "dense"):
        path.unlink(missing_ok=True)
    junit = tmp_path / "gate.xml"
    code, out, _ = cli(capsys, "gate", run, "--min-accuracy", "0.1", "--allow-incomplete", "--junit", junit)
    assert code == EXIT_INCOMPLETE, out
    assert "FAIL dense reference on torch not scored (pending)" in out
    assert junit_failures(junit)["dense reference validity"] == "MissingReference"
    # accepting an invalid reference is not accepting a missing one
    code, out, _ = cli(capsys, "gate", run, *GATE, "--allow-incomplete")
    assert code == EXIT_INCOMPLETE, out


def test_m1_a_run_with_no_dense_records_has_no_reference_to_check(tmp_path, capsys):
    run = build_run(tmp_path, "nodense", variants=("magnitude@0.5",))  # a hand-made run: no planned units
    (run / "records" / next(p.name for p in (run / "records").glob("dense*"))).unlink()
    code, out, _ = cli(capsys, "gate", run, "--min-accuracy", "0.1")
    assert code == EXIT_INVALID_REFERENCE, out
    assert "dense reference validity not checked: the run has no finished dense records" in out


@pytest.mark.parametrize("flag", ["--max-flip-rate", "--max-srs-increase", "--max-shift-q", "--max-unknown-drop",
                                  "--min-accuracy", "--max-accuracy-drop", "--max-mcnemar-q"])
@pytest.mark.parametrize("value", ["nan", "inf", "1.5", "1e309"])
def test_h3_m2_l6_a_threshold_flag_that_is_not_a_fraction_is_bad_input(run, capsys, flag, value):
    code, out, err = cli(capsys, "gate", run, f"{flag}={value}", "--accept-invalid-reference")
    assert code == 2 and out == ""
    shown = "--max-shift-q" if flag == "--max-mcnemar-q" else flag
    one_line_error(err, shown)


def test_h3_m3_a_nan_threshold_in_a_study_fails_when_the_study_is_read(tmp_path, run, capsys):
    out_dir = tmp_path / "out"
    study = write_study(tmp_path / "nan.toml", {"name": "nanthr", "output_dir": str(out_dir), "models": ["smollm2"]},
                        compression={"variants": ["magnitude@0.5"]}, thresholds={"max_shift_q": float("nan")})
    code, _, err = cli(capsys, "run", study)
    assert code == 2
    one_line_error(err, "nan.toml", "max_shift_q")
    assert not out_dir.exists()  # refused before any run directory exists
    code, _, err = cli(capsys, "gate", run, "--study", study)
    assert code == 2
    one_line_error(err, "max_shift_q")
    # a run made before the fix stored the NaN as null: its manifest is bad input, named
    edit_manifest(run, thresholds={"max_shift_q": None})
    code, _, err = cli(capsys, "gate", run, "--max-flip-rate", "0.5")
    assert code == 2
    one_line_error(err, "manifest.json", "max_shift_q")


def test_h3_a_study_threshold_out_of_range_names_the_study_not_a_flag(tmp_path, run, capsys):
    study = write_study(tmp_path / "neg.toml", {"name": "neg"}, compression={"variants": ["magnitude@0.5"]},
                        thresholds={"max_flip_rate": -1.0})
    code, _, err = cli(capsys, "gate", run, "--study", study)
    assert code == 2
    one_line_error(err, "neg.toml", "max_flip_rate")
    assert "--max-flip-rate" not in err


def test_h1_a_report_written_while_the_run_goes_is_marked_and_rewritten_when_it_finishes(run, capsys):
    commit = unit_files(run, "rtn@4")[2]
    saved = commit.read_bytes()
    commit.unlink()  # rtn@4 is still being scored
    state = run / "state.json"
    state.write_text(json.dumps({"state": "running", "pid": 1}))
    with run_lock(run):
        code, out, err = cli(capsys, "report", run)
        assert code == 0
        assert "is being run" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["completeness"]["state"] == "running" and summary["completeness"]["n_finished"] == 2
    assert "incomplete: 2 of 3 units finished (running)" in (run / "report.md").read_text()
    commit.write_bytes(saved)  # the unit commits, the run ends
    state.write_text(json.dumps({"state": "complete", "pid": 1}))
    assert run_command.stale_report(run) == "written when the run was running"
    run_command.report_missing([run])  # what `auditor run` / `auditor audit` call at the end, on a finished run too
    summary = json.loads((run / "summary.json").read_text())
    assert summary["completeness"]["state"] == "complete" and summary["completeness"]["n_finished"] == 3
    assert "incomplete" not in (run / "report.md").read_text().split("\n## ")[0]
    assert run_command.stale_report(run) == ""


# --- MEDIUM: damaged run files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", [("model", "name", "other"), ("data", "n_items", 3), ("config", "seeds", [0])])
def test_an_edited_manifest_differs_from_its_seal(run, capsys, edit):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps(manifest, indent=4))  # re-formatted, same content: still sealed
    assert cli(capsys, "gate", run, *GATE)[0] == 0
    manifest[edit[0]][edit[1]] = edit[2]
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for command in (("status",), ("report",), ("gate", *GATE)):
        code, _, err = cli(capsys, command[0], run, *command[1:])
        assert code == 2, command
        one_line_error(err, "manifest.json", "differs from its seal")


@pytest.mark.parametrize("units", [[{"kind": "score"}], 5, [1], {"a": 1}, [{"kind": "score", "variant": "dense",
                                   "spec": "dense", "backend": "../x", "shard": 0, "n_shards": 1, "key": "k"}]])
def test_m8_malformed_manifest_units_give_one_line_exit_2(run, capsys, units):
    edit_manifest(run, units=units)
    for command in (("status",), ("report",), ("gate", *GATE)):
        code, _, err = cli(capsys, command[0], run, *command[1:])
        assert code == 2, command
        one_line_error(err, "manifest.json", "units")


@pytest.mark.parametrize("field,value", [("notes", 5), ("protocols", "strict"), ("thresholds", [1]),
                                         ("model", "str"), ("study", [1, 2])])
def test_m8_l5_malformed_manifest_fields_give_one_line_exit_2(run, capsys, field, value):
    edit_manifest(run, **{field: value})
    for command in (("status",), ("report",), ("gate", *GATE)):
        code, _, err = cli(capsys, command[0], run, *command[1:])
        assert code == 2, command
        one_line_error(err, "manifest.json", repr(field))


@pytest.mark.parametrize("content", [b"{}", b"[1]", b"\xff\xfe{", b""])
def test_m9_a_malformed_failure_record_is_named_and_fails_the_gate(run, capsys, content):
    (run / "failed").mkdir(exist_ok=True)
    (run / "failed" / "score__x.json").write_bytes(content)
    code, out, err = cli(capsys, "status", run)
    assert code == 0 and err == ""
    assert "failed/score__x.json" in out and "state: incomplete" in out
    junit = run.parent / "gate.xml"
    code, out, _ = cli(capsys, "gate", run, *GATE, "--junit", junit)
    assert code == EXIT_INCOMPLETE and "failed/score__x.json" in out
    assert junit_failures(junit) == {"failed/score__x.json": "DamagedFile"}
    code, out, _ = cli(capsys, "gate", run, *GATE, "--allow-incomplete")  # a damaged run-level file is not waived
    assert code == EXIT_INCOMPLETE
    code, _, err = cli(capsys, "report", run)
    assert code == 0 and "failed/score__x.json" in (run / "report.md").read_text()


def test_m10_a_read_only_run_directory_is_read(run, capsys, monkeypatch, tmp_path):
    real_open = open

    def read_only(path, mode="r", *args, **kwargs):  # root ignores chmod: refuse writes as a ro mount does
        if any(c in mode for c in "wa+x") and Path(path).is_relative_to(run):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    (run / ".lock").write_text("")  # a copied run carries its lock file
    monkeypatch.setattr(rundir, "open", read_only, raising=False)
    code, out, _ = cli(capsys, "status", run)
    assert code == 0 and "state: complete" in out
    code, out, _ = cli(capsys, "gate", run, *GATE, "--junit", tmp_path / "gate.xml")
    assert code == 0, out


def test_m10_a_lock_that_is_a_folder_is_named(run, capsys):
    (run / ".lock").mkdir()
    for command in (("status",), ("report",), ("gate", *GATE)):
        code, _, err = cli(capsys, command[0], run, *command[1:])
        assert code == 2, command
        one_line_error(err, ".lock")
    with pytest.raises(AuditorError, match=r"\.lock: cannot open the run's lock file"):
        with run_lock(run):
            pass


@pytest.mark.parametrize("damage", ["delete", "flip", "truncate"])
def test_m14_items_parquet_is_verified(run, capsys, damage):
    items = run / "items.parquet"
    if damage == "delete":
        items.unlink()
    elif damage == "flip":
        data = bytearray(items.read_bytes())
        data[len(data) // 2] ^= 0x01
        items.write_bytes(bytes(data))
    else:
        items.write_bytes(items.read_bytes()[:100])
    code, out, _ = cli(capsys, "status", run)
    assert code == 0 and "items.parquet" in out and "state: incomplete" in out
    for command in (("report",), ("gate", *GATE, "--allow-incomplete")):
        code, _, err = cli(capsys, command[0], run, *command[1:])
        assert code == 2, command
        one_line_error(err, "items.parquet")
    assert not (run / "report.md").exists()  # never a report claiming "No item flipped"


def test_l4_a_commit_record_that_does_not_list_the_records_is_damaged(run, capsys):
    commit = unit_files(run, "rtn@4")[2]
    doc = json.loads(commit.read_text())
    doc["files"] = {}
    commit.write_text(json.dumps(doc))
    status = run_status(run)
    assert not status.is_complete
    assert [u.problem for u in status.missing] == ["commits/score__" + commit.name.split("__", 1)[1]
                                                  + " does not list records/" + commit.stem.split("__", 1)[1]
                                                  + ".parquet"]


def test_l1_a_lost_commit_record_does_not_read_incomplete_complete(run, capsys):
    unit_files(run, "rtn@4")[2].unlink()
    code, out, _ = cli(capsys, "status", run)
    assert code == 0
    assert "state: incomplete - 1 planned unit(s) pending" in out and "- complete" not in out


# --- MEDIUM: the TUI -------------------------------------------------------------------------------------------


def _tui_rows(reports: Path, open_run: Path | None = None, expect_open: bool = True) -> tuple[dict, list[str]]:
    """Start the TUI headless over `reports` (opening `open_run`), return the runs table's rows and what it
    notified ("<opened>" when the run opened; with `expect_open` False, waits for an error instead)."""
    from auditor.tui.app import AuditorApp
    from auditor.tui.screens.runs import RunsScreen
    from auditor.tui.screens.variants import VariantsScreen
    from tests.tui.test_app import ready, until

    notes: list[str] = []

    async def drive():
        app = AuditorApp(reports, open_run)
        real_notify = app.notify
        app.notify = lambda message, **kw: (notes.append(str(message)), real_notify(message, **kw))[1]
        async with app.run_test(size=(160, 50)) as pilot:
            opened = False
            if open_run is not None and expect_open:
                await ready(pilot, app, VariantsScreen, "#variants")
                opened = True
                await pilot.press("r")
            elif open_run is not None:
                await until(pilot, lambda: any(not n.startswith("loading ") for n in notes),
                            "the error opening the run")
            table = await ready(pilot, app, RunsScreen, "#runs")
            rows = {str(table.get_row_at(i)[0]): [str(c) for c in table.get_row_at(i)] for i in range(table.row_count)}
        return rows, opened

    rows, opened = asyncio.run(drive())
    return rows, notes if not opened else notes + ["<opened>"]


def test_m11_one_broken_run_is_listed_as_broken_and_the_healthy_one_opens(tmp_path):
    reports = tmp_path / "reports"
    healthy = build_planned_run(reports, "healthy")
    broken = build_planned_run(reports, "broken")
    (broken / "failed").mkdir(exist_ok=True)
    edit_manifest(broken, units=[1])
    rows, notes = _tui_rows(reports, healthy)
    assert rows["broken"][-1].startswith("broken: ") and "manifest.json" in rows["broken"][-1]
    assert rows["healthy"][-1] == "complete"
    assert "<opened>" in notes


def test_a_run_whose_manifest_was_deleted_is_listed_as_broken_not_skipped(tmp_path):
    """The runs screen once skipped such a folder (no manifest.json: "not a run"), so the TUI opened on a list
    without the run it was asked for and a headless driver waiting for it stalled."""
    from auditor.view.runs import list_runs

    reports = tmp_path / "reports"
    build_planned_run(reports, "healthy")
    lost = build_planned_run(reports, "lost")
    (lost / "manifest.json").unlink()
    (reports / "notes").mkdir()  # a folder no runner wrote stays off the list
    assert sorted(list_runs(reports)["run"]) == ["healthy", "lost"]
    rows, notes = _tui_rows(reports)
    assert sorted(rows) == ["healthy", "lost"]
    assert rows["lost"][-1].startswith("broken: ") and "no manifest.json" in rows["lost"][-1]
    assert rows["healthy"][-1] == "complete"
    _, notes = _tui_rows(reports, lost, expect_open=False)  # opening it says why, the app stays up
    assert any("no manifest.json" in n for n in notes) and "<opened>" not in notes


def test_m12_markup_in_a_run_name_is_shown_as_text(tmp_path):
    reports = tmp_path / "reports"
    run = build_planned_run(reports, "exp[link=a:b]")
    shutil.copytree(run, reports / "exp[red]x")
    rows, notes = _tui_rows(reports, run)
    assert {"exp[link=a:b]", "exp[red]x"} <= set(rows)
    assert "<opened>" in notes
    assert "loading exp[link=a:b] ..." in [Text.from_markup(n).plain for n in notes]  # shown as typed


# --- MEDIUM: bad inputs refused when the study is read or planned, before any run directory exists -------------


@pytest.mark.parametrize("table,key,value,needle", [
    ("compression", "seed", 2**64, "[0, 4294967295]"),
    ("compression", "mask_seeds", [2**40], "[0, 4294967295]"),
    ("execution", "batch_size", 10**9, "[1, 65536]"),
])
def test_m6_settings_out_of_range_fail_at_parse_time_with_the_range(small_study, tmp_path, capsys, table, key,
                                                                      value, needle):
    tables = {"compression": {"variants": ["random@0.5"]}, "execution": {"batch_size": 8}}
    tables[table] = {**tables[table], key: value}
    study = small_study("bounds", **tables)
    code, _, err = cli(capsys, "run", study)
    assert code == 2
    one_line_error(err, "bounds.toml", key, needle)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("spec,needle", [("rtn@8:g100000000000", "[1, 16384]"), ("wanda@2:100000", "<= 64")])
def test_m7_compressor_levels_out_of_range_fail_at_parse_time_with_the_range(small_study, tmp_path, capsys, spec,
                                                                               needle):
    study = small_study("specs", compression={"variants": [spec]})
    code, _, err = cli(capsys, "run", study)
    assert code == 2
    one_line_error(err, "specs.toml", needle)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("content,needle", [
    (b"{% for m in messages %}{{ m.content }", ":1: not a valid Jinja chat template"),
    (b"{{ messages[0].content }}\xff\xfe", "not UTF-8"),
])
def test_m4_a_bad_chat_template_file_fails_before_the_run_directory(small_study, tmp_path, capsys, content, needle):
    template = tmp_path / "bad.jinja"
    template.write_bytes(content)
    study = small_study("jinja", extra_top={"chat_template": str(template)})
    code, _, err = cli(capsys, "run", study)
    assert code == 2
    one_line_error(err, "bad.jinja", needle)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("name,content", [
    ("tokenizer_config.json", b"{not json"),
    ("tokenizer_config.json", b"[1, 2]"),
    ("tokenizer_config.json", b'{"chat_template": "\xff"}'),
    ("chat_template.jinja", b"\xff\xfe"),
    ("chat_template.jinja", b"{% if %}"),
])
def test_m5_bad_tokenizer_files_of_the_model_fail_before_the_run_directory(small_study, tiny_model_dir, tmp_path,
                                                                             capsys, name, content):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / name).write_bytes(content)
    study = small_study("tok")
    study.write_text(study.read_text().replace(str(tiny_model_dir), str(model)))
    code, _, err = cli(capsys, "run", study)
    assert code == 2
    one_line_error(err, str(model))
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("how", ["crlf", "reformatted", "first_lines", "renamed", "mixed"])
def test_m13_the_fixture_sample_keeps_its_banner_when_re_saved(tmp_path, how):
    from auditor.data.sources import SAMPLE_BBQ, resolve_bbq

    out = tmp_path / "data"
    out.mkdir()
    age = (SAMPLE_BBQ / "Age.jsonl").read_text(encoding="utf-8")
    if how == "crlf":
        (out / "Age.jsonl").write_bytes(age.replace("\n", "\r\n").encode())
    elif how == "reformatted":
        (out / "Age.jsonl").write_text("\n".join(json.dumps(json.loads(line), indent=None, separators=(",", ":"))
                                                 for line in age.splitlines()) + "\n")
    elif how == "first_lines":
        (out / "Age.jsonl").write_text("\n".join(age.splitlines()[:10]) + "\n")
    elif how == "renamed":
        (out / "Old.jsonl").write_text(age)
    else:  # one sample file among files without the mark
        (out / "Age.jsonl").write_text(age)
        (out / "SES.jsonl").write_text((SAMPLE_BBQ / "SES.jsonl").read_text().replace("auditor fixture (not BBQ)", "x"))
    source = resolve_bbq(out)
    assert source.is_sample and "NOT BBQ" in source.origin


# --- end to end on the tiny model: resume leaves nothing behind and refreshes a stale report -------------------


def test_h1_m15_a_rerun_of_a_finished_run_refreshes_its_stale_report_and_removes_a_killed_units_artifacts(
        small_study, tmp_path, capsys):
    study = small_study("e2e", variants=("magnitude@0.5",), n_items=6, seeds=(0,))
    code, _, _ = cli(capsys, "run", study)
    assert code == 0
    run = tmp_path / "reports" / "e2e"
    # what a SIGKILL during a llama.cpp unit leaves: a worker's artifacts folder with a half-written GGUF
    leaked = run / "artifacts" / "dense-d6a98598.999999"
    leaked.mkdir(parents=True)
    (leaked / "model-f16.gguf").write_bytes(b"GGUF" + b"\0" * 4096)
    # temp files of killed writers (a pid that has exited) in the layout folders and beside the report, and one
    # of a live writer (`auditor report` takes no lock): the dead ones go, the live one is left to its writer
    dead = _exited_pid()
    stray = [run / "records" / f".x.parquet.tmp-{dead}", run / "plots" / f".flip_vs_level.png.tmp-{dead}",
             run / f".summary.json.tmp-{dead}"]
    for path in stray:
        path.write_bytes(b"partial")
    live = run / "plots" / f".size_vs_risk.png.tmp-{os.getppid()}"
    live.write_bytes(b"being written")
    # a report written while the last unit was still going (another process held the lock then)
    commit = next((run / "commits").glob("score__magnitude*"))
    saved = commit.read_bytes()
    commit.unlink()
    with run_lock(run):
        assert cli(capsys, "report", run)[0] == 0
    commit.write_bytes(saved)
    assert "incomplete: 1 of 2 units finished (running)" in (run / "report.md").read_text()
    code, out, _ = cli(capsys, "run", study)  # everything finished earlier: nothing is computed
    assert code == 0
    assert not (run / "artifacts").exists()
    assert not [p for p in stray if p.exists()] and live.exists()
    assert json.loads((run / "summary.json").read_text())["completeness"]["n_finished"] == 2
    assert "incomplete" not in (run / "report.md").read_text().split("\n## ")[0]


def _exited_pid() -> int:
    """The pid of a process that has run and exited (and been reaped): no process has it now."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_m15_stale_artifacts_are_those_of_other_processes(tmp_path):
    import os

    (tmp_path / "artifacts" / "dense-x.1").mkdir(parents=True)
    (tmp_path / "artifacts" / f"dense-x.{os.getpid()}").mkdir()
    (tmp_path / "artifacts" / "notes.txt").write_text("kept")
    removed = rundir.remove_stale_artifacts(tmp_path)
    assert removed == [tmp_path / "artifacts" / "dense-x.1"]
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [f"dense-x.{os.getpid()}", "notes.txt"]


def test_a_changed_figure_in_a_merged_variant_descriptor_fails_the_gate(run, capsys):
    """variants/<unit>.json carries timings and sizes the report shows: it must be the merge of the committed
    unit descriptors, so an edited figure (valid JSON, right variant) is a damaged file, never a pass."""
    import json as _json

    path = next((run / "variants").glob("*.json"))
    doc = _json.loads(path.read_text())
    doc["scoring_wall_s"] = (doc.get("scoring_wall_s") or 0.0) + 123.0
    path.write_text(_json.dumps(doc))
    code = main(["gate", str(run), "--max-flip-rate", "0.9", "--accept-invalid-reference"])
    out = capsys.readouterr().out
    assert code != 0 and "differs from the committed descriptors of its units" in out


def test_an_edited_state_file_differs_from_its_seal(run, capsys):
    import json as _json

    path = run / "state.json"
    doc = _json.loads(path.read_text())
    doc["pid"] = 4242
    path.write_text(_json.dumps(doc))
    code = main(["gate", str(run), "--max-flip-rate", "0.9", "--accept-invalid-reference"])
    out = capsys.readouterr().out
    assert code != 0 and "state.json differs from its seal" in out


# --- L3: the report's own files and the measurements it was written from ------------------------------------


def _measured(run: Path) -> Path:
    return add_report(run, variants=("magnitude@0.5", "rtn@4"))


@pytest.mark.parametrize("damage", ["delete", "edit"])
def test_l3_a_changed_plot_or_report_is_named_by_status_fails_the_gate_and_is_rewritten(run, capsys, damage):
    _measured(run)
    plot = sorted((run / "plots").glob("*.png"))[0]
    rel = f"plots/{plot.name}"
    capsys.readouterr()
    assert run_status(run).report_problems == ()
    if damage == "delete":
        plot.unlink()
    else:
        plot.write_bytes(plot.read_bytes()[:-1] + b"\0")
    code, out, _ = cli(capsys, "status", run)
    assert code == 0 and f"report: damaged ({rel}" in out
    code, out, _ = cli(capsys, "gate", run, *GATE)
    assert code == EXIT_INCOMPLETE and rel in out and "PASS" in out  # the variants pass; the damaged report fails
    assert cli(capsys, "report", run)[0] == 0  # the report's outputs are rewritten, not refused
    assert run_status(run).report_problems == () and plot.is_file()
    assert cli(capsys, "gate", run, *GATE)[0] == 0


def test_l3_an_edited_report_md_fails_the_gate_until_rewritten_and_a_rerun_refreshes_it(run, capsys):
    _measured(run)
    with open(run / "report.md", "a") as fh:
        fh.write("\nAll variants are LOW risk.\n")
    code, out, _ = cli(capsys, "gate", run, *GATE)
    assert code == EXIT_INCOMPLETE and "report.md has" in out
    assert "report.md" in run_command.stale_report(run)  # `auditor run` on the finished run rewrites it
    run_command.report_missing([run])
    assert run_status(run).report_problems == ()


@pytest.mark.parametrize("damage", ["edit", "edit_unit_file", "delete", "garbage"])
def test_l3_a_report_refuses_an_edited_or_removed_measurements_json(run, capsys, damage):
    _measured(run)
    capsys.readouterr()
    path = run / ("measurements/" + next((run / "measurements").iterdir()).name if damage == "edit_unit_file"
                  else "measurements.json")
    if damage.startswith("edit"):
        doc = json.loads(path.read_text())
        if "measurements" in doc:
            doc["measurements"][0]["size_bytes"] = 1
        else:
            doc["size_bytes"] = 1
        path.write_text(json.dumps(doc))  # valid JSON, still sealed with the old seal
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"\xff{")
    rel = path.relative_to(run).as_posix()
    code, _, err = cli(capsys, "report", run)
    assert code == 2
    one_line_error(err, rel, "no report written")
    code, out, _ = cli(capsys, "status", run)
    assert code == 0 and rel in out and "report: damaged" in out
    code, out, err = cli(capsys, "gate", run, *GATE)
    if damage == "garbage":  # unreadable: bad input, as every reader says of an unreadable file
        assert code == 2
        one_line_error(err, rel)
    else:
        assert code == EXIT_INCOMPLETE and rel in out
    if damage == "delete":  # the way out the message names: a report without the measurements
        (run / "summary.json").unlink()
        assert cli(capsys, "report", run)[0] == 0


def test_l3_a_summary_json_edited_after_the_report_differs_from_its_seal(run, capsys):
    _measured(run)
    doc = json.loads((run / "summary.json").read_text())
    doc["notes"] = ["all clear"]
    (run / "summary.json").write_text(json.dumps(doc))
    code, out, _ = cli(capsys, "gate", run, *GATE)
    assert code == EXIT_INCOMPLETE and "summary.json differs from its seal" in out


# --- LOW: L9, L11-L14 -----------------------------------------------------------------------------------------


def _bbq_copy(tmp_path: Path, n_lines: int = 4) -> tuple[Path, list[str]]:
    """A folder with the first `n_lines` of the fixture sample's Age.jsonl, and those lines."""
    from auditor.data.sources import SAMPLE_BBQ

    lines = (SAMPLE_BBQ / "Age.jsonl").read_text(encoding="utf-8").split("\n")[:n_lines]
    folder = tmp_path / "bbq"
    folder.mkdir()
    return folder / "Age.jsonl", lines


def test_l9_an_item_line_of_megabytes_is_refused_with_its_line(tmp_path, capsys):
    from auditor.data.bbq import MAX_LINE_BYTES, read_jsonl

    path, lines = _bbq_copy(tmp_path)
    huge = json.loads(lines[2])
    huge["context"] = "x" * (MAX_LINE_BYTES + 1)
    path.write_text("\n".join([*lines[:2], json.dumps(huge), lines[3]]) + "\n", encoding="utf-8")
    with pytest.raises(AuditorError, match=r"Age.jsonl:3: a line of [\d,]+ bytes, longer than"):
        read_jsonl(path)
    code, _, err = cli(capsys, "score-predictions", path, "--field", "prediction")
    assert code == 2
    one_line_error(err, "Age.jsonl:3", "longer than")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # the same items at their real size load
    assert len(read_jsonl(path)) == 4


def test_l14_a_non_utf8_bbq_file_names_the_line(tmp_path, capsys):
    path, lines = _bbq_copy(tmp_path)
    data = "\n".join(lines).encode("utf-8").split(b"\n")
    data[2] = data[2].replace(b"context", b"cont\xffext", 1)
    path.write_bytes(b"\n".join(data) + b"\n")
    code, _, err = cli(capsys, "score-predictions", path, "--field", "prediction")
    assert code == 2
    one_line_error(err, "Age.jsonl:3: not UTF-8 text")


def test_l11_a_misspelt_prediction_field_is_bad_input_not_an_empty_score(tmp_path, capsys):
    path, lines = _bbq_copy(tmp_path)
    rows = [{**json.loads(line), "prediction": 0} for line in lines]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    code, _, err = cli(capsys, "score-predictions", path, "--field", "predicton", "--json")
    assert code == 2
    one_line_error(err, "--field predicton", "prediction")  # the fields the file has, to spot the typo
    code, out, _ = cli(capsys, "score-predictions", path, "--field", "prediction", "--json")
    assert code == 0 and json.loads(out)["_skipped"]["no_prediction"] == 0
    # a field present but never matched is a result (all skipped as unmatched), not a typo
    path.write_text("\n".join(json.dumps({**r, "prediction": "none of them"}) for r in rows) + "\n")
    code, out, _ = cli(capsys, "score-predictions", path, "--field", "prediction", "--json")
    assert code == 0 and json.loads(out)["_skipped"]["unmatched"] == 4


def test_l12_an_unreadable_gguf_says_truncated_or_corrupt_before_the_readers_detail(tmp_path):
    from auditor.artifacts.gguf_info import read_gguf_info
    from auditor.artifacts.models import embedded_default_path

    path = tmp_path / "cut.gguf"
    path.write_bytes(embedded_default_path().read_bytes()[:200])
    with pytest.raises(AuditorError) as caught:
        read_gguf_info(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unreadable GGUF: its header or tensor table is truncated or corrupt (200 "
                              "bytes; the reader said: ")


def test_l13_a_garbage_manifest_on_resume_offers_force_for_what_it_does(small_study, tmp_path, capsys):
    study = small_study("garbled", n_items=4, seeds=(0,))
    run = tmp_path / "reports" / "garbled"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text("garbage{")
    code, _, err = cli(capsys, "run", study)
    assert code == 2
    one_line_error(err, "manifest.json: unreadable manifest", "--force to rewrite it (units whose commit records "
                   "verify are kept")
    assert "start this run over" not in err
