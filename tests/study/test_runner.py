"""The runner on a tiny model: units, skip/redo, refusal of a changed study, --force, locks, status."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from auditor.cli import main
from auditor.data.rundir import merged_records, run_lock
from auditor.study.units import UnitWorker


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _records(run_dir):
    return sorted(p.name for p in (run_dir / "records").glob("*.parquet"))


def _finished_utc(run_dir) -> dict[str, str]:
    return {p.stem: json.loads(p.read_text())["finished_utc"] for p in (run_dir / "units").glob("*.json")}


def test_run_writes_units_and_rerun_skips_them(small_study, capsys, monkeypatch, tmp_path):
    study = small_study("shards", shards=2)
    code, out, err = _run(capsys, study)
    assert code == 0, err
    run_dir = tmp_path / "reports" / "shards"
    assert f"run directory: {run_dir}" in out
    names = _records(run_dir)
    assert len(names) == 4 and all("__torch__shard" in n for n in names)
    records = merged_records(run_dir)
    assert len(records) == 2 * 2 * 12  # variants x seeds x items
    assert list(records["variant"].unique()) == ["dense", "magnitude@0.5"]
    assert (run_dir / "report.md").is_file() and (run_dir / "summary.json").is_file()
    merged = json.loads(next((run_dir / "variants").glob("magnitude*__torch.json")).read_text())
    assert merged["variant"] == "magnitude@0.5" and len(merged["shards"]) == 2 and merged["n_items"] == 12
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["study"]["hash"]) == 64 and len(manifest["units"]) == 4
    assert {"model", "data", "items"} <= set(manifest["fingerprints"])
    assert manifest["versions"]["torch"] and manifest["model"]["kind"] == "hf"

    # Everything finished: a second run computes nothing.
    def refuse(self, unit):
        raise AssertionError(f"unit {unit.id} recomputed")

    monkeypatch.setattr(UnitWorker, "execute", refuse)
    code, _, err = _run(capsys, study)
    assert code == 0, err
    assert merged_records(run_dir).equals(records)

    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "state: complete" in out and "units: 4/4 finished" in out
    assert main(["status", str(run_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "complete" and doc["n_finished"] == 4


def test_shards_merge_to_the_unsharded_records(small_study, capsys, tmp_path):
    for name, shards in (("one", 1), ("three", 3)):
        code, _, err = _run(capsys, small_study(name, shards=shards, variants=()))
        assert code == 0, err
    one, three = merged_records(tmp_path / "reports" / "one"), merged_records(tmp_path / "reports" / "three")
    assert len(_records(tmp_path / "reports" / "three")) == 3
    keys = ["variant", "backend", "seed", "item_id", "perm", "chosen", "role"]
    assert one[keys].equals(three[keys])
    # Shards change which prompts share a padded batch; scores agree to float32 rounding.
    lp = ["logprob_0", "logprob_1", "logprob_2"]
    assert (one[lp] - three[lp]).abs().to_numpy().max() < 1e-4
    # The merged descriptor sums the shards' token counts: the plan's count is at least the unsharded one
    # (shards share less), and what the runtime computed is never below what it planned.
    merged = [json.loads(p.read_text()) for p in sorted((tmp_path / "reports" / "three" / "variants").glob("*.json"))]
    shards = [json.loads(p.read_text()) for p in sorted((tmp_path / "reports" / "three" / "units").glob("*.json"))]
    assert merged[0]["planned_tokens"] == sum(d["planned_tokens"] for d in shards) > 0
    assert merged[0]["computed_tokens"] >= merged[0]["planned_tokens"]


def test_changed_study_is_refused_and_force_keeps_unchanged_units(small_study, capsys, tmp_path):
    run_dir = tmp_path / "reports" / "grow"
    assert _run(capsys, small_study("grow"))[0] == 0
    before = _finished_utc(run_dir)

    grown = small_study("grow", variants=("magnitude@0.5", "random@0.5"))
    code, _, err = _run(capsys, grown)
    assert code == 2
    assert f"{run_dir}: holds a run of a different study" in err and "--force" in err
    assert _finished_utc(run_dir) == before  # nothing touched

    code, _, err = _run(capsys, grown, "--force")
    assert code == 0, err
    after = _finished_utc(run_dir)
    assert {k: after[k] for k in before} == before  # dense and magnitude kept as they were
    assert len(after) == 3 and any(k.startswith("random_0.5") for k in after)

    # A change that touches every unit (the seeds): all redone, the old files moved, not deleted.
    code, _, err = _run(capsys, small_study("grow", variants=("magnitude@0.5", "random@0.5"), seeds=(0,)), "--force")
    assert code == 0, err
    assert set(merged_records(run_dir)["seed"]) == {0}
    moved = list((run_dir / "superseded").rglob("*.parquet"))
    assert len(moved) == 3


def test_interrupted_writes_are_cleaned_and_redone(small_study, capsys, tmp_path):
    study = small_study("partial", variants=())
    run_dir = tmp_path / "reports" / "partial"
    assert _run(capsys, study)[0] == 0
    reference = merged_records(run_dir)
    # What a kill leaves: a temp file mid-write, and a unit whose descriptor exists but whose records do not.
    (run_dir / "records" / ".dense-x__torch.parquet.tmp-999999").write_bytes(b"PAR1 partial")
    (run_dir / "records" / _records(run_dir)[0]).unlink()
    assert main(["status", str(run_dir)]) == 0
    assert "units: 0/1 finished" in capsys.readouterr().out
    code, _, err = _run(capsys, study)
    assert code == 0, err
    assert not list((run_dir / "records").glob(".*"))
    pd.testing.assert_frame_equal(merged_records(run_dir), reference, check_exact=True)


def test_a_second_process_on_the_same_run_is_refused(small_study, capsys, tmp_path):
    study = small_study("locked", variants=())
    run_dir = tmp_path / "reports" / "locked"
    run_dir.mkdir(parents=True)
    with run_lock(run_dir):
        code, _, err = _run(capsys, study)
        assert main(["status", str(run_dir)]) == 2  # no manifest yet
    assert code == 2 and f"{run_dir}: another auditor process (pid" in err


def test_audit_front_runs_an_in_memory_study(tiny_model_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["audit", "--model", str(tiny_model_dir), "--variant", "magnitude@0.5", "--n-items", "6",
                 "--seeds", "0", "--run", "front", "--reports", "out", "--no-null-baselines"])
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "out" / "front"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["study"]["file"] == "auditor audit"
    assert manifest["study"]["definition"]["variants"] == ["dense", "magnitude@0.5"]
    assert len(_records(run_dir)) == 2
    # Options the study schema rejects are rejected here too, with exit code 2.
    assert main(["audit", "--model", str(tiny_model_dir), "--seeds", "0,0", "--run", "front2"]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err
    assert main(["audit", "--model", str(tiny_model_dir), "--seeds", "0,1,2,3,4,5,6", "--run", "front3"]) == 2
    assert "auditor audit: --seeds: 7 seeds asked, but three options have only 6 answer orders" in capsys.readouterr().err


@pytest.mark.slow
def test_null_baseline_unit_is_scored_by_llama_cpp(small_study, capsys, tmp_path):
    from auditor.analysis.baselines import DENSE_GGUF_F16
    from auditor.core.names import LLAMA_CPP
    from auditor.scoring.backends.factory import available

    if not available(LLAMA_CPP):
        pytest.skip("llama.cpp backend modules are not importable")
    code, _, err = _run(capsys, small_study("nullb", variants=(), null_baselines=True, n_items=6, seeds=(0,)))
    assert code == 0, err
    run_dir = tmp_path / "reports" / "nullb"
    records = merged_records(run_dir)
    assert set(zip(records["variant"], records["backend"])) == {("dense", "torch"), (DENSE_GGUF_F16, LLAMA_CPP)}
    gguf = records[records["variant"] == DENSE_GGUF_F16].reset_index(drop=True)
    dense = records[records["variant"] == "dense"].reset_index(drop=True)
    assert list(gguf["item_id"]) == list(dense["item_id"])
    # F16 weights in llama.cpp vs float32 in torch: close, not identical.
    lp = ["logprob_0", "logprob_1", "logprob_2"]
    assert (gguf[lp] - dense[lp]).abs().to_numpy().max() < 0.1
    assert not (run_dir / "artifacts").exists()  # the F16 export is removed unless keep_artifacts
    # The llama.cpp unit says which kernels ran: an F16 file keeps the extra buffers off on AMX CPUs (llama_amx).
    from auditor.scoring.backends.llama_amx import amx_cpu

    kernels = {d["variant"]: d.get("llama_extra_buffers") for d in
               (json.loads(p.read_text()) for p in (run_dir / "units").glob("*.json"))}
    assert kernels == {"dense": None, DENSE_GGUF_F16: not amx_cpu()}


def test_perplexity_units_write_ppl_files(small_study, capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog near the river bank. " * 40)
    study = small_study("ppl", variants=("magnitude@0.5",), n_items=4, seeds=(0,),
                        perplexity={"corpus": str(corpus), "max_length": 32, "stride": 16, "max_tokens": 200})
    code, _, err = _run(capsys, study)
    assert code == 0, err
    run_dir = tmp_path / "reports" / "ppl"
    files = sorted((run_dir / "ppl").glob("*.json"))
    # one per (variant, backend), named like the variant's descriptor so the report can pair them
    assert [p.name for p in files] == sorted(p.name for p in (run_dir / "variants").glob("*.json"))
    figures = [json.loads(p.read_text()) for p in files]
    assert {f["variant"] for f in figures} == {"dense", "magnitude@0.5"}
    for f in figures:
        assert f["n_tokens"] == 199 and f["ppl"] > 1 and f["corpus_tokens"] == 200
        assert f"{corpus}" in f["corpus"] and f["max_length"] == 32 and f["stride"] == 16
    # the same token ids for both variants, so the figures differ only by the model
    assert figures[0]["ppl"] != figures[1]["ppl"]


def test_end_of_run_report_uses_the_study_thresholds(small_study, capsys):
    """`auditor run` writes the report with the study's [thresholds], as `auditor report` would."""
    study = small_study("graded", thresholds={"flip_margin": 0.33, "shift_high": 0.44})
    code, out, err = _run(capsys, study)
    assert code == 0, err
    run_dir = study.parent / "reports" / "graded"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["thresholds"]["flip_margin"] == 0.33
    assert summary["thresholds"]["shift_high"] == 0.44
    text = (run_dir / "report.md").read_text()
    assert "flip rate above its same-prompt null 33 pts" in text and "above 5 / 44 pts" in text


def test_only_runs_the_named_variants_and_leaves_the_rest_pending(small_study, capsys, monkeypatch, tmp_path):
    study = small_study("only", variants=("magnitude@0.5", "random@0.5"))
    run_dir = tmp_path / "reports" / "only"

    code, _, err = _run(capsys, study, "--only", "dense", "--only", "random @ 0.5")  # whitespace means nothing
    assert code == 0, err
    assert "2 of 3 planned units left" not in err and "1 of 3 planned units left" in err
    assert {p.stem.split("-")[0] for p in (run_dir / "records").glob("*.parquet")} == {"dense", "random_0.5"}
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "state: incomplete" in out and "units: 2/3 finished" in out and "without --only" in out
    # A gate does not pass a run with units left.
    assert main(["gate", str(run_dir), "--max-srs-increase", "1"]) == 4
    capsys.readouterr()

    # An unknown name fails before any work, naming the study and its variants.
    code, _, err = _run(capsys, study, "--only", "wanda@0.5")
    assert code != 0 and "'wanda@0.5'" in err and "only.toml" in err and "magnitude@0.5" in err

    # A run without --only does the rest, and only the rest.
    computed = []
    original = UnitWorker.execute

    def spy(self, unit):
        computed.append(unit.variant)
        return original(self, unit)

    monkeypatch.setattr(UnitWorker, "execute", spy)
    code, _, err = _run(capsys, study)
    assert code == 0, err
    assert computed == ["magnitude@0.5"]
    assert main(["status", str(run_dir)]) == 0
    assert "state: complete" in capsys.readouterr().out
