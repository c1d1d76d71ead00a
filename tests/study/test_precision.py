"""Compute dtype: the study setting, the precision baseline unit, masks independent of the dtype, `run --plan`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from auditor.analysis.baselines import DENSE_FLOAT32, PRECISION_BASELINE, null_baselines
from auditor.cli import main
from auditor.core.errors import SpecError
from auditor.data.rundir import merged_records
from auditor.study.runner import plan_study
from auditor.study.spec import load_study, parse_study
from auditor.study.units import UnitWorker
from tests.conftest import SAMPLE_BBQ, make_tiny_llama

# bfloat16 keeps 8 significant bits (relative rounding 2^-9 per operation). On the tiny random
# Llama (2 layers, hidden 64, near-uniform letter log-probs around -10.8) the largest letter
# log-prob difference from float32 measured 0.05 over the fixture prompts; the bound leaves 2x.
# SmolLM2-135M (30 layers) is measured by the precision baseline of a run, not here (docs/engine.md).
TINY_BF16_LOGPROB_BOUND = 0.1
TINY_FP16_LOGPROB_BOUND = 0.02  # float16 keeps 11 bits: 8x finer than bfloat16


def test_dtype_is_validated_and_float32_keeps_the_hash():
    base = {"name": "p", "compression": {"variants": ["magnitude@0.5"]}}
    plain = parse_study(base)
    same = parse_study({**base, "execution": {"dtype": "float32"}})
    bf16 = parse_study({**base, "execution": {"dtype": "bfloat16"}})
    assert plain.hash == same.hash != bf16.hash
    with pytest.raises(SpecError, match=r"execution\.dtype.*'bf16'.*valid dtypes"):
        parse_study({**base, "execution": {"dtype": "bf16"}})


@pytest.mark.parametrize("dtype,bound", [("bfloat16", TINY_BF16_LOGPROB_BOUND), ("float16", TINY_FP16_LOGPROB_BOUND)])
def test_low_precision_scores_agree_with_float32_within_the_bound(smollm2_tokenizer, dtype, bound):
    from auditor.artifacts.precision import cast_for_scoring
    from auditor.data.bbq import select_items
    from auditor.scoring.backends.torch_backend import TorchBackend
    from auditor.scoring.engine import PromptSet

    model = make_tiny_llama(seed=5)
    prompts = PromptSet.build(smollm2_tokenizer, select_items([SAMPLE_BBQ], n=16, seed=0).items, (0, 1))
    ref = TorchBackend(model, batch_size=8, pad_id=2).letter_logprobs(prompts.groups, prompts.letter_ids)
    low_model = cast_for_scoring(model, dtype)
    low_backend = TorchBackend(low_model, batch_size=8, pad_id=2)
    assert low_backend.compute_dtype == dtype and model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
    low = low_backend.letter_logprobs(prompts.groups, prompts.letter_ids)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, low))
    assert 0 < diff < bound  # different arithmetic (not a silent float32 run), within the documented bound


def _study(tmp_path, tiny_model_dir, dtype: str, variants=("magnitude@0.5", "wanda@0.5"), **extra):
    doc = {"name": f"prec-{dtype}", "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)],
           "seeds": [0, 1], "null_baselines": False,
           "data": {"bbq": str(SAMPLE_BBQ), "n_items": 8},
           "compression": {"variants": list(variants)},
           "calibration": {"n_samples": 4, "seq_len": 32},
           "execution": {"batch_size": 8, "dtype": dtype}, **extra}
    return parse_study(doc, source="test", base_dir=str(tmp_path))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_masks_are_identical_whatever_the_dtype(tmp_path, tiny_model_dir, dtype):
    from compressors.scope import block_linears

    masks = {}
    for d in ("float32", dtype):
        plan = plan_study(_study(tmp_path, tiny_model_dir, d))[0]
        worker = UnitWorker(plan.context)
        try:
            for spec in ("magnitude@0.5", "wanda@0.5"):
                built = worker._variant(spec, "torch", plan.context.dtype)
                scored = worker._backend(built, "torch", plan.context.dtype).model
                assert str(next(scored.parameters()).dtype) == f"torch.{d}"
                compressed = {n: (lin.weight == 0) for n, lin in block_linears(built.variant.model)}
                cast = {n: (lin.weight == 0) for n, lin in block_linears(scored)}
                # what is scored has its zeros exactly where the float32 compression put them
                assert all(bool((compressed[n] <= cast[n]).all()) for n in compressed)
                masks[(d, spec)] = compressed
        finally:
            worker.close()
    for spec in ("magnitude@0.5", "wanda@0.5"):
        a, b = masks[("float32", spec)], masks[(dtype, spec)]
        assert a.keys() == b.keys() and all(bool((a[n] == b[n]).all()) for n in a)
        assert 0.45 < float(np.mean([a[n].float().mean().item() for n in a])) < 0.55


def test_bfloat16_run_scores_the_precision_baseline(tmp_path, tiny_model_dir, capsys):
    from auditor.study.runner import run_study

    study = _study(tmp_path, tiny_model_dir, "bfloat16", variants=("magnitude@0.5",))
    plan = plan_study(study)[0]
    assert [u.variant for u in plan.units] == ["dense", DENSE_FLOAT32, "magnitude@0.5"]
    run_dir = run_study(study)[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["compute_dtype"] == "bfloat16"
    assert manifest["model"]["reference_precision"].endswith("computed in bfloat16")
    descriptors = {json.loads(p.read_text())["variant"]: json.loads(p.read_text())
                   for p in (run_dir / "variants").glob("*.json")}
    assert {v: d["compute_dtype"] for v, d in descriptors.items()} == {
        "dense": "bfloat16", DENSE_FLOAT32: "float32", "magnitude@0.5": "bfloat16"}
    records = merged_records(run_dir)
    table = null_baselines(records)
    row = table[(table["baseline"] == PRECISION_BASELINE) & (table["category"] == "all")].iloc[0]
    assert row["n_pairs"] == len(records[(records["variant"] == "dense") & (records["condition"] == "ambig")])
    lp = ["logprob_0", "logprob_1", "logprob_2"]
    dense = records[records["variant"] == "dense"].sort_values(["seed", "item_id"])[lp].to_numpy()
    f32 = records[records["variant"] == DENSE_FLOAT32].sort_values(["seed", "item_id"])[lp].to_numpy()
    assert 0 < np.abs(dense - f32).max() < TINY_BF16_LOGPROB_BOUND
    from auditor.report.markdown import write_report

    write_report(run_dir)
    report = (run_dir / "report.md").read_text()
    assert "computed in bfloat16" in report
    baselines = report[report.index("Answer-order sensitivity, runtime and precision baselines"):]
    assert "| precision |" in baselines.replace("  ", " ")


def test_float32_run_has_no_precision_unit(tmp_path, tiny_model_dir):
    plan = plan_study(_study(tmp_path, tiny_model_dir, "float32", variants=()))[0]
    assert [u.variant for u in plan.units] == ["dense"]


def test_plan_counts_tokens_times_kinds_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    from tests.study.conftest import write_study

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog near the river bank. " * 40)
    path = write_study(tmp_path / "plan.toml", {
        "name": "plan", "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)],
        "seeds": [0, 1], "null_baselines": False},
        data={"bbq": str(SAMPLE_BBQ), "n_items": 12},
        compression={"variants": ["magnitude@0.5", "bnb-int8"]},
        perplexity={"corpus": str(corpus), "max_length": 32, "stride": 16, "max_tokens": 200},
        execution={"batch_size": 4, "dtype": "bfloat16", "shards": 2})
    assert main(["run", str(path), "--plan", "--plan-groups", "4"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "reports").exists()
    for kind in ("torch bfloat16", "torch float32", "torch bnb-int8"):
        assert f"\n{kind} " in out
    assert "estimated wall time:" in out and "scoring:" in out and "perplexity:" in out

    from auditor.artifacts.models import load_tokenizer
    from auditor.scoring.engine import PromptSet
    from auditor.study.estimate import unit_tokens

    plan = plan_study(load_study(path))[0]
    prompts = PromptSet.build(load_tokenizer(plan.source), plan.context.items, plan.context.seeds)
    tokens = unit_tokens(plan, prompts, 200)
    ppl = [u for u in plan.units if u.kind == "ppl"]
    # windows [0,32), [16,48), ... up to 200: every window's tokens, the overlap counted twice
    assert all(tokens[u.id] == 32 * 11 + 24 for u in ppl)
    for u in plan.units:
        assert f"{u.name} " in out and f"{tokens[u.id]:,}" in out


def test_bench_runtimes_reports_each_kind_against_its_own_peak(tiny_model_dir, capsys):
    from auditor.scoring.backends.factory import available

    kinds = ["torch float32", "torch bfloat16"] + (["llama.cpp Q8_0"] if available("llama.cpp") else [])
    code = main(["bench", "runtimes", "--model", str(tiny_model_dir), "--bbq", str(SAMPLE_BBQ), "--items", "6",
                 "--seeds", "2", "--kinds", ",".join(kinds), "--llama-threads", "1", "--prefill-tokens", "64",
                 "--json"])
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    rows = {r["kind"]: r for r in figures["kinds"]}
    assert list(rows) == kinds and figures["n_items"] == 6
    assert rows["torch float32"]["planned_tokens"] == rows["torch bfloat16"]["planned_tokens"]
    assert rows["torch bfloat16"]["peak"] == "bfloat16 GEMM" and rows["torch float32"]["peak"] == "float32 GEMM"
    for r in rows.values():
        assert r["items_per_s"] > 0 and r["over_peak"] > 0 and r["build_s"] > 0
    if "llama.cpp Q8_0" in rows:
        q8 = rows["llama.cpp Q8_0"]
        assert q8["peak"] == "llama.cpp prefill" and q8["rate_unit"] == "tokens/s"
