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
def test_an_unquantized_file_has_the_extra_buffers_off_exactly_on_amx_cpus(tiny_gguf, monkeypatch, amx):
    """Nothing of an F32 file would move to ggml's AMX buffer, so it is opened without them and without a probe
    on AMX CPUs (llama_amx); elsewhere llama.cpp's default stays."""
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


def test_open_llama_makes_a_unified_cache_of_several_sequences_and_restores_the_defaults(tiny_gguf):
    from llama_cpp import llama_cpp as lib

    from auditor.scoring.backends.llama_backend import open_llama

    default = lib.llama_context_default_params
    llm = open_llama(tiny_gguf, n_seq_max=4, n_ctx=64, n_batch=16, n_threads=THREADS, verbose=False)
    try:
        assert lib.llama_n_seq_max(llm.ctx) == 4 and llm.context_params.kv_unified
        assert lib.llama_context_default_params is default and default().n_seq_max == 1
    finally:
        llm.close()


@pytest.mark.slow
def test_real_model_q8_0_scores_on_this_cpu(tmp_path, smollm2_f32_gguf, prompts):
    """SmolLM2 quantized to Q8_0 scores its prompts: on an AMX CPU this died in ggml's AMX kernels before the
    patched build and llama_amx's check."""
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


def _max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_tree_plan_on_lanes_equals_a_fresh_context_per_prompt(tiny_gguf, prompts):
    """The plan's batches (several items per llama_decode, trees split over decode calls, identical
    prompts, two lanes) give every prompt's scores as decoding it alone from an empty cache."""
    from auditor.scoring.backends.llama_backend import LlamaCppBackend, pack_batches, planned_decode_tokens
    from auditor.scoring.backends.trees import plan_trees

    g0 = prompts.groups[0]
    repeated = dataclasses.replace(g0, suffix_ids=g0.suffix_ids + g0.suffix_ids[:1])  # an order listed twice
    groups = list(prompts.groups) + [repeated]
    plan = plan_trees(groups)
    # n_batch 212: batches of several trees, and trees wider than a batch (decoded in two calls).
    batches = pack_batches(plan, 212, 62)
    assert any(len(b) > 1 for b in batches) and any(plan.trees[b[0]].n_nodes > 212 for b in batches)
    fresh = LlamaCppBackend(tiny_gguf, n_ctx=512, n_threads=THREADS, reuse_prefix=False)
    lanes = LlamaCppBackend(tiny_gguf, n_ctx=512, n_batch=212, n_threads=THREADS, n_lanes=2)
    try:
        want = fresh.letter_scores(groups, prompts.letter_ids)
        before = lanes.tokens_decoded
        got = lanes.letter_scores(groups, prompts.letter_ids)
        decoded = lanes.tokens_decoded - before
        assert len(lanes._lanes) == 2 and all(lane.decoded for lane in lanes._lanes)  # both lanes worked
        assert fresh.planned_tokens(groups) == fresh.tokens_decoded == sum(len(g.full_ids(s)) for g in groups
                                                                          for s in range(len(g.suffix_ids)))
    finally:
        fresh.close()
        lanes.close()
    assert [a.logprobs.shape for a in got] == [b.logprobs.shape for b in want]
    print("max abs difference, tree plan on lanes vs fresh context per prompt:",
          _max_diff([a.logprobs for a in got], [b.logprobs for b in want]))
    assert _max_diff([a.logprobs for a in got], [b.logprobs for b in want]) < 1e-4
    assert _max_diff([a.logits for a in got], [b.logits for b in want]) < 1e-4
    assert (got[-1].logprobs[3] == got[-1].logprobs[0]).all()
    # Planned: the torch engine's plan; computed adds the common prefix once for the second lane.
    assert lanes.planned_tokens(groups) == planned_decode_tokens(groups) == plan.n_nodes
    assert decoded == plan.n_nodes + len(plan.prefix_ids)


def test_tree_tokens_tag_each_node_with_the_prompts_through_it():
    from auditor.scoring.backends.llama_backend import tree_tokens
    from auditor.scoring.backends.trees import prompt_tree

    seqs = [(5, 6, 7), (5, 6, 8, 9), (5, 10), (5, 6, 7)]
    tree = prompt_tree(seqs)
    rows = tree_tokens(tree, offset=30)
    for k, seq in enumerate(seqs):
        path = [i for i, ks in enumerate(rows.seqs) if k in ks]
        # Prompt k's rows are its tokens in order, at positions 30.., its answer on the last one.
        assert [rows.tokens[i] for i in path] == list(seq)
        assert [rows.positions[i] for i in path] == list(range(30, 30 + len(seq)))
        assert rows.last[k] == path[-1]
    assert rows.seqs[0] == (0, 1, 2, 3) and len(rows.tokens) == tree.n_nodes == 6
    assert list(rows.positions) == sorted(rows.positions)  # parents first, whatever the trie's packing order


def test_pack_batches_keeps_the_token_and_sequence_budgets():
    from auditor.data.prompts import PromptGroup
    from auditor.scoring.backends.llama_backend import pack_batches
    from auditor.scoring.backends.trees import plan_trees

    groups = [PromptGroup(f"i{n}", ((0, 1, 2),) * 3, (1, 2, 100 + n) + (3,) * (n % 4 * 10),
                          ((4, 5), (6, 5), (7, 5))) for n in range(12)]
    plan = plan_trees(groups, max_items_per_tree=1)
    for n_batch, max_seqs in ((40, 62), (200, 6), (10, 62)):
        batches = pack_batches(plan, n_batch, max_seqs)
        assert sorted(t for b in batches for t in b) == list(range(len(plan.trees)))
        for b in batches:
            assert len(b) == 1 or (sum(plan.trees[t].n_nodes for t in b) <= n_batch
                                   and sum(len(plan.members[t]) for t in b) <= max_seqs)
        if n_batch == 10:  # every tree is wider than the batch: each goes alone
            assert all(len(b) == 1 for b in batches)
        else:
            assert any(len(b) > 1 for b in batches)


def test_random_trees_equal_a_fresh_context_per_prompt(backend, tiny_gguf):
    """Repeated orders, an answer that is an ancestor of another prompt's tokens, shared contexts."""
    from auditor.scoring.backends.llama_backend import LlamaCppBackend
    from tests.scoring.backends.test_torch_backend import LETTERS, random_groups, shared_context_groups

    groups = random_groups(7, seed=2) + shared_context_groups(9, seed=3)
    fresh = LlamaCppBackend(tiny_gguf, n_ctx=512, n_threads=THREADS, reuse_prefix=False)
    try:
        want = fresh.letter_logprobs(groups, LETTERS)
    finally:
        fresh.close()
    assert _max_diff(backend.letter_logprobs(groups, LETTERS), want) < 1e-4


def test_score_reports_planned_and_computed_tokens(backend, prompts):
    from auditor.scoring.backends.trees import plan_trees
    from auditor.scoring.engine import score

    result = score(backend, prompts, "dense")
    # One lane: llama.cpp computes exactly the plan, the torch engine's plan of the same prompts.
    assert result.planned_tokens == result.computed_tokens == plan_trees(prompts.groups).n_nodes
    assert result.planned_tokens < sum(len(g.full_ids(s)) for g in prompts.groups for s in range(3))


def test_sigterm_stops_the_lanes_before_the_call_returns(tiny_gguf, prompts, monkeypatch):
    """SIGTERM (the CLI's handler raises `Terminated`, a KeyboardInterrupt, as Ctrl-C does) that comes while
    the lanes decode in pool threads stops them after the batch in hand, and the call raises it only when no
    lane decodes: the caller frees the contexts next. Before `held_signals`, the exception left the main
    thread's wait at once: the lanes emptied the queue, or went on decoding after the call had returned (a
    study run stopped this way went on scoring, and a second SIGTERM crashed it with SIGSEGV). A second
    signal while they finish is held too.
    """
    import signal
    import threading
    import time

    from auditor.cli import Terminated, _on_sigterm
    from auditor.scoring.backends import llama_backend
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    submit = llama_backend._Lane.submit
    main = threading.main_thread().ident
    signalled = []

    def signalling_submit(lane, *args, **kwargs):
        if threading.current_thread().ident != main and not signalled:
            signalled.append(True)
            signal.pthread_kill(main, signal.SIGTERM)  # wakes the main thread's wait, as a real one does
            time.sleep(0.3)  # the main thread now waits for the lanes to stop
            signal.pthread_kill(main, signal.SIGTERM)
        submit(lane, *args, **kwargs)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    lanes = LlamaCppBackend(tiny_gguf, n_ctx=512, n_batch=64, n_threads=THREADS, n_lanes=2)
    try:
        monkeypatch.setattr(llama_backend._Lane, "submit", signalling_submit)
        with pytest.raises(Terminated):
            lanes.letter_scores(prompts.groups, prompts.letter_ids)
        at_return = lanes.tokens_decoded
        time.sleep(0.5)
        monkeypatch.setattr(llama_backend._Lane, "submit", submit)
        assert signalled, "no lane thread decoded: the test needs two lanes"
        assert lanes.tokens_decoded == at_return, "a lane went on decoding after the call returned"
        assert at_return < lanes.planned_tokens(prompts.groups), "the lanes decoded the whole plan after SIGTERM"
        # The contexts are whole: the same backend scores again.
        again = lanes.letter_scores(prompts.groups, prompts.letter_ids)
    finally:
        signal.signal(signal.SIGTERM, previous)
        lanes.close()
    assert len(again) == len(prompts.groups)


def test_a_failing_lane_stops_the_others(tiny_gguf, prompts, monkeypatch):
    """A lane's error ends the call after the batches in hand, not after the other lanes emptied the queue."""
    import threading

    from auditor.scoring.backends import llama_backend
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    submit = llama_backend._Lane.submit
    failed = []

    def failing_submit(lane, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread() and not failed:
            failed.append(True)
            raise ModelError("a lane's llama_decode failed")
        submit(lane, *args, **kwargs)

    lanes = LlamaCppBackend(tiny_gguf, n_ctx=512, n_batch=64, n_threads=THREADS, n_lanes=2)
    try:
        monkeypatch.setattr(llama_backend._Lane, "submit", failing_submit)
        with pytest.raises(ModelError, match="a lane's llama_decode failed"):
            lanes.letter_scores(prompts.groups, prompts.letter_ids)
        assert lanes.tokens_decoded < lanes.planned_tokens(prompts.groups) / 2
    finally:
        lanes.close()
