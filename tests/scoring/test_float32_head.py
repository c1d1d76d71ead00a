"""The scored position's head in float32 (issue 27): no bf16 ties between letters, float32 models unchanged.

"old" is the same backend with `float32_head` switched off (the model's own logits, cast to
float32 after the head), so old and new differ only in the head's precision.
"""
from __future__ import annotations

import copy
import logging
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from auditor.scoring.backends import torch_backend
from auditor.scoring.backends.torch_backend import (TorchBackend, float32_head, float32_head_logits,
                                                    float32_head_problem)
from tests.conftest import make_tiny_llama
from tests.families.models import make_family_model
from tests.scoring.backends.test_torch_backend import random_groups, shared_context_groups

LETTERS = (330, 331, 332)


def old_letter_logprobs(model, groups, monkeypatch) -> list[np.ndarray]:
    """Today's computation before the change: the model's own head, its logits cast after."""
    with monkeypatch.context() as m:
        m.setattr(torch_backend, "float32_head", lambda model: nullcontext(False))
        return TorchBackend(model, batch_size=4).letter_logprobs(groups, LETTERS)


def top_two_ties(rows: list[np.ndarray]) -> int:
    """Prompts whose two largest letter log-probs are exactly equal."""
    top = np.sort(np.concatenate(rows), axis=1)[:, -2:]
    return int((top[:, 0] == top[:, 1]).sum())


def near_tie_llama(seed: int = 0):
    """A float32 tiny Llama whose three letter rows of the head share one large direction and differ
    by a little: letter logits of about +-8 (bf16 step 0.03-0.06) that differ by about 0.04, the
    situation of a real model's answer letters, where bf16 logits tie."""
    model = make_tiny_llama(seed, tie_word_embeddings=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        common = torch.randn(head.shape[1], generator=gen)
        head[list(LETTERS)] = common + 0.003 * torch.randn(len(LETTERS), head.shape[1], generator=gen)
    return model


def test_float32_head_logits_equal_a_float64_linear() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 3, 16, generator=gen).bfloat16()
    weight, bias = torch.randn(45, 16, generator=gen).bfloat16(), torch.randn(45, generator=gen).bfloat16()
    want = torch.nn.functional.linear(hidden.double(), weight.double(), bias.double())
    for chunk in (7, 45, 1000):  # chunks that do not divide the rows, exactly the rows, more than the rows
        got = float32_head_logits(hidden, weight, bias, chunk_rows=chunk)
        assert got.dtype == torch.float32 and got.shape == (2, 3, 45)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(float32_head_logits(hidden, weight, chunk_rows=7).double(),
                               torch.nn.functional.linear(hidden.double(), weight.double()), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chunk_rows"):
        float32_head_logits(hidden, weight, chunk_rows=0)


def test_float32_model_scores_are_unchanged(monkeypatch) -> None:
    model = make_tiny_llama(attn_implementation="eager")
    groups = shared_context_groups(9)
    old = old_letter_logprobs(model, groups, monkeypatch)
    new = TorchBackend(model, batch_size=4).letter_logprobs(groups, LETTERS)
    for a, b in zip(old, new):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


def test_bf16_ties_are_gone(monkeypatch) -> None:
    model = near_tie_llama().to(torch.bfloat16)
    groups = random_groups(24, seed=2)
    old = old_letter_logprobs(model, groups, monkeypatch)
    new = TorchBackend(model, batch_size=4).letter_logprobs(groups, LETTERS)
    n_prompts = sum(len(g.suffix_ids) for g in groups)
    assert top_two_ties(old) >= n_prompts // 20  # the constructed head does tie in bf16
    assert top_two_ties(new) == 0


def test_bf16_letter_logprobs_are_closer_to_float32(monkeypatch) -> None:
    groups = random_groups(24, seed=3)
    for model in (near_tie_llama(), make_tiny_llama(seed=1)):
        ref = np.concatenate(TorchBackend(model, batch_size=4).letter_logprobs(groups, LETTERS))
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        old = np.concatenate(old_letter_logprobs(bf16, groups, monkeypatch))
        new = np.concatenate(TorchBackend(bf16, batch_size=4).letter_logprobs(groups, LETTERS))
        assert np.abs(new - ref).mean() < np.abs(old - ref).mean()


def softcapped_reference(model, groups, cap: float) -> list[np.ndarray]:
    """Each prompt alone: the hidden state entering the head, the head and Gemma's soft-capping by hand."""
    head = model.get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    out = []
    try:
        with torch.inference_mode():
            for g in groups:
                rows = []
                for s in range(len(g.suffix_ids)):
                    model(input_ids=torch.tensor([g.full_ids(s)]), logits_to_keep=1)
                    logits = seen.pop()[0, -1].float() @ head.weight.float().T
                    logits = cap * torch.tanh(logits / cap)
                    rows.append(torch.log_softmax(logits, dim=-1)[list(LETTERS)].numpy())
                out.append(np.array(rows))
    finally:
        handle.remove()
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemma3_soft_capping_runs_on_float32_logits(dtype) -> None:
    """Gemma 3 caps the head's logits (cap * tanh(logits / cap)) after the head; its prompts are
    longer than the tiny model's sliding window, so this is the exact per-prompt path."""
    cap = 3.0
    model = make_family_model("gemma3", final_logit_softcapping=cap).to(dtype)
    groups = random_groups(4, seed=4)
    got = TorchBackend(model, batch_size=4).letter_logprobs(groups, LETTERS)
    want = softcapped_reference(model, groups, cap)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_every_scoring_path_uses_the_float32_head(monkeypatch) -> None:
    calls = []
    real = torch_backend.float32_head_logits
    monkeypatch.setattr(torch_backend, "float32_head_logits",
                        lambda hidden, weight, bias=None: calls.append(hidden.shape) or real(hidden, weight, bias))
    model = make_tiny_llama().to(torch.bfloat16)
    backend = TorchBackend(model, batch_size=4)
    head = model.get_output_embeddings()
    groups = random_groups(3)
    backend.letter_logprobs(groups, LETTERS)
    tree_calls = len(calls)
    backend._plain_letter_logprobs(groups, LETTERS)
    plain_calls = len(calls) - tree_calls
    backend.continuation_logprobs([5, 6, 7], [[8], [9, 10]])  # the context, then the continuations
    assert tree_calls >= 1 and plain_calls == sum(len(g.suffix_ids) for g in groups)
    assert len(calls) == tree_calls + plain_calls + 2
    assert "forward" not in head.__dict__  # the model's own head is back after each call


def test_a_quantized_head_keeps_its_own_logits(caplog) -> None:
    model = make_tiny_llama(tie_word_embeddings=False)
    assert float32_head_problem(model) is None
    model.lm_head = torch.nn.Linear(64, 49152, bias=False)
    model.lm_head.weight = torch.nn.Parameter(torch.zeros(49152, 64, dtype=torch.int8), requires_grad=False)
    assert "int8" in float32_head_problem(model)
    with float32_head(model) as replaced:
        assert replaced is False and "forward" not in model.lm_head.__dict__
    bnb = pytest.importorskip("bitsandbytes")
    model.lm_head = bnb.nn.Linear8bitLt(64, 49152, bias=False, has_fp16_weights=False)
    assert "Linear8bitLt" in float32_head_problem(model)
    with caplog.at_level(logging.WARNING, logger=torch_backend.__name__):
        TorchBackend(model)
    assert "Linear8bitLt" in caplog.text and "cast to float32" in caplog.text


def test_bitsandbytes_models_keep_a_plain_head(tiny_llama) -> None:
    """transformers quantizes every Linear but the head, so bnb variants get the float32 head too."""
    pytest.importorskip("bitsandbytes")
    from compressors.base import Variant
    from compressors.registry import parse_one

    variant = parse_one("bnb-int8").apply(Variant("dense", model=tiny_llama))
    assert float32_head_problem(variant.model) is None
    with float32_head(variant.model) as replaced:
        assert replaced
