"""Full-vocabulary KL divergence from the dense model on the perplexity windows, as llama-perplexity computes it.

llama.cpp's ``llama-perplexity --kl-divergence-base FILE`` stores, for each scored
position, the base model's log-softmax over the whole vocabulary, quantized to
uint16 per row (tools/perplexity/perplexity.cpp, ``log_softmax`` with a
``uint16_t *`` argument): with m = max_i log p_i and c = max(min_i log p_i, m - 16),

    scale = (m - c) / 65535,   q_i = round((log p_i - c) / scale) if log p_i > c else 0,

and the row is [scale, c as two float32, then q_0 .. q_{V-1}, padded to an even
count] (``ROW_HEADER`` + ``row_width``: 2 x (V rounded up to even) + 8 bytes per
position). The base log-probability read back is ``scale * q_i + c``; every token
more than 16 nats below the top reads as c.

The second run (``--kl-divergence``) computes per position, with b_i the base's
read-back log-probs and log q_i the new model's float32 log-softmax:

    KLD = sum over i with b_i > -16 of exp(b_i) * (b_i - log q_i)         (nats)
    same top = argmax_i q_i == argmax_i b_i   (first index on ties)
    delta_p = q(token) - exp(b_token)         (probability of the scored token)

and prints mean KLD +/- sqrt((E[x^2] - E[x]^2) / (n - 1)), the KLD percentiles
(max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1, min; linear interpolation at
fraction x (n - 1)), the same-top share +/- sqrt(p (1 - p) / (n - 1)), the same
statistics of delta_p (plus 75/25%) with RMS delta_p, and
ln(PPL(Q)/PPL(base)) +/- its uncertainty with the covariance of the two NLLs.
``kld_summary`` returns those figures; unlike llama.cpp, uncertainties of n <= 10
positions are NaN (llama.cpp prints 0) and figures over no position are NaN.

The run stores the dense model's rows at a bounded, evenly spaced subset of the
scored perplexity positions (``kld_positions``; ``[perplexity] kld_tokens``), in
``ppl/<dense stem>.kld-base.npz`` (``save_base``: numpy arrays, never pickle); each other variant's
perplexity unit feeds its rows at the same positions to a ``Comparison`` against it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.core.files import atomic_path

#: uint16 slots at the start of a row: float32 scale and float32 min log-prob (llama-perplexity's layout).
ROW_HEADER = 4
#: Tokens more than this many nats below the top are stored as the row's floor and left out of the KLD sum.
LOG_RANGE = 16.0
#: Rows handled at a time, so a dequantized float32 copy of the base never spans the whole window.
CHUNK_ROWS = 16
KLD_PERCENTILES = (("max", 1.0), ("p99_9", 0.999), ("p99", 0.99), ("p95", 0.95), ("p90", 0.90), ("median", 0.5),
                   ("p10", 0.10), ("p5", 0.05), ("p1", 0.01), ("p0_1", 0.001), ("min", 0.0))
DELTA_P_PERCENTILES = (("max", 1.0), ("p99_9", 0.999), ("p99", 0.99), ("p95", 0.95), ("p90", 0.90), ("p75", 0.75),
                       ("median", 0.5), ("p25", 0.25), ("p10", 0.10), ("p5", 0.05), ("p1", 0.01), ("p0_1", 0.001),
                       ("min", 0.0))


def row_width(n_vocab: int) -> int:
    """uint16 slots per stored row: the vocabulary rounded up to even, plus the 4-slot header."""
    return 2 * ((n_vocab + 1) // 2) + ROW_HEADER


def bytes_per_position(n_vocab: int) -> int:
    """Bytes one stored position takes before compression (2 x row_width)."""
    return 2 * row_width(n_vocab)


def kld_positions(scored: np.ndarray, n: int) -> np.ndarray:
    """At most `n` of the scored positions `scored` (sorted), evenly spaced from the first to the last; all when
    n >= len(scored); none when n <= 0. The same positions for every variant of a run."""
    scored = np.asarray(scored, dtype=np.int64)
    if n <= 0 or not len(scored):
        return scored[:0]
    if n >= len(scored):
        return scored
    return scored[np.unique(np.round(np.linspace(0, len(scored) - 1, n)).astype(np.int64))]


def quantize_rows(logp: np.ndarray) -> np.ndarray:
    """llama-perplexity's uint16 rows (module docstring) of float32 log-softmax rows (k, V); shape (k, row_width)."""
    logp = np.asarray(logp, dtype=np.float32)
    k, n_vocab = logp.shape
    out = np.zeros((k, row_width(n_vocab)), dtype=np.uint16)
    for start in range(0, k, CHUNK_ROWS):
        x = logp[start:start + CHUNK_ROWS]
        top = x.max(axis=1)
        floor = np.maximum(x.min(axis=1), top - np.float32(LOG_RANGE))
        scale = ((top - floor) / np.float32(65535)).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
        q = np.where(x > floor[:, None], np.rint(inv[:, None] * (x - floor[:, None])), 0)
        out[start:start + len(x), ROW_HEADER:ROW_HEADER + n_vocab] = np.clip(q, 0, 65535).astype(np.uint16)
        header = np.stack([scale, floor.astype(np.float32)], axis=1).astype("<f4")
        out[start:start + len(x), :ROW_HEADER] = header.view("<u2").reshape(len(x), ROW_HEADER)
    return out


def dequantize_rows(rows: np.ndarray, n_vocab: int) -> np.ndarray:
    """The base log-probs llama-perplexity reads back from stored rows: scale * q + min_log_prob (float32)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint16)
    header = rows[:, :ROW_HEADER].copy().view("<f4")
    scale, floor = header[:, 0], header[:, 1]
    return (scale[:, None] * rows[:, ROW_HEADER:ROW_HEADER + n_vocab].astype(np.float32) + floor[:, None])


@dataclass(frozen=True)
class PositionFigures:
    """Per-position figures of a new model against stored base rows (each array has one entry per position)."""

    kld: np.ndarray  # nats
    delta_p: np.ndarray  # p_new(token) - p_base(token)
    same_top: np.ndarray  # bool
    nll: np.ndarray  # -log p_new(token)
    nll_base: np.ndarray  # -log p_base(token), as read back from the rows

    @staticmethod
    def concat(parts: list["PositionFigures"]) -> "PositionFigures":
        if not parts:
            empty = np.empty(0)
            return PositionFigures(empty, empty, np.empty(0, dtype=bool), empty, empty)
        return PositionFigures(*(np.concatenate([getattr(p, f) for p in parts])
                                 for f in ("kld", "delta_p", "same_top", "nll", "nll_base")))


def position_figures(base_rows: np.ndarray, logp: np.ndarray, tokens: np.ndarray) -> PositionFigures:
    """KLD, delta_p, same top and both NLLs per position (module docstring) of the new model's float32 log-softmax
    rows `logp` (k, V) against the stored base rows (k, row_width), `CHUNK_ROWS` rows at a time."""
    logp = np.asarray(logp, dtype=np.float32)
    tokens = np.asarray(tokens, dtype=np.int64)
    k, n_vocab = logp.shape
    if base_rows.shape != (k, row_width(n_vocab)) or tokens.shape != (k,):
        raise ValueError(f"base rows {base_rows.shape} and tokens {tokens.shape} do not fit {k} rows of "
                         f"{n_vocab} log-probs (row width {row_width(n_vocab)})")
    kld, dp, same, nll, nll_base = (np.empty(k), np.empty(k), np.empty(k, dtype=bool), np.empty(k), np.empty(k))
    for start in range(0, k, CHUNK_ROWS):
        sl = slice(start, min(start + CHUNK_ROWS, k))
        b = dequantize_rows(base_rows[sl], n_vocab)
        q = logp[sl]
        idx = np.arange(len(b))
        terms = np.where(b > -np.float32(LOG_RANGE), np.exp(b) * (b - q), np.float32(0))
        kld[sl] = terms.sum(axis=1, dtype=np.float64)
        same[sl] = q.argmax(axis=1) == b.argmax(axis=1)
        nll[sl] = -q[idx, tokens[sl]].astype(np.float64)
        nll_base[sl] = -b[idx, tokens[sl]].astype(np.float64)
        dp[sl] = np.exp(-nll[sl].astype(np.float32)) - np.exp(-nll_base[sl].astype(np.float32))
        del b, terms
    return PositionFigures(kld, dp, same, nll, nll_base)


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    """(mean, sqrt((E[x^2] - E[x]^2) / (n - 1))) as llama-perplexity's mean_and_uncertainty; NaN SE for n <= 10."""
    n = len(x)
    if not n:
        return math.nan, math.nan
    mean = float(np.mean(x))
    var = float(np.mean(np.square(x))) - mean * mean
    return mean, math.sqrt(var / (n - 1)) if n > 10 and var > 0 else (0.0 if n > 10 else math.nan)


def _percentiles(x: np.ndarray, points) -> dict[str, float]:
    """Linear interpolation at fraction x (n - 1) of the sorted values (llama-perplexity's `percentile`)."""
    if not len(x):
        return {name: math.nan for name, _ in points}
    return {name: float(np.percentile(x, 100 * frac)) for name, frac in points}


def kld_summary(fig: PositionFigures) -> dict[str, float | int]:
    """llama-perplexity's KL-divergence statistics (module docstring) over the positions of `fig`."""
    n = len(fig.kld)
    out: dict[str, float | int] = {"n_positions": n}
    out["kld_mean"], out["kld_se"] = _mean_se(fig.kld)
    out.update({f"kld_{k}": v for k, v in _percentiles(fig.kld, KLD_PERCENTILES).items()})
    top = float(np.mean(fig.same_top)) if n else math.nan
    out["same_top"] = top
    out["same_top_se"] = math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else math.nan
    out["delta_p_mean"], out["delta_p_se"] = _mean_se(fig.delta_p)
    out.update({f"delta_p_{k}": v for k, v in _percentiles(fig.delta_p, DELTA_P_PERCENTILES).items()})
    mse, mse_se = _mean_se(np.square(fig.delta_p))
    out["delta_p_rms"] = math.sqrt(mse) if n else math.nan
    out["delta_p_rms_se"] = 0.5 / out["delta_p_rms"] * mse_se if n and out["delta_p_rms"] > 0 else math.nan
    lp, lp_se = _mean_se(fig.nll)
    lb, lb_se = _mean_se(fig.nll_base)
    cov = (float(np.mean(fig.nll * fig.nll_base)) - lp * lb) / (n - 1) if n >= 10 else 0.0
    out["ppl"], out["ppl_base"] = math.exp(lp) if n else math.nan, math.exp(lb) if n else math.nan
    out["ln_ppl_ratio"] = lp - lb
    out["ln_ppl_ratio_se"] = math.sqrt(max(lp_se ** 2 + lb_se ** 2 - 2 * cov, 0.0)) if n > 10 else math.nan
    return out


# --- the base file -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KldBase:
    """The dense model's stored rows: corpus positions of the scored tokens, their ids, and the uint16 rows."""

    positions: np.ndarray  # int64, corpus index of each scored token
    tokens: np.ndarray  # int64, the token id scored there
    rows: np.ndarray  # uint16 (k, row_width(n_vocab))
    n_vocab: int

    def __post_init__(self) -> None:
        k = len(self.positions)
        if self.tokens.shape != (k,) or self.rows.shape != (k, row_width(self.n_vocab)):
            raise ValueError(f"KLD base: {k} positions, tokens {self.tokens.shape}, rows {self.rows.shape} "
                             f"(want ({k}, {row_width(self.n_vocab)}) for {self.n_vocab} tokens)")


def save_base(base: KldBase, path: Path) -> None:
    """Write `base` as a compressed .npz (numpy arrays only), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, positions=base.positions.astype(np.int64), tokens=base.tokens.astype(np.int64),
                                rows=base.rows.astype(np.uint16), n_vocab=np.int64(base.n_vocab))


def load_base(path: Path) -> KldBase:
    """Read a base file written by `save_base` (pickle refused); ValueError/OSError when it is not one."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"positions", "tokens", "rows", "n_vocab"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a KLD base file (no {', '.join(sorted(missing))})")
        return KldBase(z["positions"], z["tokens"], z["rows"], int(z["n_vocab"]))


class BaseCollector:
    """Row sink of the dense perplexity unit (auditor.scoring.perplexity.RowSink): quantizes each window's rows."""

    def __init__(self) -> None:
        self._positions: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self.n_vocab = 0

    def __call__(self, positions: np.ndarray, tokens: np.ndarray, logp: np.ndarray) -> None:
        self.n_vocab = logp.shape[1]
        self._positions.append(np.asarray(positions, dtype=np.int64))
        self._tokens.append(np.asarray(tokens, dtype=np.int64))
        self._rows.append(quantize_rows(logp))

    def base(self) -> KldBase:
        """The collected rows as a base (empty when no window had a wanted position)."""
        if not self._rows:
            return KldBase(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, row_width(0)), np.uint16), 0)
        return KldBase(np.concatenate(self._positions), np.concatenate(self._tokens), np.concatenate(self._rows),
                       self.n_vocab)


class Comparison:
    """Row sink of another variant's perplexity unit: its figures against `base` at the base's positions.

    A window whose positions, token ids or vocabulary differ from the base's sets `problem` (the
    figures are then withheld, never computed on misaligned rows).
    """

    def __init__(self, base: KldBase) -> None:
        self.base = base
        self.problem = ""
        self._parts: list[PositionFigures] = []
        self._seen = 0

    def __call__(self, positions: np.ndarray, tokens: np.ndarray, logp: np.ndarray) -> None:
        if self.problem:
            return
        at = np.searchsorted(self.base.positions, positions)
        if (logp.shape[1] != self.base.n_vocab or np.any(at >= len(self.base.positions))
                or not np.array_equal(self.base.positions[np.minimum(at, len(self.base.positions) - 1)], positions)):
            self.problem = (f"the dense base holds other positions or another vocabulary ({self.base.n_vocab} "
                            f"tokens, this model {logp.shape[1]})")
            return
        if not np.array_equal(self.base.tokens[at], tokens):
            self.problem = "the dense base was scored on other token ids (another corpus or tokenizer)"
            return
        self._parts.append(position_figures(self.base.rows[at], logp, tokens))
        self._seen += len(positions)

    def summary(self) -> dict:
        """`kld_summary` of every position, or {"problem": why} when they cannot be compared or some were missed."""
        if not self.problem and self._seen != len(self.base.positions):
            self.problem = f"{self._seen} of the base's {len(self.base.positions)} positions were scored"
        if self.problem:
            return {"problem": self.problem}
        return kld_summary(PositionFigures.concat(self._parts))
