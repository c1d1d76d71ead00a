"""The project's error types: one clear message, naming the file, line or option."""
from __future__ import annotations

from pathlib import Path


class AuditorError(Exception):
    """Bad input or an unusable resource. The CLI prints the message and exits 2."""

    exit_code = 2


class DataError(AuditorError):
    """A data file is malformed; the message names the file and, where known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {message}")


class SpecError(AuditorError):
    """An unknown compressor, option or level."""


class ModelError(AuditorError):
    """A model path that is missing, truncated or of an unsupported kind."""
