"""The one interface every runtime implements for BBQ scoring.

A backend receives token ids (never text), so every runtime scores exactly the
same prompts, and returns log-softmax over the full vocabulary at the answer
position, read at the option-letter tokens. The engine and the metrics import
no runtime.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from auditor.data.prompts import PromptGroup


class ScoringBackend(ABC):
    """Scores prompt groups; implementations may reuse a group's prefix across its suffixes."""

    name: str

    @abstractmethod
    def letter_logprobs(self, groups: Sequence[PromptGroup], letter_ids: Sequence[int]) -> list[np.ndarray]:
        """For each group an array (n_suffixes, n_letters) of log-probs at the last position."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""
