"""Spec parsing: the issue's examples, canonical spec text, and errors that list what is valid."""
from __future__ import annotations

import importlib.util

import pytest

from auditor.core.errors import SpecError
from compressors.registry import REGISTRY, parse_chain, parse_one

HAS_GGUF_QUANT = importlib.util.find_spec("compressors.gguf_quant") is not None


@pytest.mark.parametrize("spec,method,family,level,params", [
    ("random@0.3", "random", "prune", 0.3, {}),
    ("magnitude@0.5", "magnitude", "prune", 0.5, {}),
    ("wanda@0.7", "wanda", "prune", 0.7, {}),
    ("wanda@2:4", "wanda", "prune", 0.5, {"n": 2, "m": 4}),
    ("wanda-dense@0.5", "wanda-dense", "prune", 0.5, {}),
    ("bnb-int8", "bnb-int8", "quantize", None, {}),
    ("bnb-nf4", "bnb-nf4", "quantize", None, {}),
    ("rtn@3:g64", "rtn", "quantize", 3.0, {"group_size": 64}),
    ("rtn@8", "rtn", "quantize", 8.0, {"group_size": 128}),
])
def test_issue_examples_parse(spec, method, family, level, params):
    step = parse_one(spec)
    assert (step.method, step.family, step.level) == (method, family, level)
    assert {k: v for k, v in step.params.items() if k in ("n", "m", "group_size")} == params
    assert step.spec == spec  # canonical text round-trips


@pytest.mark.skipif(not HAS_GGUF_QUANT, reason="compressors.gguf_quant (another engineer's) not written yet")
@pytest.mark.parametrize("spec", ["gguf-q8_0", "gguf-q4_k_m", "gguf-q3_k_m"])
def test_gguf_specs_parse(spec):
    assert parse_one(spec).spec == spec


def test_spec_text_is_canonical():
    assert parse_one("wanda@0.50").spec == "wanda@0.5"
    assert parse_one("rtn@4:g128").spec == "rtn@4"  # 128 is the default group size
    assert [s.spec for s in parse_chain("wanda@0.5+bnb-nf4")] == ["wanda@0.5", "bnb-nf4"]
    assert parse_chain("dense") == [] and parse_chain("") == []


def test_calibration_need_is_declared():
    assert parse_one("wanda@0.5").needs_calibration and parse_one("wanda-dense@2:4").needs_calibration
    assert not parse_one("magnitude@0.5").needs_calibration and not parse_one("rtn@4").needs_calibration


def test_unknown_name_lists_every_valid_spec():
    with pytest.raises(SpecError) as err:
        parse_one("wandaa@0.5")
    message = str(err.value)
    assert "Did you mean wanda" in message and "Valid:" in message
    for name in REGISTRY:
        assert name in message


@pytest.mark.parametrize("spec,needle", [
    ("magnitude@1", r"outside \[0, 1\)"),
    ("random@-0.1", r"outside \[0, 1\)"),
    ("wanda@1.5", r"outside \[0, 1\)"),
    ("magnitude", r"sparsity is required.*\[0, 1\)"),
    ("magnitude@half", r"not a number.*\[0, 1\)"),
    ("magnitude@2:4", "N:M patterns are for wanda"),
    ("wanda@4:2", "0 < N < M"),
    ("wanda@2:x", "two integers"),
    ("rtn@5", r"5 bits not supported \(valid: 3, 4, 8\)"),
    ("rtn@2:g64", r"valid: 3, 4, 8"),
    ("rtn", r"bits are required.*3, 4, 8"),
    ("rtn@4:g0", r"group size 0 is outside \[1, 16384\]"),
    ("rtn@8:g100000000000", r"group size 100000000000 is outside \[1, 16384\]"),
    ("wanda@2:100000", r"N:M needs 0 < N < M <= 64"),
    ("rtn@4:gx", "BITS"),
    ("bnb-int8@8", "takes no level"),
])
def test_bad_levels_say_what_is_valid(spec, needle):
    with pytest.raises(SpecError, match=needle):
        parse_one(spec)


def test_chain_order_rules():
    with pytest.raises(SpecError, match="prune before quantizing"):
        parse_chain("rtn@4+magnitude@0.5")
    with pytest.raises(SpecError, match="at most one quantize step"):
        parse_chain("rtn@4+bnb-int8")
    assert [s.method for s in parse_chain("magnitude@0.3+wanda@0.5+rtn@4")] == ["magnitude", "wanda", "rtn"]
