"""Compression techniques behind one interface; see `compressors.base` and `compressors.registry`."""
from compressors.base import Compressor, Variant
from compressors.registry import parse_chain

__all__ = ["Compressor", "Variant", "parse_chain"]
