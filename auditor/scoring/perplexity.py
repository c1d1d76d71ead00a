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

Memory: a torch model's window is scored with its LM head applied a slice of
positions at a time (`ChunkedHeadScorer`), so the full-vocabulary logits of the
whole window (8 bytes x window x vocabulary, 4.3 GB for Gemma 3's 262k vocabulary
at 2,048 tokens) never exist at once; the log-probabilities equal the unchunked
ones within float rounding (the same rows, the same head, the same log-softmax).

Full-vocabulary rows: given scored positions (`rows_at`, e.g. `kld_tokens` of them evenly
spaced over `scored_positions`) and a sink, each window also hands the sink the float32
log-softmax at its positions among them, copied out of the head slice that computed them
(`token_logprobs_rows`), so the KL divergence from the dense model
(auditor.analysis.kld) is computed on the very distributions perplexity scores.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np

from auditor.core.errors import DataError
from auditor.core.progress import progress
from auditor.data.sources import resolve_corpus
from auditor.data.tokens import bos_id

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 1024
DEFAULT_STRIDE = 512
DEFAULT_MAX_TOKENS = 16384  # keeps one variant's run to about a minute on 2 CPU cores (docs/engine.md)
#: Scored positions whose full log-softmax the dense unit keeps for the KLD (auditor.analysis.kld) when a study
#: asks for it (`[perplexity] kld_tokens`; off by default, so studies written before it keep their hash): 2 x
#: vocabulary + 8 bytes each before compression (25 MB at SmolLM2's 49,152 tokens, 78 MB at Qwen2.5's 151,936
#: for 256, what the demo sets).
DEFAULT_KLD_TOKENS = 0
#: Float32 logits held per slice of the chunked LM head (positions = this / (4 x vocabulary), at least 1).
HEAD_CHUNK_BYTES = 64 * 2**20
# Config attributes that scale logits after the head in some architectures (Cohere, Granite): the chunked
# head does not reproduce them, so such models are scored by the backend's own unchunked path.
_POST_HEAD_SCALES = ("logit_scale", "logits_scaling")


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


class _HeadInput(Exception):
    """Raised by the LM head's pre-hook to stop the forward pass with the head's input."""

    def __init__(self, hidden) -> None:
        super().__init__("LM head input captured")
        self.hidden = hidden


class ChunkedHeadScorer:
    """`token_logprobs` of a torch causal LM, its LM head run on slices of positions.

    The body runs once per window as in `TorchBackend.token_logprobs`; a pre-hook on
    the output embeddings takes their input (the final hidden states) and stops the
    forward pass before the full-vocabulary head. Each slice of positions then goes
    through the same head, the same final logit soft-capping (Gemma 2/3's
    `final_logit_softcapping`, in the model dtype as transformers applies it) and
    the same float32 log-softmax. Models whose head is not reached through the output
    embeddings, or that rescale logits after it, are scored unchunked.
    """

    def __init__(self, model, *, chunk_bytes: int = HEAD_CHUNK_BYTES) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        self.model = model
        self.chunk_bytes = chunk_bytes
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.head = model.get_output_embeddings()
        self.chunked = self.head is not None and not any(
            getattr(config, name, None) not in (None, 1, 1.0) for name in _POST_HEAD_SCALES)

    def positions_per_chunk(self, vocab: int) -> int:
        """Positions per slice: `chunk_bytes` of float32 logits."""
        return max(1, self.chunk_bytes // (4 * vocab))

    def token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for i = 1..len(ids)-1 (float64), as `TorchBackend.token_logprobs`."""
        return self.token_logprobs_rows(ids, ())[0]

    def token_logprobs_rows(self, ids: Sequence[int], rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """`token_logprobs(ids)` and the full float32 log-softmax at output positions `rows` (len(rows), vocab):
        row j is the distribution of ids[j + 1]. Each is copied out of the head slice that computed it."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        if len(ids) < 2:
            return np.empty(0, dtype=np.float64), np.empty((0, 0), dtype=np.float32)
        device = self.model.get_input_embeddings().weight.device
        x = torch.tensor(list(ids), dtype=torch.long, device=device)[None, :]
        targets = x[0, 1:]
        kept: list[np.ndarray] = []
        with torch.inference_mode():
            hidden = self._hidden_states(x) if self.chunked else None
            if hidden is None:  # unchunked: the backend's own computation
                logits = self.model(input_ids=x, use_cache=False).logits[0, :-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                full = logp[torch.as_tensor(rows, device=logp.device)].cpu().numpy() if len(rows) else None
                return logp.gather(1, targets[:, None])[:, 0].double().cpu().numpy(), _stack(full, rows, logp.shape[-1])
            hidden = hidden[0, :-1]
            vocab = self.head.out_features if hasattr(self.head, "out_features") else self.head.weight.shape[0]
            step = self.positions_per_chunk(vocab)
            out = torch.empty(len(ids) - 1, dtype=torch.float64)
            for start in range(0, hidden.shape[0], step):
                stop = min(start + step, hidden.shape[0])
                logits = self.head(hidden[start:stop])
                if self.softcap:
                    logits = torch.tanh(logits / self.softcap) * self.softcap
                logp = torch.log_softmax(logits.float(), dim=-1)
                out[start:stop] = logp.gather(1, targets[start:stop, None])[:, 0].double().cpu()
                here = rows[(rows >= start) & (rows < stop)] - start
                if len(here):
                    kept.append(logp[torch.as_tensor(here, device=logp.device)].cpu().numpy())
                del logits, logp
        return out.numpy(), _stack(np.concatenate(kept) if kept else None, rows, vocab)

    def _hidden_states(self, x):
        """The head's input for every position of `x`, or None when the forward never reached the head."""
        def stop(_module, args):
            raise _HeadInput(args[0])

        handle = self.head.register_forward_pre_hook(stop)
        try:
            self.model(input_ids=x, use_cache=False)
        except _HeadInput as captured:
            hidden = captured.hidden
            return hidden if hidden.dim() == 3 and hidden.shape[1] == x.shape[1] else None
        finally:
            handle.remove()
        log.warning("the LM head was not reached through the output embeddings: perplexity scored unchunked")
        self.chunked = False  # the architecture computes its logits elsewhere: do not run the body twice again
        return None


def _stack(full: np.ndarray | None, rows: np.ndarray, vocab: int) -> np.ndarray:
    """The kept float32 rows, or an empty (0, vocab) array when none were asked for."""
    return np.ascontiguousarray(full, dtype=np.float32) if full is not None else np.empty((len(rows), vocab), np.float32)


def _scorer(backend: TokenScorer, chunked_head: bool) -> TokenScorer:
    """The chunked-head scorer over a torch backend's model (module docstring); `backend` otherwise."""
    model = getattr(backend, "model", None)
    if chunked_head and getattr(backend, "name", None) == "torch" and hasattr(model, "get_output_embeddings"):
        return ChunkedHeadScorer(model)
    return backend


def scored_positions(n_tokens: int, max_length: int, stride: int, *, bos: bool = False) -> np.ndarray:
    """The corpus positions `perplexity` scores, in order (each once): the windows' [first_scored, end) ranges."""
    spans = [np.arange(w.first_scored, w.end) for w in sliding_windows(n_tokens, max_length, stride, bos=bos)]
    return np.concatenate(spans).astype(np.int64) if spans else np.empty(0, dtype=np.int64)


#: Called per window with the corpus positions, their token ids and the float32 full-vocabulary log-softmax rows.
RowSink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def perplexity(backend: TokenScorer, token_ids: Sequence[int], max_length: int = DEFAULT_MAX_LENGTH,
               stride: int = DEFAULT_STRIDE, *, bos_id: int | None = None,
               chunked_head: bool = True, rows_at: Sequence[int] | None = None,
               on_rows: RowSink | None = None) -> PerplexityResult:
    """Sliding-window perplexity of `token_ids` under `backend` (see the module docstring).

    A torch backend's windows go through `ChunkedHeadScorer` unless `chunked_head` is False
    (then its own `token_logprobs`, full-vocabulary logits for the whole window).
    With `rows_at` (scored corpus positions, from `scored_positions`) and `on_rows`, each window
    also hands `on_rows` the full log-softmax at those of its positions, in order, as its head
    computed them (auditor.analysis.kld); the backend then needs `token_logprobs_rows`, and a torch
    backend always goes through `ChunkedHeadScorer` (chunked or not).
    """
    ids = list(token_ids)
    wanted = np.sort(np.asarray(rows_at if rows_at is not None and on_rows is not None else [], dtype=np.int64))
    backend = _scorer(backend, chunked_head or len(wanted) > 0)
    if len(wanted) and not hasattr(backend, "token_logprobs_rows"):
        raise ValueError(f"the {getattr(backend, 'name', type(backend).__name__)} backend cannot return "
                         "full-vocabulary rows (token_logprobs_rows)")
    if isinstance(backend, ChunkedHeadScorer) and not chunked_head:
        backend.chunked = False
    head = [] if bos_id is None else [int(bos_id)]
    windows = sliding_windows(len(ids), max_length, stride, bos=bos_id is not None)
    start = time.perf_counter()
    nll_sum, n_scored = 0.0, 0
    with progress(len(windows), "windows") as bar:
        for w in windows:
            window = head + ids[w.begin:w.end]
            here = wanted[(wanted >= w.first_scored) & (wanted < w.end)]
            # logp[j - 1] is log p(window[j] | window[:j]); window[len(head) + k] is ids[begin + k].
            if len(here):
                logp, rows = backend.token_logprobs_rows(window, here - w.begin + len(head) - 1)  # type: ignore[attr-defined]
                on_rows(here, np.asarray([ids[p] for p in here], dtype=np.int64), rows)  # type: ignore[misc]
                del rows
            else:
                logp = backend.token_logprobs(window)
            logp = np.asarray(logp, dtype=np.float64)
            if logp.shape != (len(window) - 1,):
                raise ValueError(f"token_logprobs returned shape {logp.shape} for {len(window)} tokens")
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
