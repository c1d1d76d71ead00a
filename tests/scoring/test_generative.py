"""Free-text generation on torch and llama.cpp (tiny random model): prompts, greedy, seeded sampling."""
from __future__ import annotations

import numpy as np
import pytest

from auditor.core.errors import AuditorError
from auditor.data.bbq import select_items
from auditor.data.prompt_format import choose_format
from auditor.data.prompts import answer_order
from auditor.scoring.backends.torch_backend import TorchBackend
from auditor.scoring.generative import (GenerationSettings, answer_line, build_text_prompts, draw_seed, generate,
                                        text_user_message)
from tests.conftest import SAMPLE_BBQ, make_tiny_llama

THREADS = 1  # llama.cpp: the suite shares 2 cores


@pytest.fixture(scope="module")
def items():
    return list(select_items([SAMPLE_BBQ], n=3, seed=0).items)


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer, items):
    return build_text_prompts(choose_format(True).wrap(smollm2_tokenizer), items, (0, 1))


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny_llama(seed=3)


def test_text_prompts_list_the_options_in_each_order_without_letters(smollm2_tokenizer, items, prompts):
    assert [(p.item.item_id, p.seed) for p in prompts] == [(it.item_id, s) for it in items for s in (0, 1)]
    p = prompts[1]
    message = text_user_message(p.item, p.perm)
    lines = message.splitlines()
    listed = lines[lines.index("Options:") + 1:lines.index("Options:") + 4]
    assert p.perm == answer_order(1) and listed == [f"- {p.item.answers[k]}" for k in answer_order(1)]
    assert "A." not in message and "Answer with A" not in message
    text = smollm2_tokenizer.decode(list(p.ids))
    assert message in text and text.endswith("<|im_start|>assistant\n")


def test_answer_line_and_draw_seed():
    assert answer_line("\n  The grandson.\nBecause ...") == "The grandson." and answer_line(" \n\n") == ""
    assert draw_seed(0, "Age/1", 0) == draw_seed(0, "Age/1", 0)
    assert len({draw_seed(0, "Age/1", 0), draw_seed(1, "Age/1", 0), draw_seed(0, "Age/2", 0),
                draw_seed(0, "Age/1", 1)}) == 4
    assert GenerationSettings().draws("generative") == (1, 0.0)
    assert GenerationSettings(samples=4, temperature=0.7).draws("sampled") == (4, 0.7)
    with pytest.raises(ValueError, match="not a free-text protocol"):
        GenerationSettings().draws("strict")


def test_torch_greedy_is_deterministic_and_sampling_is_seeded(smollm2_tokenizer, prompts, tiny_model):
    backend = TorchBackend(tiny_model, pad_id=2)
    greedy = generate(backend, smollm2_tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=6, seed=0)
    assert len(greedy.texts) == len(prompts) and all(len(t) == 1 for t in greedy.texts)
    assert generate(backend, smollm2_tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=6,
                    seed=9).texts == greedy.texts  # greedy ignores the seed
    kwargs = dict(n=3, temperature=1.0, max_new_tokens=6)
    sampled = generate(backend, smollm2_tokenizer, prompts, seed=0, **kwargs)
    assert all(len(t) == 3 for t in sampled.texts)
    # The same seed gives the same texts, whatever else is generated in the call (a shard of the prompts).
    assert generate(backend, smollm2_tokenizer, prompts[3:], seed=0, **kwargs).texts == sampled.texts[3:]
    assert generate(backend, smollm2_tokenizer, prompts, seed=1, **kwargs).texts != sampled.texts
    # A random model sampled at T = 1 over 49k tokens does not repeat itself within a prompt's draws.
    assert any(len(set(t)) > 1 for t in sampled.texts)


def test_bad_generation_arguments(smollm2_tokenizer, prompts, tiny_model):
    backend = TorchBackend(tiny_model, pad_id=2)
    with pytest.raises(ValueError, match="n must be 1 at temperature 0"):
        generate(backend, smollm2_tokenizer, prompts, n=2, temperature=0.0, max_new_tokens=4, seed=0)

    class Other:
        name = "other"
    with pytest.raises(AuditorError, match="the other backend cannot generate text"):
        generate(Other(), smollm2_tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=4, seed=0)


def test_llama_cpp_generation_is_seeded_and_leaves_letter_scoring_intact(tmp_path, smollm2_tokenizer, prompts,
                                                                         tiny_model):
    from auditor.scoring.backends.factory import available

    if not available("llama.cpp"):
        pytest.skip("llama.cpp backend modules are not importable")
    from auditor.artifacts.gguf_writer import write_gguf
    from auditor.scoring.backends.llama_backend import LlamaCppBackend
    from auditor.scoring.engine import PromptSet

    path = write_gguf(tiny_model, tmp_path / "tiny-f32.gguf", tokenizer=smollm2_tokenizer, outtype="f32").path
    letters = PromptSet.build(smollm2_tokenizer, [p.item for p in prompts[::2]], (0, 1))
    backend = LlamaCppBackend(path, n_ctx=512, n_threads=THREADS)
    try:
        before = backend.letter_logprobs(letters.groups, letters.letter_ids)
        greedy = generate(backend, smollm2_tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=6, seed=0)
        assert greedy.texts == generate(backend, smollm2_tokenizer, prompts, n=1, temperature=0.0,
                                        max_new_tokens=6, seed=0).texts
        sampled = generate(backend, smollm2_tokenizer, prompts, n=2, temperature=1.0, max_new_tokens=6, seed=0)
        assert sampled.texts == generate(backend, smollm2_tokenizer, prompts, n=2, temperature=1.0,
                                         max_new_tokens=6, seed=0).texts
        assert all(len(t) == 2 for t in sampled.texts) and any(len(set(t)) > 1 for t in sampled.texts)
        # Generating moved llama.cpp's KV cache under the backend: its letter scores are still the same.
        after = backend.letter_logprobs(letters.groups, letters.letter_ids)
        for a, b in zip(before, after):
            np.testing.assert_allclose(a, b, atol=1e-5)
    finally:
        backend.close()
