"""Property: the BBQ loader, fed corrupted files, returns valid items or raises DataError - nothing else.

Corruptions start from valid fixture lines: byte flips, truncation, deleted keys
(top-level and nested), values replaced by JSON of another type, inserted
non-UTF-8 bytes and odd line separators.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auditor.core.errors import DataError
from auditor.data.bbq import CATEGORIES, BBQItem, read_jsonl, select_items
from tests.conftest import SAMPLE_BBQ

LINES = [line for f in sorted(SAMPLE_BBQ.glob("*.jsonl")) for line in f.read_text().splitlines() if line.strip()]
# Where a key can be deleted or its value replaced: top level and one level down.
PATHS = sorted({(k,) for k in json.loads(LINES[0])}
               | {(k, sub) for k, v in json.loads(LINES[0]).items() if isinstance(v, dict) for sub in v})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def corrupted_line(draw) -> bytes:
    raw = json.loads(draw(st.sampled_from(LINES)))
    kind = draw(st.sampled_from(["delete", "retype", "flip", "truncate", "non_utf8", "separator", "none"]))
    if kind in ("delete", "retype"):
        path = draw(st.sampled_from(PATHS))
        holder = raw if len(path) == 1 else raw.get(path[0])
        if isinstance(holder, dict) and path[-1] in holder:
            if kind == "delete":
                del holder[path[-1]]
            else:
                holder[path[-1]] = draw(json_values)
    data = bytearray(json.dumps(raw).encode())
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "non_utf8":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
    elif kind == "separator":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from(["\u2028", "\x1c", "\x85", "\r", "\x00"])).encode()
    return bytes(data)


def _check_item(item: BBQItem) -> None:
    assert item.category in CATEGORIES
    assert item.condition in ("ambig", "disambig") and item.polarity in ("neg", "nonneg")
    assert item.label in (0, 1, 2) and isinstance(item.example_id, int)
    assert len(item.answers) == 3 and all(isinstance(a, str) for a in item.answers)
    for index in (item.unknown_index, item.stereotype_index):
        assert index is None or index in (0, 1, 2)


def _line(**changes) -> bytes:
    raw = json.loads(LINES[0])
    raw.update(changes)
    return json.dumps(raw).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Regressions the property found: an infinite or huge id (OverflowError, int64 overflow in Parquet),
# non-string texts, a string where a list belongs (iterated letter by letter).
@example([_line(example_id=float("inf"))], "both")
@example([_line(label=1e400)], "both")
@example([_line(example_id=10**30)], "both")
@example([_line(context=None)], "both")
@example([_line(additional_metadata={"stereotyped_groups": "old", "subcategory": "None"})], "both")
@example([_line(answer_info={"ans0": "ab", "ans1": ["Unknown", "unknown"], "ans2": ["x", "old"]})], "both")
@example([_line(example_id="\u00b2")], "both")
@given(st.lists(corrupted_line(), min_size=1, max_size=4), st.sampled_from(["ambig", "disambig", "both"]))
def test_corrupted_bbq_files_load_or_raise_data_error(lines, condition):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Age.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        try:
            parsed = read_jsonl(path)
        except DataError as exc:
            assert str(path) in str(exc)
        else:
            for item, reason in parsed:
                _check_item(item)
                assert isinstance(reason, str)
        try:
            selection = select_items([path], condition=condition)
        except DataError as exc:
            assert str(path) in str(exc) or "Age.jsonl" in str(exc) or tmp in str(exc)
        else:
            assert selection.items
            for item in selection.items:
                _check_item(item)
                assert item.resolved


def test_data_error_names_the_physical_line(tmp_path):
    """Line numbers count newline-separated lines, as editors do, even with U+2028 inside a string."""
    good = json.loads(LINES[0])
    good["context"] = "first part\u2028second part"
    path = tmp_path / "Age.jsonl"
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n" + "{broken\n", encoding="utf-8")
    try:
        read_jsonl(path)
    except DataError as exc:
        assert f"{path}:2: malformed JSON" in str(exc)
    else:
        raise AssertionError("line 2 is not JSON")
