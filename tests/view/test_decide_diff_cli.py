"""`auditor decide` and `auditor diff` on tiny planted runs (tests/helpers_runs.py): the ranked fits, the
"nothing fits" line and exit 1, JSON, CSV tables, sizes with units, one-line errors with exit 2."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from auditor.cli import main
from auditor.commands.decide import parse_size
from auditor.core.errors import AuditorError
from tests.helpers_runs import MEASURED, PLANTED_HIGH, build_run


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    build_run(root, "a", variants=("magnitude@0.3", "magnitude@0.5", PLANTED_HIGH, "rtn@4"))
    build_run(root, "b", variants=("magnitude@0.3", "rtn@4"))
    return root


@pytest.mark.parametrize("text, expected", [("300MB", 300e6), ("1.5GB", 1.5e9), ("512MiB", 512 * 2**20),
                                            ("4096", 4096.0), ("2 gib", 2 * 2**30), ("10KB", 1e4),
                                            ("7B", 7.0), ("1KiB", 1024.0)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["300XB", "MB", "-5MB", "1.2.3GB", ""])
def test_parse_size_rejects(text):
    with pytest.raises(AuditorError, match="--max-size"):
        parse_size(text)


def test_decide_ranks_fits(reports, capsys):
    code = main(["decide", "a", "--reports", str(reports), "--max-size", "600MB", "--min-decode-tps", "20",
                 "--n-boot", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    # dense (40 tok/s) and magnitude@0.5 (39 tok/s) are the only rows with a measured decode speed
    fits = [line for line in out.splitlines() if line.startswith("  1.") or line.startswith("  2.")]
    assert len(fits) == 2 and fits[0].startswith("  1. dense [torch]: 538.0 MB")
    assert fits[1].startswith("  2. magnitude@0.5 [torch]: 538.0 MB") and "decode 39.0 tok/s" in fits[1]
    assert f"not judged (decode not measured): {PLANTED_HIGH} [torch]" in out
    # rtn@4 is fake quantization: its planted 80 MB is no file's size, so it is judged on nothing it lacks
    assert ("not judged (size simulated (no deployable file; nearest gguf-q4_k_m), decode simulated (no deployable "
            "file; nearest gguf-q4_k_m)): rtn@4 [torch]") in out
    assert "Pareto front (size x decode x same-top x risk): dense [torch]" in out


def test_decide_nothing_fits_names_nearest(reports, capsys):
    code = main(["decide", "a", "--reports", str(reports), "--max-size", "50MB", "--n-boot", "30"])
    out = capsys.readouterr().out
    assert code == 1, out
    # rtn@4's planted 80 MB is simulated (RTN writes float32 weights): the nearest is the smallest real file
    assert (f"nothing fits size <= 50.0 MB: the nearest is {PLANTED_HIGH} [torch], which misses: size 270.0 MB > "
            "50.0 MB" in out)


def test_decide_json_and_csv(reports, tmp_path, capsys):
    csv_dir = tmp_path / "tables"
    code = main(["decide", str(reports / "a"), "--max-size", "0.1GB", "--json", "--csv", str(csv_dir),
                 "--n-boot", "30"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1  # only rtn@4 was planted under 100 MB, and its size is simulated
    assert doc["constraints"] == {"max_size_bytes": 1e8}
    assert doc["fits"] == []
    rtn = next(r for r in doc["rows"] if r["variant"] == "rtn@4")
    assert MEASURED["rtn@4"]["size_bytes"] < 1e8 and rtn["size_bytes"] is None and rtn["decode_tokens_per_s"] is None
    assert rtn["simulated"] == "gguf-q4_k_m" and rtn["artifact"] == "simulated: nearest gguf-q4_k_m"
    assert sorted(p.name for p in csv_dir.iterdir()) == ["comparison.csv", "decision.csv", "fidelity.csv",
                                                        "overview.csv", "records.csv"]
    records = pd.read_csv(csv_dir / "records.csv")
    assert len(records) == len(pd.concat([pd.read_parquet(p) for p in (reports / "a" / "records").glob("*.parquet")]))
    decision = pd.read_csv(csv_dir / "decision.csv")
    assert set(decision["variant"]) == {"dense", "magnitude@0.3", "magnitude@0.5", PLANTED_HIGH, "rtn@4"}
    fidelity = pd.read_csv(csv_dir / "fidelity.csv").set_index("variant")
    assert fidelity.loc["rtn@4", "same_top_share"] == 1.0  # rtn@4 answers exactly as dense


@pytest.mark.parametrize("args, message", [
    (["--max-size", "300XB"], "--max-size '300XB': expected a size"),
    (["--min-decode-tps", "fast"], "--min-decode-tps 'fast': expected a number"),
    (["--max-grade", "medium"], "--max-grade 'medium': valid grades are low, not shown, elevated, high"),
    (["--min-same-top", "120%"], "--min-same-top '120%': a share is between 0 and 1"),
    (["--max-peak-memory", "lots"], "--max-peak-memory 'lots': expected a size"),
    (["--n-boot", "0"], "--n-boot '0': expected a whole number >= 1"),
])
def test_decide_bad_values_one_line_exit_2(reports, capsys, args, message):
    assert main(["decide", "a", "--reports", str(reports), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"auditor: error: {message}"), err


def test_decide_missing_run(reports, capsys):
    assert main(["decide", "nope", "--reports", str(reports)]) == 2
    assert "nope: no such run directory" in capsys.readouterr().err


def test_diff_shared_and_one_run_only(reports, capsys):
    code = main(["diff", "a", "b", "--reports", str(reports), "--n-boot", "30"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].endswith(": 3 variant(s) in both")
    assert out.splitlines()[1] == "items: the same 80 items in both runs"
    assert "magnitude@0.3 [torch]: grade" in out and "rtn@4 [torch]: grade" in out
    assert out.splitlines()[-2].endswith(f"magnitude@0.5 [torch], {PLANTED_HIGH} [torch]")
    assert out.splitlines()[-1].endswith(": none")
    assert main(["diff", "a", "b", "--reports", str(reports), "--json", "--n-boot", "30"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {(r["variant"], r["backend"]) for r in doc["grades"]} == {
        ("dense", "torch"), ("magnitude@0.3", "torch"), ("rtn@4", "torch")}
    assert doc["only_b"] == [] and len(doc["only_a"]) == 2
    assert main(["diff", "a", "missing", "--reports", str(reports)]) == 2


def test_help_and_grade_spelling(reports, capsys):
    for command in ("decide", "diff"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0 and "docs/api.md" in capsys.readouterr().out
    code = main(["decide", "a", "--reports", str(reports), "--max-grade", "Not-Shown", "--json", "--n-boot", "30"])
    assert code in (0, 1)
    assert json.loads(capsys.readouterr().out)["constraints"] == {"max_grade": "not shown"}


def test_decide_says_why_grades_are_inconclusive(tmp_path, capsys):
    build_run(tmp_path, "position", variants=("rtn@4",), position_driven_dense=True)
    code = main(["decide", str(tmp_path / "position"), "--max-grade", "elevated", "--max-size", "100MB",
                 "--n-boot", "30"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[1].startswith("note: every grade is INCONCLUSIVE because the dense reference")
    assert main(["decide", str(tmp_path / "position"), "--max-grade", "elevated", "--json", "--n-boot", "30"]) == 0
    rtn = next(r for r in json.loads(capsys.readouterr().out)["rows"] if r["variant"] == "rtn@4")
    assert rtn["misses"] == ["grade inconclusive (never meets a max-grade constraint)"]
