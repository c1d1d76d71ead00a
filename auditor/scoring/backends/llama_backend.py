"""llama.cpp backend: GGUF variants scored from token ids through llama-cpp-python's low-level API.

Groups are scored in the order of their token ids, so neighbours share a start
(the system prompt always, a context when BBQ pairs it with two questions).
The KV cache keeps what the previous prompt left: it is truncated to the part
the next group's prefix shares with it (`llama_memory_seq_rm`) and only the
rest of that prefix is decoded. For each answer order the cache is truncated
back to the prefix and only that order's suffix is decoded, with logits
requested for its last token alone (no logits_all). Scores are the
log-softmax over the full vocabulary at that position, read at the option
letters, exactly as the torch backend does.
"""
from __future__ import annotations

import ctypes
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from auditor.artifacts.models import resolve_model
from auditor.core.errors import AuditorError, ModelError
from auditor.core.progress import progress
from auditor.data.prompts import PromptGroup, common_prefix_len
from auditor.scoring.backends.base import ScoringBackend

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
    """Tokens `LlamaCppBackend.letter_scores` decodes for `groups` with prefix reuse (no runtime needed).

    Groups run in token order; each decodes the part of its prefix the cache (the previous
    prompt: its prefix and last suffix) does not hold, then every suffix after the prefix.
    """
    cached: list[int] = []
    total = 0
    for g in sorted(groups, key=lambda g: g.prefix_ids):
        prefix = list(g.prefix_ids)
        keep = common_prefix_len([cached, prefix])
        total += len(prefix) - keep + sum(len(s) for s in g.suffix_ids)
        cached = prefix + list(g.suffix_ids[-1]) if g.suffix_ids else prefix
    return total


def open_llama(path: Path | str, **kwargs):
    """`llama_cpp.Llama(model_path=path, **kwargs)`, with llama.cpp's extra weight buffers off on AMX CPUs.

    On a CPU with AMX (Intel Sapphire Rapids and later) ggml repacks Q8_0 and K-quant weights
    into an AMX buffer whose matmul segfaults in the first llama_decode
    (`ggml_backend_amx_mul_mat`, ggml-org/llama.cpp#20824; reproduced with llama-cpp-python
    0.3.36 on SmolLM2 Q8_0, fine with the buffers off). llama-cpp-python has no keyword for
    llama.cpp's `use_extra_bufts`, so the default model parameters are replaced for this one
    construction. Elsewhere the default stays, repacking included (it speeds Q4 kernels).
    """
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    if b"AMX_INT8 = 1" not in lib.llama_print_system_info():
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    default = lib.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    finally:
        lib.llama_model_default_params = default


class LlamaCppBackend(ScoringBackend):
    """Scores PromptGroups with a GGUF model in llama.cpp, reusing each group's prefix KV cache.

    `reuse_prefix=False` re-decodes every full prompt from an empty cache (the
    reference the reuse path is tested against). n_threads defaults to half the
    cores, as llama-cpp-python's own default: ggml's worker threads spin-wait for
    each other, and with one core taken by another process a 2-thread prefill on
    2 cores was measured 34x slower than 1 thread (docs/gguf.md).
    """

    name = "llama.cpp"

    def __init__(self, gguf_path: Path | str, *, n_ctx: int = 2048, n_batch: int = 512,
                 n_threads: int | None = None, reuse_prefix: bool = True) -> None:
        import llama_cpp

        source = resolve_model(Path(gguf_path))  # ModelError for a missing, non-GGUF or truncated file
        if source.kind != "gguf":
            raise ModelError(f"{gguf_path}: the llama.cpp backend needs a GGUF file, not an HF directory")
        self.path = source.path
        self.n_threads = n_threads or max(1, (os.cpu_count() or 1) // 2)
        self.reuse_prefix = reuse_prefix
        try:
            self.llm = open_llama(
                self.path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=self.n_threads, n_threads_batch=self.n_threads, logits_all=False, verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: llama.cpp cannot load this GGUF ({exc})") from None
        self._llama_cpp = llama_cpp
        self.n_ctx = self.llm.n_ctx()
        self.n_batch = self.llm.n_batch
        self.n_vocab = self.llm.n_vocab()
        self._memory = llama_cpp.llama_get_memory(self.llm.ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._closed = False
        self._cached: list[int] = []  # the token ids whose keys/values sequence 0 holds, from position 0
        self.tokens_decoded = 0  # tokens through llama_decode since load: what KV reuse saves shows here

    # -- scoring ---------------------------------------------------------------------------------

    def letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        return [s.logprobs for s in self.letter_scores(groups, letter_ids)]

    def letter_scores(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[LetterScores]:
        """Raw logits and full-vocab log-softmax at the last position, read at `letter_ids`."""
        letters = np.asarray(list(letter_ids), dtype=np.int64)
        self._check_ids(letters.tolist(), "letter ids")
        out: list[LetterScores | None] = [None] * len(groups)
        n_prompts = sum(len(g.suffix_ids) for g in groups)
        order = sorted(range(len(groups)), key=lambda i: groups[i].prefix_ids)
        self._clear()
        with progress(n_prompts, "prompts") as bar:
            for i in order:
                group = groups[i]
                logits = np.empty((len(group.suffix_ids), len(letters)))
                logprobs = np.empty_like(logits)
                for s, last in enumerate(self._group_last_logits(group)):
                    logits[s] = last[letters]
                    logprobs[s] = log_softmax(last)[letters]
                    bar.update(1)
                out[i] = LetterScores(logits, logprobs)
        return out  # type: ignore[return-value]

    def _group_last_logits(self, group: PromptGroup):
        """Yield the last-position logits (n_vocab,) of prefix + suffix[i] for each suffix."""
        prefix = list(group.prefix_ids)
        longest = len(prefix) + max((len(s) for s in group.suffix_ids), default=0)
        if longest > self.n_ctx:
            raise AuditorError(f"item {group.item_id}: prompt of {longest} tokens exceeds the llama.cpp "
                               f"context of {self.n_ctx}; raise n_ctx")
        self._check_ids(prefix, f"item {group.item_id}")
        if self.reuse_prefix:
            keep = common_prefix_len([self._cached, prefix])
            self._truncate(keep)
            if keep < len(prefix):
                self._decode(prefix[keep:], keep, want_last=False)
                self._cached = list(prefix)
            for suffix in group.suffix_ids:
                if not suffix:
                    raise ValueError(f"item {group.item_id}: empty suffix (the answer position must be its own)")
                self._check_ids(suffix, f"item {group.item_id}")
                self._truncate(len(prefix))  # drop the previous order's suffix
                last = self._decode(list(suffix), len(prefix), want_last=True)
                self._cached = prefix + list(suffix)
                yield last
        else:
            for suffix in group.suffix_ids:
                self._check_ids(suffix, f"item {group.item_id}")
                self._clear()
                yield self._decode(prefix + list(suffix), 0, want_last=True)

    def prefill_s(self, ids: Sequence[int]) -> float:
        """Seconds to decode `ids` from an empty cache in n_batch chunks, logits at the last token only:
        llama.cpp's prefill, the peak token rate its scoring is compared with (`auditor bench runtimes`)."""
        ids = [int(t) for t in ids]
        self._check_ids(ids, "prefill")
        self._clear()
        start = time.perf_counter()
        self._decode(ids, 0, want_last=True)
        elapsed = time.perf_counter() - start
        self._clear()
        return elapsed

    def token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for i = 1..n-1 (length n-1), full-vocab log-softmax, one context.

        The whole sequence must fit the context (n <= n_ctx); callers window longer texts.
        """
        ids = [int(t) for t in ids]
        if len(ids) > self.n_ctx:
            raise AuditorError(f"{len(ids)} tokens exceed the llama.cpp context of {self.n_ctx}; "
                               "use windows of at most n_ctx tokens")
        self._check_ids(ids, "token_logprobs")
        out = np.empty(max(len(ids) - 1, 0))
        if len(ids) < 2:
            return out
        self._clear()
        for start in range(0, len(ids) - 1, self.n_batch):
            chunk = ids[start:start + self.n_batch]
            # Logits at every position but the very last (which predicts nothing we score).
            n_out = min(len(chunk), len(ids) - 1 - start)
            self._submit(chunk, start, outputs=range(n_out))
            for i in range(n_out):
                out[start + i] = log_softmax(self._logits(i))[ids[start + i + 1]]
        return out

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

    def _clear(self) -> None:
        self._llama_cpp.llama_memory_clear(self._memory, True)
        self._cached = []

    def _truncate(self, n: int) -> None:
        """Keep positions [0, n) of sequence 0 and forget the rest."""
        if not self._llama_cpp.llama_memory_seq_rm(self._memory, 0, n, -1):
            raise ModelError(f"{self.path}: llama.cpp could not truncate its KV cache")
        self._cached = self._cached[:n]

    def _decode(self, ids: list[int], start_pos: int, *, want_last: bool) -> np.ndarray | None:
        """Decode `ids` at positions start_pos.. in chunks of n_batch; the last token's logits if asked."""
        result = None
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start:start + self.n_batch]
            is_last_chunk = start + len(chunk) == len(ids)
            outputs = [len(chunk) - 1] if (want_last and is_last_chunk) else []
            self._submit(chunk, start_pos + start, outputs=outputs)
            if outputs:
                result = self._logits(len(chunk) - 1)
        return result

    def _submit(self, chunk: Sequence[int], pos0: int, *, outputs) -> None:
        """One llama_decode of `chunk` (<= n_batch tokens) on sequence 0, logits at `outputs` indices."""
        batch = self._batch
        wanted = set(outputs)
        batch.n_tokens = len(chunk)
        for i, token in enumerate(chunk):
            batch.token[i] = token
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i in wanted else 0
        rc = self._llama_cpp.llama_decode(self.llm.ctx, batch)
        self.tokens_decoded += len(chunk)
        if rc != 0:
            raise ModelError(f"{self.path}: llama_decode failed with code {rc} "
                             f"({len(chunk)} tokens at position {pos0}, context {self.n_ctx})")

    def _logits(self, i: int) -> np.ndarray:
        """A copy of the logits of batch index i (which must have been requested)."""
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, i)
        if not ptr:
            raise ModelError(f"{self.path}: llama.cpp returned no logits for batch index {i}")
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._llama_cpp.llama_batch_free(self._batch)
            self.llm.close()
            self._closed = True

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: llama_cpp may be gone already
            pass
