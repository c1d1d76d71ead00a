"""Calibration token windows for activation-aware methods (Wanda)."""
from __future__ import annotations

from pathlib import Path

from auditor.core.errors import DataError, SpecError
from auditor.data.sources import resolve_corpus
from auditor.data.tokens import bos_id
from compressors.base import CalibrationData

DEFAULT_SAMPLES = 32
DEFAULT_SEQ_LEN = 256


def load_calibration(tokenizer, path: str | Path | None = None, *, n_samples: int = DEFAULT_SAMPLES,
                     seq_len: int = DEFAULT_SEQ_LEN, seed: int = 0) -> CalibrationData:
    """n_samples random windows of seq_len tokens from a text file (WikiText-2 valid by default).

    Windows start at seeded uniform offsets, as in the Wanda and SparseGPT
    reference code (which draw them from C4; WikiText-2 is what we have offline).
    Windows may overlap on a short text. Without `path`: WikiText-2 valid beside
    the checkout when present, else fixtures/corpus_valid.txt (see auditor.data.sources).
    A text too short for one window is an error naming the file. When the
    tokenizer adds BOS (Gemma, Llama 2/3), every window is BOS followed by
    seq_len - 1 text tokens, as the model sees text in training and scoring.
    """
    import torch


    if n_samples <= 0 or seq_len <= 0:
        raise SpecError(f"calibration needs positive sample count and length, got {n_samples} x {seq_len}")
    source = resolve_corpus(path, "valid")
    if not source.path.is_file():
        raise DataError(source.path, "calibration text file is missing")
    try:
        text = source.path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(source.path, f"calibration text is not UTF-8 (byte {exc.start})") from None
    ids = tokenizer.encode(text, add_special_tokens=False)
    bos = bos_id(tokenizer)
    span = seq_len - (bos is not None)
    if span < 1 or len(ids) <= span:
        raise DataError(source.path, f"calibration text has {len(ids)} tokens; need more than seq_len={seq_len}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - span, (n_samples,), generator=generator)
    tokens = torch.tensor(ids, dtype=torch.long)
    windows = torch.stack([tokens[s:s + span] for s in starts.tolist()])
    if bos is not None:
        windows = torch.cat([torch.full((n_samples, 1), bos, dtype=torch.long), windows], dim=1)
    first = f"BOS ({bos}) + {span} text tokens" if bos is not None else f"{seq_len} tokens"
    return CalibrationData(windows, f"{source.origin}; {n_samples} x {first}, seed {seed}")
