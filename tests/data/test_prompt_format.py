"""Prompt formats: the model's chat template, a template file, or the plain base-model format."""
from __future__ import annotations

import copy

import pytest

from auditor.core.errors import AuditorError
from auditor.data.bbq import select_items
from auditor.data.prompt_format import CHAT_VERSION, PLAIN_VERSION, choose_format, template_from_file
from auditor.data.prompts import answer_order, build_groups, letter_token_ids
from tests.conftest import SAMPLE_BBQ


@pytest.fixture(scope="module")
def items():
    return select_items([SAMPLE_BBQ], n=4, seed=0).items


@pytest.fixture(scope="module")
def base_tokenizer(smollm2_tokenizer):
    """SmolLM2's BPE with no chat template and a post-processor that adds BOS, like a base model's."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(smollm2_tokenizer.backend_tokenizer)
    bos = smollm2_tokenizer.convert_ids_to_tokens(1)
    backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos)
    assert not tok.chat_template
    return tok


def test_the_format_is_chosen_from_the_template_and_the_file(tmp_path):
    assert choose_format(True).version == CHAT_VERSION
    assert choose_format(False).version == PLAIN_VERSION
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    fmt = choose_format(False, path)
    assert fmt.kind == "template" and fmt.version.startswith(CHAT_VERSION + "+template-") and str(path) in fmt.describe()
    path.write_text("other")
    assert template_from_file(path).version != fmt.version  # the version follows the content
    with pytest.raises(AuditorError, match="missing.jinja"):
        choose_format(True, tmp_path / "missing.jinja")
    (tmp_path / "empty.jinja").write_text("  \n")
    with pytest.raises(AuditorError, match="empty.jinja: chat template file is empty"):
        choose_format(True, tmp_path / "empty.jinja")


def test_plain_format_for_a_base_model_starts_with_bos_and_ends_with_the_answer_cue(base_tokenizer, items):
    fmt = choose_format(bool(base_tokenizer.chat_template))
    groups = build_groups(fmt.wrap(base_tokenizer), items, seeds=(0, 1))
    for item, group in zip(items, groups):
        for i, perm in enumerate(group.perms):
            ids = list(group.full_ids(i))
            text = base_tokenizer.decode(ids)
            assert ids[0] == 1  # BOS, as the tokenizer adds it to text
            assert text.endswith("Answer with A, B or C.\nAnswer:\n")
            assert item.context in text and f"A. {item.answers[perm[0]]}" in text
    assert len(set(letter_token_ids(base_tokenizer))) == 3


def test_chat_format_is_the_model_template_unchanged(smollm2_tokenizer, items):
    fmt = choose_format(bool(smollm2_tokenizer.chat_template))
    assert fmt.wrap(smollm2_tokenizer) is smollm2_tokenizer
    assert build_groups(fmt.wrap(smollm2_tokenizer), items, (0,)) == build_groups(smollm2_tokenizer, items, (0,))


def test_template_file_renders_the_conversation(tmp_path, base_tokenizer, items):
    path = tmp_path / "t.jinja"
    path.write_text("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}<assistant>{% endif %}")
    wrapped = choose_format(False, path).wrap(base_tokenizer)
    [group] = build_groups(wrapped, items[:1], (0,))
    text = base_tokenizer.decode(list(group.full_ids(0)))
    assert text.startswith(base_tokenizer.bos_token + "<system>") and text.endswith("<assistant>")
    assert answer_order(0) == group.perms[0]


def test_prompt_set_records_the_format_in_every_record(base_tokenizer, items):
    import numpy as np

    from auditor.scoring.engine import PromptSet, score

    prompts = PromptSet.build(base_tokenizer, items, (0, 1))
    assert prompts.prompt_format == PLAIN_VERSION

    class Fixed:
        name = "fixed"

        def letter_logprobs(self, groups, letter_ids):
            return [np.log(np.full((len(g.suffix_ids), 3), 1 / 3)) for g in groups]

    records = score(Fixed(), prompts, "dense").records
    assert (records["prompt_format"] == PLAIN_VERSION).all() and len(records) == 2 * len(items)


def test_the_measurement_workload_of_a_base_model_uses_the_plain_format(base_tokenizer):
    # `auditor measure` once built its BBQ prompts with the chat template only, and a base
    # model without one (Gemma 3 270M) failed with transformers' ValueError.
    from auditor.measure.measurement import build_workload

    workload = build_workload(base_tokenizer, bbq_items=2)
    assert len(workload.groups) == 2
    assert base_tokenizer.decode(list(workload.prompt_ids)).endswith("Answer with A, B or C.\nAnswer:\n")
    assert PLAIN_VERSION in workload.origin
    assert workload.letter_ids == letter_token_ids(base_tokenizer)
