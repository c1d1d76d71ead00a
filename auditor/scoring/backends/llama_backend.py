"""llama.cpp backend: GGUF variants scored from token ids through llama-cpp-python's low-level API.

Prompts are planned exactly as the torch engine plans them (`auditor.scoring.backends.trees`):
the prefix common to every prompt, then one prefix tree (trie) per item, or per few items
that share a context, whose distinct nodes are the tokens to compute. llama.cpp runs the plan
with its own sequences in one unified KV cache:

- the common prefix is decoded once, on sequence 0;
- each prompt of a batch gets its own sequence id, which first shares sequence 0's cells
  (`llama_memory_seq_cp`: a tag on the cells, no copy). A tree node is one token of the
  llama_batch, tagged with the sequences of every prompt that passes through it, at its
  depth's position; llama.cpp's mask lets a token see the cells of its first sequence at
  positions up to its own, which are exactly its ancestors and the common prefix (every
  sequence through a node shares its ancestors). This is tree attention, as the torch
  backend's 4-D mask, with the runtime's own kernels;
- trees are packed into batches of up to `n_batch` tokens (answer orders of several items in
  one llama_decode: ggml's quantized matmuls are faster per token on more tokens; Qwen2.5 1.5B
  Q4_K_M on one core decoded 33 tokens/s in batches of 32 and 56-62 in batches of 512, where
  one answer order's suffix is about 24 tokens), logits are requested for the prompts' last
  tokens only (no logits_all), and the batch's sequences are dropped after
  (`llama_memory_seq_rm`);
- batches are shared out to `n_lanes` one-thread contexts (`LlamaCppBackend`).

Scores are the log-softmax over the full vocabulary at the answer position, read at the option
letters, as the torch backend computes them. `reuse_prefix=False` decodes every full prompt
from an empty cache instead (the reference the plan is tested and benchmarked against).
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from auditor.artifacts.models import resolve_model
from auditor.core.errors import AuditorError, ModelError
from auditor.core.progress import progress
from auditor.core.signals import held_signals
from auditor.data.prompts import PromptGroup
from auditor.scoring.backends.base import ScoringBackend
from auditor.scoring.backends.llama_amx import extra_weight_buffers
from auditor.scoring.backends.trees import PromptTree, TreePlan, plan_trees

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LetterScores:
    """One group's raw letter logits and letter log-probs, each (n_suffixes, n_letters)."""

    logits: np.ndarray
    logprobs: np.ndarray


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p_i = x_i - log(sum_j exp(x_j)) over the last axis, in float64 (max-shifted for stability)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def planned_decode_tokens(groups: Sequence[PromptGroup]) -> int:
    """Tokens `LlamaCppBackend.letter_scores` decodes for `groups` (no runtime needed): the tree plan's
    nodes, the common prefix once; the torch engine plans the same (`plan_trees(groups).n_nodes`)."""
    return plan_trees(groups).n_nodes


#: Sequences one llama.cpp context holds: sequence 0 (the common prefix) and one per prompt of a
#: batch. A batch of n_batch = 512 tokens holds 3-20 BBQ prompts; the cap only bounds its count.
N_SEQ_MAX = 64


@dataclass(frozen=True)
class TreeTokens:
    """One tree's nodes as llama_batch rows, parents before children: token, position, sequences.

    `seqs[i]` lists the batch-local prompt indices (0-based, in `TreePlan.members` order) whose
    path passes through node order[i]; `last[k]` is the row holding prompt k's answer token.
    """

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    seqs: tuple[tuple[int, ...], ...]
    last: tuple[int, ...]


def tree_tokens(tree: PromptTree, offset: int) -> TreeTokens:
    """`tree`'s nodes ordered by depth (so every sequence's positions rise: llama.cpp requires it,
    and a parent is decoded before its children even when the batch is split), at positions
    `offset` + depth, each tagged with the prompts whose path holds it."""
    through: list[set[int]] = [set() for _ in range(tree.n_nodes)]
    for k, end in enumerate(tree.ends):
        node = end
        while node >= 0 and k not in through[node]:
            through[node].add(k)
            node = int(tree.parents[node])
    order = sorted(range(tree.n_nodes), key=lambda n: int(tree.positions[n]))
    row = {n: i for i, n in enumerate(order)}
    return TreeTokens(tuple(int(tree.token_ids[n]) for n in order),
                      tuple(offset + int(tree.positions[n]) for n in order),
                      tuple(tuple(sorted(through[n])) for n in order),
                      tuple(row[e] for e in tree.ends))


def pack_batches(plan: TreePlan, n_batch: int, max_seqs: int) -> list[list[int]]:
    """Tree indices per llama_decode call, in plan order: at most `n_batch` tokens and `max_seqs`
    prompts each; a tree wider than n_batch goes alone (and is decoded in n_batch chunks)."""
    batches: list[list[int]] = []
    tokens = seqs = 0
    for t, tree in enumerate(plan.trees):
        n, k = tree.n_nodes, len(plan.members[t])
        if batches and tokens + n <= n_batch and seqs + k <= max_seqs:
            batches[-1].append(t)
            tokens, seqs = tokens + n, seqs + k
        else:
            batches.append([t])
            tokens, seqs = n, k
    return batches


def open_llama(path: Path | str, *, n_seq_max: int = 1, extra_buffers: bool | None = None, **kwargs):
    """`llama_cpp.Llama(model_path=path, **kwargs)`, with llama.cpp's extra weight buffers (AMX,
    repacking) on unless this build's AMX kernels crash on this file (`llama_amx`) and, for
    n_seq_max > 1, a context of that many sequences in one unified KV cache.

    llama-cpp-python has no keyword for llama.cpp's `use_extra_bufts`, nor for the context's
    `n_seq_max` and `kv_unified` (tokens shared by several sequences need the unified cache), so
    the default parameters are replaced for this one construction. `extra_buffers` forces the
    buffers on or off (benchmarks compare the two).
    """
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    model_default, context_default = lib.llama_model_default_params, lib.llama_context_default_params
    extra = extra_weight_buffers(path) if extra_buffers is None else extra_buffers

    def model_params():
        params = model_default()
        params.use_extra_bufts = extra
        return params

    def context_params():
        params = context_default()
        if n_seq_max > 1:
            params.n_seq_max = n_seq_max
            params.kv_unified = True
        return params

    lib.llama_model_default_params, lib.llama_context_default_params = model_params, context_params
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    finally:
        lib.llama_model_default_params, lib.llama_context_default_params = model_default, context_default


class _Lane:
    """One llama.cpp context of the model with its batch: the unit that decodes, alone or beside others.

    `owned` contexts were made here (`llama_init_from_model`) and are freed by `close`; the
    backend's first lane is its Llama's own context. `decoded` counts the tokens sent to
    llama_decode.
    """

    def __init__(self, lib, ctx, *, n_batch: int, n_seq_max: int, n_vocab: int, path: Path, owned: bool) -> None:
        self.lib, self.ctx, self.path, self.owned = lib, ctx, path, owned
        self.n_batch, self.n_vocab = n_batch, n_vocab
        self.memory = lib.llama_get_memory(ctx)
        # Room for every sequence id on one token: a shared node may belong to all prompts of a batch.
        self.batch = lib.llama_batch_init(n_batch, 0, n_seq_max)
        self.decoded = 0

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def share_prefix(self, seq: int) -> None:
        """Sequence `seq` also holds sequence 0's cells: a tag on the cells, no keys or values copied."""
        self.lib.llama_memory_seq_cp(self.memory, 0, seq, -1, -1)

    def drop(self, seq: int) -> None:
        if not self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1):
            raise ModelError(f"{self.path}: llama.cpp could not drop sequence {seq} from its KV cache")

    def decode(self, ids: Sequence[int], start_pos: int, *, want_last: bool) -> np.ndarray | None:
        """Decode `ids` on sequence 0 at positions start_pos.. in chunks of n_batch; the last token's logits if asked."""
        result = None
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start:start + self.n_batch]
            is_last_chunk = start + len(chunk) == len(ids)
            outputs = [len(chunk) - 1] if (want_last and is_last_chunk) else []
            self.submit(chunk, range(start_pos + start, start_pos + start + len(chunk)), [(0,)] * len(chunk),
                        outputs=outputs)
            if outputs:
                result = self.logits(len(chunk) - 1)
        return result

    def submit(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[Sequence[int]], *,
               outputs) -> None:
        """One llama_decode of `tokens` (<= n_batch) at `positions`, token i in sequences seqs[i],
        logits at the `outputs` indices."""
        batch = self.batch
        wanted = set(outputs)
        batch.n_tokens = len(tokens)
        for i, (token, pos, ids) in enumerate(zip(tokens, positions, seqs)):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = len(ids)
            for j, seq in enumerate(ids):
                batch.seq_id[i][j] = seq
            batch.logits[i] = 1 if i in wanted else 0
        rc = self.lib.llama_decode(self.ctx, batch)  # ctypes releases the GIL: lanes decode in parallel
        self.decoded += len(tokens)
        if rc != 0:
            raise ModelError(f"{self.path}: llama_decode failed with code {rc} "
                             f"({len(tokens)} tokens from position {min(positions)})")

    def logits(self, i: int) -> np.ndarray:
        """A copy of the logits of batch index i (which must have been requested)."""
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise ModelError(f"{self.path}: llama.cpp returned no logits for batch index {i}")
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        if self.owned:
            self.lib.llama_free(self.ctx)


class LlamaCppBackend(ScoringBackend):
    """Scores PromptGroups with a GGUF model in llama.cpp: the torch engine's tree plan on llama.cpp sequences.

    Letter scoring runs on `n_lanes` contexts of one thread each, which share the model's
    weights and take batches from one queue (Python threads; llama_decode releases the GIL).
    Independent one-thread contexts never wait for each other, so they use every core without
    the collapse of one multi-threaded context on a busy machine: ggml's worker threads
    spin-wait at barriers, and with one core taken by another process a 2-thread prefill on
    2 cores was measured 34x slower than 1 thread (docs/gguf.md). `n_lanes` defaults to
    `n_threads` when that is given, else to every core (the torch backend's default).
    `n_threads` (default half the cores, llama-cpp-python's own default) is the thread count
    of the one context that serves `token_logprobs`, `prefill_s` and generation.

    `reuse_prefix=False` re-decodes every full prompt from an empty cache on one lane (the
    reference the plan is tested and benchmarked against). `extra_buffers` is `open_llama`'s.
    """

    name = "llama.cpp"

    def __init__(self, gguf_path: Path | str, *, n_ctx: int = 2048, n_batch: int = 512,
                 n_threads: int | None = None, n_lanes: int | None = None, reuse_prefix: bool = True,
                 extra_buffers: bool | None = None) -> None:
        import llama_cpp

        if n_batch < 2 or (n_lanes is not None and n_lanes < 1):
            raise ValueError(f"n_batch must be >= 2 and n_lanes >= 1, got {n_batch}, {n_lanes}")
        source = resolve_model(Path(gguf_path))  # ModelError for a missing, non-GGUF or truncated file
        if source.kind != "gguf":
            raise ModelError(f"{gguf_path}: the llama.cpp backend needs a GGUF file, not an HF directory")
        self.path = source.path
        self.n_threads = n_threads or max(1, (os.cpu_count() or 1) // 2)
        self.n_lanes = n_lanes or n_threads or os.cpu_count() or 1
        self.reuse_prefix = reuse_prefix
        # Whether ggml's AMX/repacked weight buffers are on: a unit's records carry it (their kernels differ).
        self.extra_buffers = extra_weight_buffers(self.path) if extra_buffers is None else extra_buffers
        try:
            self.llm = open_llama(
                # llama.cpp aborts on a context with more sequences than n_ubatch tokens
                # (llama-cpp-python lowers n_batch to n_ctx).
                self.path, n_seq_max=max(2, min(N_SEQ_MAX, n_batch, n_ctx)), extra_buffers=self.extra_buffers,
                n_ctx=n_ctx, n_batch=n_batch,
                n_ubatch=n_batch, n_threads=self.n_threads, n_threads_batch=self.n_threads, logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: llama.cpp cannot load this GGUF ({exc})") from None
        self._llama_cpp = llama_cpp
        self.n_ctx = self.llm.n_ctx()
        self.n_batch = self.llm.n_batch
        self.n_vocab = self.llm.n_vocab()
        self.n_seq_max = llama_cpp.llama_n_seq_max(self.llm.ctx)
        self._lanes = [self._lane(self.llm.ctx, owned=False)]  # more are opened on first parallel use
        self._closed = False

    @property
    def tokens_decoded(self) -> int:
        """Tokens through llama_decode since load, all lanes: the computed tokens."""
        return sum(lane.decoded for lane in self._lanes)

    @property
    def tokens_computed(self) -> int:
        return self.tokens_decoded

    def _lane(self, ctx, *, owned: bool) -> _Lane:
        return _Lane(self._llama_cpp, ctx, n_batch=self.n_batch, n_seq_max=self.n_seq_max, n_vocab=self.n_vocab,
                     path=self.path, owned=owned)

    def _open_lanes(self, n: int) -> list[_Lane]:
        """`n` lanes of one thread each: the Llama's own context (set to one thread) and n - 1 new ones."""
        lib = self._llama_cpp
        while len(self._lanes) < n:
            params = type(self.llm.context_params).from_buffer_copy(self.llm.context_params)
            params.n_threads = params.n_threads_batch = 1
            ctx = lib.llama_init_from_model(self.llm.model, params)
            if not ctx:
                raise ModelError(f"{self.path}: llama.cpp could not open scoring context {len(self._lanes) + 1} "
                                 f"of {n} (memory?); pass fewer threads")
            self._lanes.append(self._lane(ctx, owned=True))
        lib.llama_set_n_threads(self.llm.ctx, 1, 1)
        return self._lanes[:n]

    # -- scoring ---------------------------------------------------------------------------------

    def planned_tokens(self, groups: Sequence[PromptGroup]) -> int:
        """Tokens `letter_scores` plans for `groups`: the tree plan's nodes, or every full prompt without
        reuse. Each lane beyond the first decodes the common prefix once more (computed, not planned)."""
        if not self.reuse_prefix:
            return sum(len(g.full_ids(s)) for g in groups for s in range(len(g.suffix_ids)))
        return planned_decode_tokens(groups)

    def letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        return [s.logprobs for s in self.letter_scores(groups, letter_ids)]

    def letter_scores(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[LetterScores]:
        """Raw logits and full-vocab log-softmax at the last position, read at `letter_ids`."""
        letters = np.asarray(list(letter_ids), dtype=np.int64)
        self._check_ids(letters.tolist(), "letter ids")
        for group in groups:
            self._check_group(group)
        out = [LetterScores(np.empty((len(g.suffix_ids), len(letters))), np.empty((len(g.suffix_ids), len(letters))))
               for g in groups]
        n_prompts = sum(len(g.suffix_ids) for g in groups)
        lock = threading.Lock()

        with progress(n_prompts, "prompts") as bar:
            def record(g: int, s: int, last: np.ndarray) -> None:
                logprobs = log_softmax(last)[letters]
                with lock:
                    out[g].logits[s] = last[letters]
                    out[g].logprobs[s] = logprobs
                    bar.update(1)

            if self.reuse_prefix:
                self._score_plan(plan_trees(groups), record)
            else:
                lane = self._lanes[0]
                for g, group in enumerate(groups):
                    for s in range(len(group.suffix_ids)):
                        lane.clear()
                        record(g, s, lane.decode(list(group.full_ids(s)), 0, want_last=True))
                lane.clear()
        return out

    def _check_group(self, group: PromptGroup) -> None:
        longest = len(group.prefix_ids) + max((len(s) for s in group.suffix_ids), default=0)
        if longest > self.n_ctx:
            raise AuditorError(f"item {group.item_id}: prompt of {longest} tokens exceeds the llama.cpp "
                               f"context of {self.n_ctx}; raise n_ctx")
        if any(not s for s in group.suffix_ids):
            raise ValueError(f"item {group.item_id}: empty suffix (the answer position must be its own)")
        self._check_ids(group.prefix_ids, f"item {group.item_id}")
        for suffix in group.suffix_ids:
            self._check_ids(suffix, f"item {group.item_id}")

    def _score_plan(self, plan: TreePlan, record) -> None:
        """The common prefix on each lane's sequence 0, then the batches of trees from one queue."""
        prefix = list(plan.prefix_ids)
        widest = max((t.n_nodes for t in plan.trees), default=0)
        if len(prefix) + widest > self.n_ctx:
            raise AuditorError(f"the common prompt prefix ({len(prefix)} tokens) and a prompt tree of {widest} "
                               f"tokens exceed the llama.cpp context of {self.n_ctx}; raise n_ctx")
        most = max((len(m) for m in plan.members), default=0)
        if most > self.n_seq_max - 1:
            raise AuditorError(f"a prompt tree of {most} prompts exceeds the {self.n_seq_max - 1} sequences a "
                               "llama.cpp batch holds; score fewer answer orders per item")
        batches = pack_batches(plan, self.n_batch, self.n_seq_max - 1)
        n = min(self.n_lanes, len(batches))
        if n <= 1:
            self._run_lane(self._lanes[0], plan, iter(batches), record)
            return
        queue = iter(batches)
        lock = threading.Lock()
        stop = threading.Event()  # a lane failed, or Ctrl-C / SIGTERM came: lanes end after the batch in hand

        def take():
            while not stop.is_set():
                with lock:
                    batch = next(queue, None)
                if batch is None:
                    return
                yield batch

        def run(lane: _Lane) -> None:
            try:
                self._run_lane(lane, plan, take(), record)
            except BaseException:
                stop.set()
                raise

        try:
            # The signals wait until every lane has returned: the caller frees the contexts when they arrive.
            with held_signals(stop), ThreadPoolExecutor(max_workers=n) as pool:
                running = [pool.submit(run, lane) for lane in self._open_lanes(n)]
            for done in running:
                done.result()  # re-raises a lane's error here
        finally:
            self._llama_cpp.llama_set_n_threads(self.llm.ctx, self.n_threads, self.n_threads)

    def _run_lane(self, lane: _Lane, plan: TreePlan, batches, record) -> None:
        """Decode the common prefix on `lane`, then each batch of trees `batches` yields (module docstring)."""
        prefix = list(plan.prefix_ids)
        lane.clear()
        try:
            if prefix:
                lane.decode(prefix, 0, want_last=False)
            for batch in batches:
                rows: list[tuple[int, int, tuple[int, ...]]] = []  # (token, position, sequence ids) per batch row
                answers: dict[int, list[tuple[int, int]]] = {}  # batch row -> the (group, order)s it answers
                n_seqs = 0
                for t in batch:
                    nodes = tree_tokens(plan.trees[t], len(prefix))
                    for k, row in enumerate(nodes.last):  # identical prompts share their answer row
                        answers.setdefault(len(rows) + row, []).append(plan.members[t][k])
                    rows.extend((tok, pos, tuple(1 + n_seqs + k for k in ks))
                                for tok, pos, ks in zip(nodes.tokens, nodes.positions, nodes.seqs))
                    n_seqs += len(plan.members[t])
                seq_ids = range(1, 1 + n_seqs)
                if prefix:
                    for seq in seq_ids:
                        lane.share_prefix(seq)
                for start in range(0, len(rows), self.n_batch):
                    chunk = rows[start:start + self.n_batch]
                    outputs = [i for i in range(len(chunk)) if start + i in answers]
                    lane.submit([r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk], outputs=outputs)
                    for i in outputs:
                        last = lane.logits(i)
                        for g, s in answers[start + i]:
                            record(g, s, last)
                for seq in seq_ids:
                    lane.drop(seq)
        finally:
            lane.clear()

    def prefill_s(self, ids: Sequence[int]) -> float:
        """Seconds to decode `ids` from an empty cache in n_batch chunks, logits at the last token only:
        llama.cpp's prefill, the peak token rate its scoring is compared with (`auditor bench runtimes`)."""
        ids = [int(t) for t in ids]
        self._check_ids(ids, "prefill")
        self._lanes[0].clear()
        start = time.perf_counter()
        self._lanes[0].decode(ids, 0, want_last=True)
        elapsed = time.perf_counter() - start
        self._lanes[0].clear()
        return elapsed

    def token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for i = 1..n-1 (length n-1), full-vocab log-softmax, one context.

        The whole sequence must fit the context (n <= n_ctx); callers window longer texts.
        """
        return self.token_logprobs_rows(ids, ())[0]

    def token_logprobs_rows(self, ids: Sequence[int], rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """`token_logprobs(ids)` and the full log-softmax (float32, (len(rows), n_vocab)) at output positions
        `rows`: row j is the distribution of ids[j + 1] (auditor.analysis.kld)."""
        ids = [int(t) for t in ids]
        if len(ids) > self.n_ctx:
            raise AuditorError(f"{len(ids)} tokens exceed the llama.cpp context of {self.n_ctx}; "
                               "use windows of at most n_ctx tokens")
        self._check_ids(ids, "token_logprobs")
        out = np.empty(max(len(ids) - 1, 0))
        wanted = {int(r): k for k, r in enumerate(rows)}
        full = np.empty((len(wanted), self.n_vocab), dtype=np.float32)
        if len(ids) < 2:
            return out, full
        lane = self._lanes[0]
        lane.clear()
        for start in range(0, len(ids) - 1, self.n_batch):
            chunk = ids[start:start + self.n_batch]
            # Logits at every position but the very last (which predicts nothing we score).
            n_out = min(len(chunk), len(ids) - 1 - start)
            lane.submit(chunk, range(start, start + len(chunk)), [(0,)] * len(chunk), outputs=range(n_out))
            for i in range(n_out):
                logp = log_softmax(lane.logits(i))
                out[start + i] = logp[ids[start + i + 1]]
                if start + i in wanted:
                    full[wanted[start + i]] = logp
        return out, full

    def check_tokenization(self, tokenizer, texts: Sequence[str]) -> int:
        """Raise AuditorError unless llama.cpp tokenizes every text to the HF tokenizer's ids.

        Both parse special tokens (the chat template's <|im_start|> etc.) and add
        no BOS, as the prompts are built. Returns the number of texts checked.
        """
        for n, text in enumerate(texts):
            hf = list(tokenizer.encode(text, add_special_tokens=False))
            ll = self.tokenize(text)
            if hf != ll:
                at = next((i for i, (a, b) in enumerate(zip(hf, ll)) if a != b), min(len(hf), len(ll)))
                raise AuditorError(
                    f"{self.path}: llama.cpp tokenizes text {n} differently from the HF tokenizer at token {at} "
                    f"(HF {hf[at:at + 5]} vs llama.cpp {ll[at:at + 5]}; {len(hf)} vs {len(ll)} tokens)")
        return len(texts)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids for `text`, special tokens parsed, no BOS added."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- llama.cpp plumbing ----------------------------------------------------------------------

    def _check_ids(self, ids: Sequence[int], what: str) -> None:
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise AuditorError(f"{what}: token id {bad[0]} outside this model's vocabulary (0..{self.n_vocab - 1})")

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            for lane in reversed(self._lanes):
                lane.close()
            self.llm.close()
            self._closed = True

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: llama_cpp may be gone already
            pass
