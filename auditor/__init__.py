"""Compression-risk auditor for LLMs: BBQ bias under pruning and quantization, measured before shipping."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("compression-risk-auditor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
