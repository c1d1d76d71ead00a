"""The full-vocabulary KLD in a run: the dense perplexity unit commits its base rows, the others compare against it."""
from __future__ import annotations

import json

import numpy as np

from auditor.analysis.kld import bytes_per_position, load_base
from auditor.cli import main
from auditor.core.names import DENSE, TORCH
from auditor.data.rundir import DAMAGED, FINISHED, PPL, Unit, check_unit, read_commit

PPL_TABLE = {"max_length": 32, "stride": 16, "max_tokens": 200, "kld_tokens": 40}


def _corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog near the river bank. " * 40)
    return corpus


def test_dense_commits_its_base_and_the_variant_reports_its_kld(small_study, capsys, tmp_path):
    study = small_study("kld", variants=("magnitude@0.5",), n_items=4, seeds=(0,),
                        perplexity={"corpus": str(_corpus(tmp_path)), **PPL_TABLE})
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "reports" / "kld"
    dense = Unit(PPL, DENSE, DENSE, TORCH)
    base_file = dense.kld_base_path(run_dir)
    commit = read_commit(run_dir, dense)
    # sealed like every unit file: the commit record lists the base with its size and sha256
    assert f"ppl/{base_file.name}" in commit["files"]
    base = load_base(base_file)
    assert len(base.positions) == 40 and base.n_vocab == 49152
    figures = {f["variant"]: f for f in (json.loads(p.read_text()) for p in (run_dir / "ppl").glob("*.json"))}
    assert figures[DENSE]["kld"]["bytes_per_position"] == bytes_per_position(49152) == 98312
    assert figures[DENSE]["kld"]["base_bytes"] == base_file.stat().st_size
    kld = figures["magnitude@0.5"]["kld"]
    assert kld["reference"] == dense.name and kld["n_positions"] == 40
    assert kld["kld_mean"] > 0 and 0 <= kld["same_top"] <= 1 and kld["kld_min"] <= kld["kld_median"] <= kld["kld_max"]
    # the report's variants and summary.json carry the figures
    summary = json.loads((run_dir / "summary.json").read_text())
    row = next(r for r in summary["overview"] if r["variant"] == "magnitude@0.5")
    assert row["kld_mean"] == kld["kld_mean"] and row["kld_same_top"] == kld["same_top"]
    assert "full-vocabulary KLD from dense" in (run_dir / "report.md").read_text()

    # a changed base is a damaged dense unit, recomputed by the next run
    key = commit["unit_key"]
    rows = base.rows.copy()
    rows[0, 10] ^= 1
    np.savez_compressed(base_file, positions=base.positions, tokens=base.tokens, rows=rows,
                        n_vocab=np.int64(base.n_vocab))
    assert check_unit(run_dir, dense, key)[0] == DAMAGED
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    assert check_unit(run_dir, dense, key)[0] == FINISHED


def test_a_variant_run_before_dense_says_so(small_study, capsys, tmp_path):
    study = small_study("kld-only", variants=("magnitude@0.5",), n_items=4, seeds=(0,),
                        perplexity={"corpus": str(_corpus(tmp_path)), **PPL_TABLE})
    main(["run", str(study), "--only", "magnitude@0.5"])
    run_dir = tmp_path / "reports" / "kld-only"
    variant = Unit(PPL, "magnitude@0.5", "magnitude@0.5", TORCH)
    figures = json.loads(variant.final_path(run_dir).read_text())
    assert "dense's perplexity unit had not committed its base" in figures["kld"]["problem"]
    assert figures["ppl"] > 1  # the perplexity itself is still there
    # the remedy the problem names: without its commit record the unit is redone, now against dense's base
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    variant.commit_path(run_dir).unlink()
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    redone = json.loads(variant.final_path(run_dir).read_text())["kld"]
    assert "problem" not in redone and redone["n_positions"] == 40 and redone["kld_mean"] > 0


def test_kld_tokens_zero_writes_no_base(small_study, capsys, tmp_path):
    study = small_study("kld-off", variants=("magnitude@0.5",), n_items=4, seeds=(0,),
                        perplexity={"corpus": str(_corpus(tmp_path)), **PPL_TABLE, "kld_tokens": 0})
    assert main(["run", str(study)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "reports" / "kld-off"
    assert not list((run_dir / "ppl").glob("*.npz"))
    assert all("kld" not in json.loads(p.read_text()) for p in (run_dir / "ppl").glob("*.json"))
