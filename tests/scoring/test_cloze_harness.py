"""The cloze protocol against lm-evaluation-harness itself: its HFLM loglikelihood on the same model and items.

Skipped unless lm-eval is importable (`pip install '.[harness]'`, lm-eval 0.4.13). The harness's
HF wrapper needs only torch, transformers and accelerate at import, so `pip install --no-deps
lm-eval==0.4.13` is enough. Its task definition is read from its files (the bbq utils module
imports `datasets`, so it is parsed, not imported).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from auditor.data.bbq import select_items
from auditor.data.cloze import UNKNOWN_PHRASINGS, cloze_choices, cloze_context, cloze_requests
from auditor.scoring.backends.torch_backend import TorchBackend
from auditor.scoring.engine import score_cloze
from tests.conftest import SAMPLE_BBQ

huggingface = pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval is not installed")


def _harness_bbq() -> tuple[list[str], str]:
    """(UNKNOWN_RESPONSES, doc_to_text) from the installed harness's bbq task files."""
    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / "bbq"
    tree = ast.parse((folder / "utils.py").read_text())
    unknowns = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", "") == "UNKNOWN_RESPONSES" for t in node.targets))
    yaml_text = (folder / "bbq_multiple_choice.yaml").read_text()
    template = ast.literal_eval(re.search(r'^doc_to_text: (".*")$', yaml_text, re.MULTILINE).group(1))
    return unknowns, template


def test_cloze_answers_equal_the_harness(tiny_hf_dir, smollm2_tokenizer):
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM

    unknowns, template = _harness_bbq()
    assert list(UNKNOWN_PHRASINGS) == unknowns
    items = list(select_items([SAMPLE_BBQ], n=8, seed=1).items)
    for item in items:
        rendered = template.replace("{{context}}", item.context).replace("{{question}}", item.question)
        assert cloze_context(item) == rendered

    lm = huggingface.HFLM(pretrained=str(tiny_hf_dir), device="cpu", batch_size=4, dtype="float32")
    requests = []
    for item in items:
        texts, _ = cloze_choices(item)
        requests += [Instance(request_type="loglikelihood", doc={}, idx=c,
                              arguments=(cloze_context(item), f" {text}")) for c, text in enumerate(texts)]
    harness_lls = np.array([ll for ll, _ in lm.loglikelihood(requests)]).reshape(len(items), -1)

    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype="float32").eval()
    backend = TorchBackend(model, pad_id=2)
    ours = score_cloze(backend, items, cloze_requests(smollm2_tokenizer, items), "dense").records
    harness_answers = [cloze_choices(item)[1][int(np.argmax(lls))] for item, lls in zip(items, harness_lls)]
    assert list(ours["chosen"]) == harness_answers
    assert len(set(harness_answers)) > 1  # the tiny model does not answer every item alike
    for item, req, lls in zip(items, cloze_requests(smollm2_tokenizer, items), harness_lls):
        np.testing.assert_allclose(backend.continuation_logprobs(req.context_ids, req.continuations), lls, atol=1e-4)
