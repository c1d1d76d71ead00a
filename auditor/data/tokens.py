"""Tokenizer conventions every consumer of raw text shares: whether sequences begin with BOS."""
from __future__ import annotations


def bos_id(tokenizer) -> int | None:
    """The BOS id when the tokenizer puts BOS in front of what it encodes (Gemma, Llama 2/3), else None.

    Decided by the tokenizer's own behaviour (`encode(text)` with special tokens),
    not by whether a BOS token exists: SmolLM2 has one but does not add it.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    probe = tokenizer.encode("a", add_special_tokens=True)
    return int(bos) if probe and probe[0] == bos else None
