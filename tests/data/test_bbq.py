"""BBQ loader: errors name file and line; answer roles resolve; stratified sampling."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from auditor.core.errors import DataError, SpecError
from auditor.data.bbq import CATEGORIES, read_jsonl, resolve_roles, select_items
from tests.conftest import SAMPLE_BBQ


def _lines(category: str = "SES") -> list[str]:
    return (SAMPLE_BBQ / f"{category}.jsonl").read_text().splitlines()


def _write(tmp_path: Path, lines: list[str], name: str = "SES.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    lines = _lines()
    lines[2] = lines[2][:40]
    path = _write(tmp_path, lines)
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"{path}:3" in str(err.value) and "malformed JSON" in str(err.value)
    assert err.value.line == 3


def test_missing_field_names_file_line_and_field(tmp_path):
    lines = _lines()
    raw = json.loads(lines[4])
    del raw["context"]
    lines[4] = json.dumps(raw)
    path = _write(tmp_path, lines)
    with pytest.raises(DataError, match=r"SES\.jsonl:5: missing field\(s\) context"):
        read_jsonl(path)


def test_unknown_category_in_file_names_line(tmp_path):
    lines = _lines()
    raw = json.loads(lines[0])
    raw["category"] = "Astrology"
    lines[0] = json.dumps(raw)
    path = _write(tmp_path, lines)
    with pytest.raises(DataError, match=r":1: unknown category 'Astrology'"):
        read_jsonl(path)


def test_unknown_category_option_is_rejected():
    with pytest.raises(SpecError, match="categories: unknown category Astrology"):
        select_items([SAMPLE_BBQ], categories=["Astrology"])


def test_missing_category_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no file for category Sexual_orientation"):
        select_items([SAMPLE_BBQ.parent / "bbq_sample"], categories=["Religion", "Sexual_orientation"])


def test_roles_resolve_with_spelling_differences():
    # "lowSES" in answer_info vs "low SES" in stereotyped_groups.
    info = {"ans0": ["poor", "lowSES"], "ans1": ["Unknown", "unknown"], "ans2": ["rich", "highSES"]}
    assert resolve_roles(info, ["low SES"], "neg") == (1, 0, "")
    assert resolve_roles(info, ["low SES"], "nonneg") == (1, 2, "")
    # "F" vs "woman"; intersectional "F-Black" vs "Black"; Nationality region vs nationality text.
    assert resolve_roles({"ans0": ["man", "man"], "ans1": ["woman", "woman"], "ans2": ["?", "unknown"]},
                         ["F"], "neg")[1] == 1
    assert resolve_roles({"ans0": ["Ayanna", "F-Black"], "ans1": ["Jenny", "F-White"],
                          "ans2": ["?", "unknown"]}, ["Black", "African American"], "neg")[1] == 0
    assert resolve_roles({"ans0": ["Italian", "Europe"], "ans1": ["Nigerian", "Africa"],
                          "ans2": ["?", "unknown"]}, ["Nigerian"], "nonneg")[1] == 0


def test_ambiguous_groups_are_not_guessed():
    info = {"ans0": ["African", "African"], "ans1": ["Kenyan", "African"], "ans2": ["?", "unknown"]}
    unknown, stereo, reason = resolve_roles(info, ["African"], "neg")
    assert unknown == 2 and stereo is None and "both" in reason


def test_stratified_sample_is_seeded_and_proportional():
    a = select_items([SAMPLE_BBQ], condition="ambig", n=20, seed=3)
    b = select_items([SAMPLE_BBQ], condition="ambig", n=20, seed=3)
    c = select_items([SAMPLE_BBQ], condition="ambig", n=20, seed=4)
    assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
    assert [i.item_id for i in a.items] != [i.item_id for i in c.items]
    assert len(a.items) == 20 and all(i.condition == "ambig" for i in a.items)
    # 5 categories x 2 polarities, equal strata of 4: each stratum gets exactly 2.
    strata = Counter((i.category, i.polarity) for i in a.items)
    assert set(strata.values()) == {2} and len(strata) == 10


def test_item_identity_is_category_and_example_id():
    sel = select_items([SAMPLE_BBQ])
    ids = [i.item_id for i in sel.items]
    assert len(ids) == len(set(ids)) == 80
    assert sum(1 for i in sel.items if i.example_id == 0) == 5  # example_id restarts per category


@pytest.mark.shared
def test_every_shared_category_resolves_except_a_handful(shared_bbq):
    unresolved_total = 0
    for category in CATEGORIES:
        rows = read_jsonl(shared_bbq / f"{category}.jsonl")
        bad = [(item.item_id, reason) for item, reason in rows if not item.resolved]
        unresolved_total += len(bad)
        # Unresolved items are those whose two answers name the same group: under 1% per category.
        assert len(bad) <= 0.01 * len(rows), (category, bad[:5])
        for item, _ in rows:
            if item.resolved:
                assert item.stereotype_index != item.unknown_index
    print(f"unresolved items across BBQ: {unresolved_total}")
    assert unresolved_total < 100


@pytest.mark.shared
def test_shared_selection_of_300_ambiguous_items(shared_bbq):
    cats = ["Age", "Gender_identity", "Race_ethnicity", "Religion", "SES"]
    sel = select_items([shared_bbq], categories=cats, condition="ambig", n=300, seed=0)
    assert len(sel.items) == 300
    assert {i.category for i in sel.items} == set(cats)
    assert all(i.condition == "ambig" and i.resolved for i in sel.items)


def test_regenerated_categories_are_named_in_the_origin(tmp_path):
    from auditor.data.sources import resolve_bbq

    (tmp_path / "README.md").write_text("| file | items | origin |\n| --- | ---: | --- |\n"
                                        "| Age.jsonl | 3680 | official release |\n"
                                        "| SES.jsonl | 6864 | regenerated from the official templates |\n")
    (tmp_path / "Age.jsonl").write_text("")
    (tmp_path / "SES.jsonl").write_text("")
    origin = resolve_bbq(tmp_path).origin
    assert "SES regenerated" in origin and "Age" not in origin.split("(")[1]
    # One file of the folder: only its own category can be regenerated.
    assert "regenerated from" not in resolve_bbq(tmp_path / "Age.jsonl").origin
    assert "SES regenerated" in resolve_bbq(tmp_path / "SES.jsonl").origin


def test_partners_are_the_same_template_fills_disambiguated():
    ambiguous = select_items([SAMPLE_BBQ], condition="ambig", n=10, seed=3)
    paired = select_items([SAMPLE_BBQ], condition="ambig", n=10, seed=3, partners=True)
    amb = [it for it in paired.items if it.condition == "ambig"]
    dis = [it for it in paired.items if it.condition == "disambig"]
    assert [it.item_id for it in amb] == [it.item_id for it in ambiguous.items]  # n counts ambiguous items
    assert len(dis) == len(amb) == 10 and len({it.item_id for it in paired.items}) == 20
    for a in amb:
        (d,) = [d for d in dis if d.context.startswith(a.context) and d.question == a.question]
        assert (d.category, d.question_index, d.polarity, d.answers) == (a.category, a.question_index,
                                                                          a.polarity, a.answers)
        assert len(d.context) > len(a.context)


def test_partners_need_ambiguous_sampling():
    with pytest.raises(SpecError, match="partners: needs condition 'ambig'"):
        select_items([SAMPLE_BBQ], condition="both", partners=True)


def test_a_missing_partner_is_warned_and_identical_items_get_distinct_partners(tmp_path, caplog):
    rows = [json.loads(line) for line in _lines()]
    amb = next(r for r in rows if r["context_condition"] == "ambig")
    dis = next(r for r in rows if r["context_condition"] == "disambig" and r["context"].startswith(amb["context"])
               and r["question"] == amb["question"])
    twin_amb = dict(amb, example_id=9001)  # the same fill twice (BBQ has a few), and a second partner for it
    twin_dis = dict(dis, example_id=9002)
    orphan = dict(amb, example_id=9003, context="A context that no disambiguated item extends.")
    path = _write(tmp_path, [json.dumps(r) for r in (amb, dis, twin_amb, twin_dis, orphan)])
    with caplog.at_level("WARNING"):
        selection = select_items([path], condition="ambig", partners=True)
    ids = sorted(it.item_id for it in selection.items if it.condition == "disambig")
    assert ids == sorted({f"SES/{dis['example_id']}", "SES/9002"})
    assert "1 of 3 sampled ambiguous items have no disambiguated partner" in caplog.text
