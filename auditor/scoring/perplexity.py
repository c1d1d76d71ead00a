"""Sliding-window perplexity on a text corpus, the same token ids for every variant and backend.

The corpus is tokenised once (`corpus_token_ids`) and the ids go to any
backend with `token_logprobs(ids) -> log p(ids[i] | ids[:i]) for i >= 1`
(torch and llama.cpp), so every variant is scored on identical tokens.

Windows follow the Hugging Face perplexity guide ("Perplexity of fixed-length
models", strided sliding window): windows of at most `max_length` tokens start
every `stride` tokens, and each token is scored once, in the first window
that reaches it, so after the first window every scored token has at least
max_length - stride tokens of context. Then

    PPL = exp( -(1/N) * sum_i log p(x_i | window context of x_i) )

over the N scored tokens. Token 0 has no context and is never scored; with
stride == max_length the first token of every window is not scored either.

With `bos_id` (tokenizers that add BOS: Gemma needs it, PPL 304 instead of 73
without), every window is BOS followed by at most max_length - 1 corpus tokens,
so the window's first corpus token has context (BOS) and is scored too: with
BOS, every corpus token, token 0 included, is scored exactly once. This is the
same loss transformers computes on BOS + window with the BOS label ignored.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from auditor.core.errors import DataError
from auditor.core.progress import progress
from auditor.data.sources import resolve_corpus
from auditor.data.tokens import bos_id

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 1024
DEFAULT_STRIDE = 512
DEFAULT_MAX_TOKENS = 16384  # keeps one variant's run to about a minute on 2 CPU cores (docs/engine.md)


class TokenScorer(Protocol):
    def token_logprobs(self, ids: Sequence[int]) -> np.ndarray: ...  # noqa: D102


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity and what it was computed from; ppl is NaN when no token was scored."""

    ppl: float
    nll_sum: float  # -sum of natural-log probabilities of the scored tokens
    n_tokens: int  # tokens scored
    n_windows: int
    max_length: int
    stride: int
    corpus_tokens: int  # length of the id sequence given
    wall_s: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) go to the model; tokens [first_scored, end) are scored."""

    begin: int
    end: int
    first_scored: int


def sliding_windows(n_tokens: int, max_length: int, stride: int, *, bos: bool = False) -> list[Window]:
    """The HF guide's strided windows; each token 1..n-1 scored at most once (all of them when stride < max_length).

    With `bos`, windows hold max_length - 1 corpus tokens (BOS takes one place) and their first
    token is scorable, so tokens 0..n-1 are each scored once; a stride of max_length (disjoint
    windows) then becomes max_length - 1, so no token is skipped.
    """
    if max_length < 2 + bos:
        raise ValueError(f"max_length must be >= {2 + bos}, got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    span = max_length - bos
    stride = min(stride, span)
    windows = []
    prev_end = 0
    for begin in range(0, max(n_tokens - (not bos), 0), stride):
        end = min(begin + span, n_tokens)
        # Without BOS a window's first token has no context inside the window, so it cannot be scored there.
        first = max(prev_end, begin + (not bos))
        if first < end:
            windows.append(Window(begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def perplexity(backend: TokenScorer, token_ids: Sequence[int], max_length: int = DEFAULT_MAX_LENGTH,
               stride: int = DEFAULT_STRIDE, *, bos_id: int | None = None) -> PerplexityResult:
    """Sliding-window perplexity of `token_ids` under `backend` (see the module docstring)."""
    ids = list(token_ids)
    head = [] if bos_id is None else [int(bos_id)]
    windows = sliding_windows(len(ids), max_length, stride, bos=bos_id is not None)
    start = time.perf_counter()
    nll_sum, n_scored = 0.0, 0
    with progress(len(windows), "windows") as bar:
        for w in windows:
            window = head + ids[w.begin:w.end]
            logp = np.asarray(backend.token_logprobs(window), dtype=np.float64)
            if logp.shape != (len(window) - 1,):
                raise ValueError(f"token_logprobs returned shape {logp.shape} for {len(window)} tokens")
            # logp[j - 1] is log p(window[j] | window[:j]); window[len(head) + k] is ids[begin + k].
            scored = logp[w.first_scored - w.begin + len(head) - 1:]
            nll_sum -= float(scored.sum())
            n_scored += len(scored)
            bar.update(1)
    wall = time.perf_counter() - start
    ppl = math.exp(nll_sum / n_scored) if n_scored else float("nan")
    log.info("perplexity %.3f over %d tokens in %d windows (%.1fs)", ppl, n_scored, len(windows), wall)
    return PerplexityResult(ppl, nll_sum, n_scored, len(windows), max_length, stride, len(ids), wall)


class CorpusTokens(NamedTuple):
    """Token ids of the corpus (after the cap), a provenance line naming the text and the cap, and the
    BOS id every window starts with (None when the tokenizer adds no BOS)."""

    ids: tuple[int, ...]
    origin: str
    bos_id: int | None = None


def corpus_token_ids(tokenizer, explicit: str | Path | None = None, *,
                     max_tokens: int | None = DEFAULT_MAX_TOKENS) -> CorpusTokens:
    """Tokenise the perplexity corpus (resolve_corpus(explicit, "test")) and keep its first max_tokens ids.

    The whole text is tokenised, then cut, so the kept ids do not depend on
    the cap. No special tokens are added. An empty text raises DataError.
    """
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 or None, got {max_tokens}")
    source = resolve_corpus(explicit, "test")
    try:
        text = source.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(source.path, f"cannot read corpus text ({exc})") from None
    if not text.strip():
        raise DataError(source.path, "corpus text is empty")
    ids = _encode_long(tokenizer, text)
    total = len(ids)
    kept = ids if max_tokens is None else ids[:max_tokens]
    cap = "all" if len(kept) == total else f"first {len(kept)}"
    bos = bos_id(tokenizer)
    origin = f"{source.origin}; {cap} of {total} tokens" + ("" if bos is None else f"; windows start with BOS ({bos})")
    return CorpusTokens(tuple(int(i) for i in kept), origin, bos)


def _encode_long(tokenizer, text: str) -> list[int]:
    # HF tokenizers warn when a text exceeds model_max_length; this text is never fed whole to a model.
    tok_logger = logging.getLogger("transformers.tokenization_utils_base")
    level = tok_logger.level
    tok_logger.setLevel(logging.ERROR)
    try:
        return list(tokenizer.encode(text, add_special_tokens=False))
    finally:
        tok_logger.setLevel(level)
