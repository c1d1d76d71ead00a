"""The study's [decision] table: the `auditor decide` flags with "_" for "-", parsed by the same functions,
validated when the study is read (one line naming the file and the key), and outside the study hash."""
from __future__ import annotations

import pytest

from auditor.core.errors import SpecError
from auditor.study.spec import DECISION_KEYS, load_study, parse_study

BASE = 'name = "d"\nmodels = ["smollm2"]\n'


def study_file(tmp_path, body: str):
    path = tmp_path / "study.toml"
    path.write_text(BASE + "[decision]\n" + body)
    return path


def test_decision_table_parsed_in_constraint_units(tmp_path):
    study = load_study(study_file(tmp_path, 'max_size = "300MB"\nmin_decode_tps = 20\nmax_peak_memory = "2GiB"\n'
                                            'max_grade = "Not-Shown"\nmin_same_top = "80%"\nmax_kl = 0.01\n'
                                            'min_accuracy = 0.5\n'))
    assert study.decision == {"max_size_bytes": 300e6, "min_decode_tokens_per_s": 20.0,
                              "max_peak_rss_bytes": 2 * 2**30, "max_grade": "not shown", "min_same_top": 0.8,
                              "max_kl": 0.01, "min_accuracy": 0.5}
    assert set(study.decision) == {field for field, _ in DECISION_KEYS.values()}  # every key covered
    assert study.to_json()["decision"] == study.decision  # what the manifest records for `auditor decide`


def test_no_table_no_constraints():
    assert parse_study({"name": "d"}).decision == {}


def test_decision_is_not_part_of_the_study_hash():
    """Constraints judge finished records; changing them must not redo the run."""
    plain = parse_study({"name": "d"})
    constrained = parse_study({"name": "d", "decision": {"max_size": "1GB", "max_grade": "low"}})
    assert plain.hash == constrained.hash


@pytest.mark.parametrize("body, message", [
    ('max_size = "300XB"\n', "[decision] max_size '300XB': expected a size such as 300MB"),
    ('max_size = "1e999GB"\n', "[decision] max_size '1e999GB': must be a finite size"),
    ("max_size = 300\n", 'decision.max_size: 300: give the unit, e.g. max_size = "300MB"'),
    ("min_decode_tps = -1\n", "[decision] min_decode_tps -1.0: must be a finite number >= 0"),
    ("min_decode_tps = nan\n", "[decision] min_decode_tps nan: must be a finite number >= 0"),
    ("max_kl = inf\n", "[decision] max_kl inf: must be a finite number >= 0"),
    ("min_decode_tps = true\n", "decision.min_decode_tps: expected a number, got a boolean"),
    ("min_same_top = 1.5\n", "[decision] min_same_top 1.5: a share is between 0 and 1"),
    ('min_accuracy = "120%"\n', "[decision] min_accuracy '120%': a share is between 0 and 1"),
    ('max_grade = "medium"\n', "[decision] max_grade 'medium': valid grades are low, not shown, elevated, high"),
    ("max_grade = 1\n", "decision.max_grade: expected a string, got int 1"),
])
def test_bad_values_one_line_naming_file_and_key(tmp_path, body, message):
    path = study_file(tmp_path, body)
    with pytest.raises(SpecError) as exc:
        load_study(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize("key, hint", [
    ("max-size", "spell it max_size"),  # the flag's spelling
    ("max_size_bytes", "spell it max_size"),  # the Python field's
    ("max_flip_rate", "a gate threshold: put it in [thresholds]"),
    ("budget", ""),
])
def test_unknown_keys_refused(tmp_path, key, hint):
    path = study_file(tmp_path, f'"{key}" = "1GB"\n')
    with pytest.raises(SpecError) as exc:
        load_study(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: decision.{key}: unknown key") and hint in text and "\n" not in text
    assert "valid keys here: " + ", ".join(sorted(DECISION_KEYS)) in text
