"""The one interface every runtime implements for BBQ scoring.

A backend receives token ids (never text), so every runtime scores exactly the
same prompts, and returns log-softmax over the full vocabulary at the answer
position, read at the option-letter tokens. The engine and the metrics import
no runtime. For the cloze protocol a backend also sums the log-likelihood of
continuations after a context (`continuation_logprobs`), built on its
`token_logprobs`.
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

    def planned_tokens(self, groups: Sequence[PromptGroup]) -> int | None:
        """Tokens `letter_logprobs` plans to run through the model for `groups` (None: the backend does not plan)."""
        return None

    @property
    def tokens_computed(self) -> int | None:
        """Tokens run through the model since the backend was made, pads included (None: not counted).
        With `planned_tokens`, what the plan saves and what the runtime adds back shows here."""
        return None

    def token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for i = 1..len(ids)-1 (full-vocabulary log-softmax)."""
        raise NotImplementedError(f"the {self.name} backend cannot score token sequences")

    def continuation_logprobs(self, context_ids: Sequence[int],
                              continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """For each continuation c: sum_i log p(c_i | context, c_<i), as a float64 array.

        The harness's loglikelihood request (lm-evaluation-harness `LM.loglikelihood`);
        the context must hold at least one token. Backends may override it to batch.
        """
        if not context_ids:
            raise ValueError("a continuation needs a context of at least one token")
        out = np.empty(len(continuations))
        for c, cont in enumerate(continuations):
            lp = self.token_logprobs(list(context_ids) + list(cont))
            out[c] = float(np.sum(lp[len(lp) - len(cont):])) if len(cont) else 0.0
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""
