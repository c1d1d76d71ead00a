"""The llama.cpp backend against torch on a tiny model exported to GGUF F32; KV reuse; errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from auditor.core.errors import AuditorError, ModelError
from tests.conftest import SAMPLE_BBQ, make_tiny_llama

# One llama.cpp thread: the suite shares 2 cores, and llama.cpp's spinning
# worker threads slow down badly when cores are oversubscribed.
THREADS = 1


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny_llama(seed=3)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model, smollm2_tokenizer):
    from auditor.artifacts.gguf_writer import write_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    return write_gguf(tiny_model, path, tokenizer=smollm2_tokenizer, outtype="f32").path


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer):
    from auditor.data.bbq import select_items
    from auditor.scoring.engine import PromptSet

    items = select_items([SAMPLE_BBQ], n=10, seed=0).items
    return PromptSet.build(smollm2_tokenizer, items, (0, 1, 2))


@pytest.fixture(scope="module")
def backend(tiny_gguf):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    b = LlamaCppBackend(tiny_gguf, n_ctx=512, n_threads=THREADS)
    yield b
    b.close()


def _torch_logits(model, ids):
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([list(ids)])).logits[0].double().numpy()


def test_same_answers_as_the_torch_backend(backend, tiny_model, prompts):
    from auditor.scoring.backends.torch_backend import TorchBackend

    llama = backend.letter_logprobs(prompts.groups, prompts.letter_ids)
    torch_ = TorchBackend(tiny_model, batch_size=8, pad_id=2).letter_logprobs(prompts.groups, prompts.letter_ids)
    assert [a.shape for a in llama] == [(3, 3)] * len(prompts.groups)
    diff = max(np.abs(a - b).max() for a, b in zip(llama, torch_))
    assert diff < 1e-3
    # Exactly equal answers are meaningful only if torch's own margins exceed the runtime noise.
    margins = np.concatenate([np.diff(np.sort(b, axis=1)[:, -2:], axis=1)[:, 0] for b in torch_])
    assert margins.min() > 2 * diff
    assert all((a.argmax(1) == b.argmax(1)).all() for a, b in zip(llama, torch_))


def test_kv_prefix_reuse_equals_full_recompute(backend, tiny_gguf, prompts):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    assert all(len(g.prefix_ids) > 20 for g in prompts.groups)  # there is a prefix to reuse
    before = backend.tokens_decoded
    reused = backend.letter_logprobs(prompts.groups, prompts.letter_ids)
    decoded = backend.tokens_decoded - before
    per_group = sum(len(g.prefix_ids) + sum(len(s) for s in g.suffix_ids) for g in prompts.groups)
    # The system prompt is decoded once for all items, not once per item.
    assert decoded <= per_group - (len(prompts.groups) - 1) * 20
    # `auditor run --plan` counts these tokens without a runtime.
    from auditor.scoring.backends.llama_backend import planned_decode_tokens

    assert planned_decode_tokens(prompts.groups) == decoded
    fresh = LlamaCppBackend(tiny_gguf, n_ctx=512, n_threads=THREADS, reuse_prefix=False)
    try:
        full = fresh.letter_logprobs(prompts.groups, prompts.letter_ids)
    finally:
        fresh.close()
    assert max(np.abs(a - b).max() for a, b in zip(reused, full)) < 1e-4


def test_letter_scores_are_logits_and_full_vocab_log_softmax(backend, tiny_model, prompts):
    from auditor.scoring.backends.llama_backend import log_softmax

    group = prompts.groups[0]
    [scores] = backend.letter_scores([group], prompts.letter_ids)
    letters = list(prompts.letter_ids)
    for s in range(len(group.suffix_ids)):
        last = _torch_logits(tiny_model, group.full_ids(s))[-1]
        assert np.abs(scores.logits[s] - last[letters]).max() < 1e-3
        assert np.abs(scores.logprobs[s] - log_softmax(last)[letters]).max() < 1e-3
    assert (scores.logprobs < 0).all() and (scores.logprobs > scores.logits - 20).all()


def test_llama_cpp_tokenizes_every_prompt_to_the_same_ids(backend, smollm2_tokenizer, prompts):
    from auditor.data.prompts import prompt_text

    texts, ids = [], []
    for item, group in zip(prompts.items, prompts.groups):
        for s, perm in enumerate(group.perms):
            texts.append(prompt_text(smollm2_tokenizer, item, perm))
            ids.append(list(group.full_ids(s)))
    assert backend.check_tokenization(smollm2_tokenizer, texts) == len(texts) == prompts.n_prompts
    assert [backend.tokenize(t) for t in texts] == ids


def test_check_tokenization_names_the_first_difference(backend):
    class Shifted:
        def encode(self, text, add_special_tokens=False):
            return [t + 1 for t in backend.tokenize(text)]

    with pytest.raises(AuditorError, match="differently from the HF tokenizer at token 0"):
        backend.check_tokenization(Shifted(), ["Who was it?"])


def test_token_logprobs_match_torch_across_batch_chunks(tiny_gguf, tiny_model):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend, log_softmax

    ids = np.random.default_rng(1).integers(17, 49152, size=50).tolist()
    b = LlamaCppBackend(tiny_gguf, n_ctx=64, n_batch=16, n_threads=THREADS)  # 50 tokens = 4 decode calls
    try:
        got = b.token_logprobs(ids)
        # llama.cpp may round the context up (to a multiple of 256); the error names the real one.
        with pytest.raises(AuditorError, match=f"exceed the llama.cpp context of {b.n_ctx}"):
            b.token_logprobs(ids * (b.n_ctx // len(ids) + 1))
        assert b.token_logprobs(ids[:1]).shape == (0,)
    finally:
        b.close()
    ref = log_softmax(_torch_logits(tiny_model, ids)[:-1])[np.arange(49), ids[1:]]
    assert got.shape == (49,)
    assert np.abs(got - ref).max() < 1e-4


def test_unusable_files_are_model_errors(tmp_path, tiny_gguf):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    with pytest.raises(ModelError, match="no such model"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:4096])
    with pytest.raises(ModelError, match="truncated.gguf"):
        LlamaCppBackend(truncated, n_threads=THREADS)
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        LlamaCppBackend(text)


def test_prompts_too_long_or_out_of_vocabulary_are_refused(tiny_gguf, prompts):
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    b = LlamaCppBackend(tiny_gguf, n_ctx=32, n_threads=THREADS)
    try:
        long = dataclasses.replace(prompts.groups[0], prefix_ids=(1,) * b.n_ctx)
        with pytest.raises(AuditorError, match=f"exceeds the llama.cpp context of {b.n_ctx}"):
            b.letter_logprobs([long], prompts.letter_ids)
        bad = dataclasses.replace(prompts.groups[0], prefix_ids=(1, 2), suffix_ids=((60000,),))
        with pytest.raises(AuditorError, match="token id 60000 outside"):
            b.letter_logprobs([bad], prompts.letter_ids)
    finally:
        b.close()


@pytest.fixture(scope="module")
def smollm2_f32_gguf(tmp_path_factory, smollm2_model, smollm2_tokenizer):
    """The embedded model exported to GGUF F32 once, for the real-model tests below."""
    from auditor.artifacts.gguf_writer import write_gguf

    path = tmp_path_factory.mktemp("smollm2") / "smollm2-f32.gguf"
    return write_gguf(smollm2_model, path, tokenizer=smollm2_tokenizer, outtype="f32").path


@pytest.mark.slow
def test_real_model_f32_export_agrees_with_torch(smollm2_f32_gguf, smollm2_model, prompts):
    """A few fixture prompts end to end on SmolLM2 (the full check is `auditor bench agreement`)."""
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    groups = prompts.groups[:3]
    b = LlamaCppBackend(smollm2_f32_gguf, n_threads=THREADS)
    try:
        scores = b.letter_scores(groups, prompts.letter_ids)
    finally:
        b.close()
    letters = list(prompts.letter_ids)
    for group, sc in zip(groups, scores):
        for s in range(len(group.suffix_ids)):
            last = _torch_logits(smollm2_model, group.full_ids(s))[-1]
            assert np.abs(sc.logits[s] - last[letters]).max() < 0.05


@pytest.mark.parametrize("amx", [True, False])
def test_extra_weight_buffers_are_off_exactly_on_amx_cpus(tiny_gguf, monkeypatch, amx):
    """ggml's AMX repacking segfaults in llama_decode (open_llama's docstring); the default stays elsewhere."""
    from llama_cpp import llama_cpp as lib

    from auditor.scoring.backends.llama_backend import open_llama

    info = b"CPU : AVX2 = 1 | AVX512 = 1 | " + (b"AMX_INT8 = 1 | " if amx else b"") + b"REPACK = 1 | "
    monkeypatch.setattr(lib, "llama_print_system_info", lambda: info)
    default = lib.llama_model_default_params
    llm = open_llama(tiny_gguf, n_ctx=64, n_threads=THREADS, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is (not amx)
        assert default().use_extra_bufts  # llama.cpp's own default is on ...
        assert lib.llama_model_default_params is default  # ... and is given back after the load
    finally:
        llm.close()


@pytest.mark.slow
def test_real_model_q8_0_scores_on_this_cpu(tmp_path, smollm2_f32_gguf, prompts):
    """SmolLM2 quantized to Q8_0 scores its prompts: on an AMX CPU this segfaulted before open_llama."""
    from auditor.scoring.backends.llama_backend import LlamaCppBackend
    from compressors.gguf_quant import quantize_gguf

    q8 = tmp_path / "smollm2-q8_0.gguf"
    quantize_gguf(smollm2_f32_gguf, q8, "Q8_0", n_threads=THREADS)
    groups = prompts.groups[:3]
    scores = {}
    for name, path in (("f32", smollm2_f32_gguf), ("q8_0", q8)):
        b = LlamaCppBackend(path, n_threads=THREADS)
        try:
            scores[name] = b.letter_scores(groups, prompts.letter_ids)
        finally:
            b.close()
    for full, q8 in zip(scores["f32"], scores["q8_0"]):
        # Q8_0 keeps each weight to about 1/254 of its block's range: letter log-probs move little.
        assert np.abs(full.logprobs - q8.logprobs).max() < 0.5
