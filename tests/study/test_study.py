"""Study files: schema, validation messages, grid expansion, hashing, backends per spec."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from auditor.core.errors import AuditorError, SpecError
from auditor.study.spec import load_study, parse_study
from tests.study.conftest import write_study

ROOT = Path(__file__).resolve().parents[2]


def _study(**over):
    doc = {"name": "t", "compression": {"variants": ["magnitude@0.5"]}}
    doc.update(over)
    return parse_study(doc, source="t.toml")


def test_grid_expands_methods_times_levels_after_dense_and_variants(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("""
name = "grid"
seeds = [0, 1, 2]
[compression]
variants = ["bnb-int8", "magnitude@0.5"]
[[compression.grid]]
methods = ["random", "magnitude"]
levels = [0.3, 0.5]
[[compression.grid]]
methods = ["rtn"]
levels = [8, "3:g64"]
[[compression.grid]]
methods = ["wanda"]
levels = [0.5]
then = "gguf-q4_k_m"
""")
    study = load_study(path)
    assert study.variants == ("dense", "bnb-int8", "magnitude@0.5", "random@0.3", "random@0.5",
                              "magnitude@0.3", "rtn@8", "rtn@3:g64", "wanda@0.5+gguf-q4_k_m")  # magnitude@0.5 once
    assert study.seeds == (0, 1, 2)
    assert study.base_dir == str(tmp_path.resolve())
    assert study.path("out") == tmp_path.resolve() / "out"


@pytest.mark.parametrize("doc, message", [
    ({"name": "t", "modles": ["x"]}, "t.toml: modles: unknown key"),
    ({"name": "t", "trust_remote_code": True}, "--trust-remote-code"),
    ({"name": "t", "data": {"n_items": -3}}, "t.toml: data.n_items: must be positive, got -3"),
    ({"name": "t", "data": {"n_items": "ten"}}, "data.n_items: expected an integer, got str 'ten'"),
    ({"name": "t", "data": {"categories": ["Martian"]}}, "data.categories: unknown category 'Martian'"),
    ({"name": "t", "data": {"condition": "vague"}}, "data.condition: 'vague' is not one of ambig, disambig, both"),
    ({"name": "t", "seeds": [0, 0]}, "seeds: seeds must be distinct"),
    ({"name": "t", "seeds": [True]}, "seeds: expected a list of an integer, found True"),
    ({"name": "t", "seeds": [0, 1, 2, 3, 4, 5, 6]}, "seeds: 7 seeds asked, but three options have only 6 answer orders"),
    ({"name": "t", "seeds": [0, 7]}, "seeds: answer-order seed 7 does not exist: three options have 6 orders"),
    ({"name": "t", "seeds": [-1]}, "seeds: answer-order seed -1 does not exist"),
    ({"name": "t", "backends": ["onnx"]}, "backends: ['onnx']: valid backends are auto, torch, llama.cpp"),
    ({"name": "t", "execution": {"executor": "slurm"}}, "execution.executor: 'slurm': valid executors are local, ray"),
    ({"name": "t", "perplexity": {"max_length": 64, "stride": 128}}, "perplexity.stride: 128 is larger than"),
    ({"name": "t", "compression": {"grid": [{"methods": ["wanda"]}]}}, "compression.grid[1].levels: is required"),
    ({"name": "t", "compression": {"variants": ["wandaa@0.5"]}}, "unknown compressor 'wandaa'"),
    ({"name": "t", "compression": {"variants": ["magnitude@1.5"]}}, "sparsity 1.5 is outside [0, 1)"),
    ({"name": "t", "compression": {"grid": [{"methods": ["rtn"], "levels": [5]}]}}, "5 bits not supported"),
    ({"name": "t", "thresholds": {"max_flips": 0.1}}, "unknown threshold 'max_flips'"),
    ({"seeds": [0]}, "t.toml: name: is required"),
])
def test_bad_study_documents_name_file_and_key(doc, message):
    with pytest.raises(SpecError) as err:
        parse_study(doc, source="t.toml")
    assert message in str(err.value)


def test_gguf_spec_cannot_be_scored_on_torch_only():
    with pytest.raises(SpecError, match=r"'gguf-q8_0' can be scored on llama.cpp only"):
        _study(backends=["torch"], compression={"variants": ["gguf-q8_0"]})


def test_invalid_toml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nseeds = [0,, 1]\n')
    with pytest.raises(SpecError, match=r"broken.toml: invalid TOML: .*line"):
        load_study(path)


def test_hash_covers_results_not_execution_or_thresholds():
    base = _study()
    assert base.hash == _study().hash
    assert len(base.hash) == 64
    # How and where it runs, and the verdict thresholds, do not change a record.
    assert _study(execution={"executor": "ray", "cpus_per_unit": 2}, thresholds={"max_flip_rate": 0.1},
                  output_dir="elsewhere").hash == base.hash
    # The same variants written as a grid are the same study.
    assert _study(compression={"grid": [{"methods": ["magnitude"], "levels": [0.5]}]}).hash == base.hash
    for changed in (_study(seeds=[0, 1]), _study(compression={"variants": ["magnitude@0.6"]}),
                    _study(data={"n_items": 10}), _study(execution={"shards": 2}),
                    _study(execution={"batch_size": 4}), _study(null_baselines=False),
                    _study(perplexity={})):
        assert changed.hash != base.hash
    assert replace(base, trust_remote_code=True).hash == base.hash


def test_backends_per_spec():
    from auditor.study.spec import backends_for

    both = ("torch", "llama.cpp")
    assert backends_for("dense", ("auto",)) == ("torch",)
    assert backends_for("magnitude@0.5", both) == both
    assert backends_for("gguf-q4_k_m", ("auto",)) == ("llama.cpp",)
    assert backends_for("wanda@0.5+gguf-q4_k_m", both) == ("llama.cpp",)
    assert backends_for("bnb-nf4", both) == ("torch",)  # a bitsandbytes model has no GGUF form


def test_repository_studies_parse():
    demo = load_study(ROOT / "studies" / "demo.toml")
    assert demo.models == ("smollm2",) and demo.variants[0] == "dense"
    assert "magnitude@0.5" in demo.variants and "gguf-q4_k_m" in demo.variants  # pruning beside quantization
    paper = load_study(ROOT / "studies" / "paper.toml")
    assert paper.seeds == (0, 1, 2, 3, 4)
    assert paper.data.condition == "ambig"
    assert set(paper.data.categories) == {"Age", "Gender_identity", "Race_ethnicity", "Religion", "SES"}
    for spec in ("random@0.3", "magnitude@0.5", "wanda@0.7", "rtn@3", "bnb-int8", "bnb-nf4", "gguf-q8_0",
                 "gguf-q4_k_m", "gguf-q3_k_m"):
        assert spec in paper.variants


def test_run_name_is_sanitised_into_one_path_component(tmp_path):
    from auditor.core.names import safe_name

    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("a b/c") == "a_b_c"
    with pytest.raises(AuditorError):
        safe_name("../..")
    write_study(tmp_path / "s.toml", {"name": "../../escape"})
    study = load_study(tmp_path / "s.toml")
    from auditor.study.runner import plan_study

    plan = plan_study(replace(study, null_baselines=False, perplexity=None))[0]
    assert plan.run_dir.parent == tmp_path.resolve() / "reports" and plan.run_dir.name == "escape"


def test_partners_setting_is_parsed_checked_and_hashed_only_when_on():
    from auditor.core.errors import SpecError
    from auditor.study.spec import parse_study

    on = parse_study({"name": "t", "data": {"condition": "ambig", "partners": True}}, source="t.toml")
    assert on.data.partners and on.results_definition()["data"]["partners"] is True
    off = parse_study({"name": "t", "data": {"condition": "ambig"}}, source="t.toml")
    assert "partners" not in off.results_definition()["data"]  # studies written before the setting keep their hash
    with pytest.raises(SpecError, match=r"t.toml: data.partners: needs condition = \"ambig\""):
        parse_study({"name": "t", "data": {"partners": True}}, source="t.toml")
    with pytest.raises(SpecError, match=r"t.toml: data.partners: expected"):
        parse_study({"name": "t", "data": {"condition": "ambig", "partners": "yes"}}, source="t.toml")
