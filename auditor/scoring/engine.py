"""The BBQ engine: one set of prompts, scored by any backend, into item records.

Every variant of a run is scored on the same PromptGroups (same items, token
ids and option orders), whatever runtime serves it, so records pair up item
by item across variants.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from auditor.core.errors import AuditorError
from auditor.data.bbq import BBQItem
from auditor.data.cloze import ClozeRequest
from auditor.data.prompt_format import PromptFormat, choose_format
from auditor.data.prompts import PromptGroup, build_groups, letter_token_ids, seed_problem
from auditor.data.records import CLOZE, make_records
from auditor.scoring.backends.base import ScoringBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSet:
    """Items, seeds and their tokenised prompts: built once per run, shared by all variants."""

    items: tuple[BBQItem, ...]
    seeds: tuple[int, ...]
    groups: tuple[PromptGroup, ...]
    letter_ids: tuple[int, ...]
    prompt_format: str  # PromptFormat.version, written into every record

    @classmethod
    def build(cls, tokenizer, items: Sequence[BBQItem], seeds: Sequence[int],
              prompt_format: PromptFormat | None = None) -> "PromptSet":
        """Prompts in `prompt_format` (default: the tokenizer's chat template, else the plain format)."""
        if prompt_format is None:
            prompt_format = choose_format(bool(getattr(tokenizer, "chat_template", None)))
        if not seeds:
            raise ValueError("at least one seed is needed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {list(seeds)}")
        for seed in seeds:
            if (problem := seed_problem(seed)) is not None:
                raise AuditorError(problem)
        groups = build_groups(prompt_format.wrap(tokenizer), items, seeds)
        return cls(tuple(items), tuple(seeds), tuple(groups), letter_token_ids(tokenizer), prompt_format.version)

    @property
    def n_prompts(self) -> int:
        return len(self.items) * len(self.seeds)


@dataclass(frozen=True)
class ScoreResult:
    """Records and cost of one scoring call. planned_tokens: what the backend's plan computes (for torch
    and llama.cpp the tree plan: the common prefix once, each item's answer orders as one trie);
    computed_tokens: what its runtime actually ran (torch adds pads, llama.cpp each extra lane's copy
    of the common prefix). None where a backend does not say."""

    records: pd.DataFrame
    wall_s: float
    ms_per_prompt: float
    planned_tokens: int | None = None
    computed_tokens: int | None = None


def score(backend: ScoringBackend, prompts: PromptSet, variant: str) -> ScoreResult:
    """Score every (item, seed) of `prompts` with `backend`; rows in dataset answer indexing."""
    # Stand-in backends (tests, adapters) need not derive from ScoringBackend: no counts then.
    planned = backend.planned_tokens(prompts.groups) if hasattr(backend, "planned_tokens") else None
    before = getattr(backend, "tokens_computed", None)
    start = time.perf_counter()
    logprobs = backend.letter_logprobs(prompts.groups, prompts.letter_ids)
    wall = time.perf_counter() - start
    computed = None if before is None else backend.tokens_computed - before
    frames = []
    for s, seed in enumerate(prompts.seeds):
        shown = np.stack([lp[s] for lp in logprobs])
        perms = [g.perms[s] for g in prompts.groups]
        frames.append(make_records(variant, backend.name, seed, prompts.items, perms, shown))
    records = pd.concat(frames, ignore_index=True)
    records["prompt_format"] = prompts.prompt_format
    log.info("scored %s on %s: %d prompts in %.1fs (%s planned, %s computed tokens)", variant, backend.name,
             prompts.n_prompts, wall, planned, computed)
    return ScoreResult(records, wall, 1000 * wall / max(prompts.n_prompts, 1), planned, computed)


def score_cloze(backend: ScoringBackend, items: Sequence[BBQItem], requests: Sequence[ClozeRequest],
                variant: str) -> ScoreResult:
    """The cloze protocol (auditor.data.cloze): one row per item, protocol "cloze", seed 0, dataset order.

    The score of dataset answer k is the largest summed continuation
    log-likelihood among its choices, and the answer is the argmax of the three
    scores: the harness's argmax over choices, except on an exact tie between two
    answers (the harness takes the earlier choice, records the lower index).
    """
    start = time.perf_counter()
    scores = np.empty((len(items), 3))
    for i, req in enumerate(requests):
        lls = backend.continuation_logprobs(req.context_ids, req.continuations)
        for k in range(3):
            scores[i, k] = max(ll for ll, a in zip(lls, req.answers) if a == k)
    wall = time.perf_counter() - start
    records = make_records(variant, backend.name, 0, items, [(0, 1, 2)] * len(items), scores, protocol=CLOZE)
    log.info("cloze-scored %s on %s: %d items in %.1fs", variant, backend.name, len(items), wall)
    return ScoreResult(records, wall, 1000 * wall / max(len(items), 1))
