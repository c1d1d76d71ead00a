"""Compression-risk auditor for LLMs: BBQ bias under pruning and quantization, measured before shipping."""
from __future__ import annotations

from auditor.core.provenance import auditor_version

__version__ = auditor_version()
