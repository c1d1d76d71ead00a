"""Build a synthetic run directory with the real file layout, for report, gate and TUI tests. No model.

Answers are planted, not scored: every variant's choice per (item, seed) is a
rule below, written to records/*.parquet with auditor.data.records.make_records, so
the expected figures can be counted by hand from the rules:

- dense: ambiguous items answered "unknown", except example ids divisible by 4
  (stereotype-consistent); disambiguated items answered correctly. Under seed 1
  it also answers the ambiguous item Age/1 with the stereotype (answer-order noise).
- magnitude@0.3: dense, plus ambiguous Age items with example id % 8 == 5 flipped
  to the stereotype (a small change).
- magnitude@0.5: dense, plus every ambiguous item with example id % 8 == 5 flipped.
- wanda@0.5 (PLANTED_HIGH): every ambiguous item answered with the stereotype.
- rtn@4: identical to dense (a quantized variant with no change).

With ``position_driven_dense=True`` the dense model (and every variant's
fallback) instead answers like SmolLM2-135M does: the first shown option, except
on the ambiguous items with example id 9 in four categories (the second): 95% "A".
"""
from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from auditor.core.files import write_json
from auditor.core.names import unit_name
from auditor.data.bbq import BBQItem, select_items
from auditor.data.prompts import answer_order
from auditor.data.records import items_frame, make_records, write_parquet

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_BBQ = ROOT / "fixtures" / "bbq_sample"
PLANTED_HIGH = "wanda@0.5"
SCRIPT_TEXT = "<script>alert('planted')</script>"
SCRIPT_ITEM = "Age/13"  # flipped by three variants: the report shows it among the examples

Rule = Callable[[BBQItem, int], int]


def _dense(item: BBQItem, seed: int) -> int:
    if item.condition == "disambig":
        return item.label
    if item.example_id % 4 == 0 or (seed == 1 and item.item_id == "Age/1"):
        return int(item.stereotype_index)
    return int(item.unknown_index)


def _first_shown(item: BBQItem, seed: int) -> int:
    """Position-driven: the option shown as A (as B on 4 of the 80 items)."""
    second = item.example_id == 9 and item.category != "Religion"
    return answer_order(seed)[1 if second else 0]


def _flip_when(pred: Callable[[BBQItem], bool]) -> Rule:
    def rule(item: BBQItem, seed: int, fallback: Rule = _dense) -> int:
        if item.condition == "ambig" and pred(item):
            return int(item.stereotype_index)
        return fallback(item, seed)
    return rule


RULES: dict[str, Rule] = {
    "dense": _dense,
    "magnitude@0.3": _flip_when(lambda it: it.category == "Age" and it.example_id % 8 == 5),
    "magnitude@0.5": _flip_when(lambda it: it.example_id % 8 == 5),
    PLANTED_HIGH: _flip_when(lambda it: True),
    "rtn@4": _dense,
}

#: Measured figures planted for some units (the rest stay "not measured"): size, bits, speeds.
MEASURED = {
    "dense": {"size_bytes": 538_000_000, "bits_per_weight": 32.0, "load_s": {"median": 1.2, "min": 1.1, "max": 1.4},
              "prefill_tokens_per_s": {"median": 900.0, "min": 850.0, "max": 950.0},
              "decode_tokens_per_s": {"median": 40.0, "min": 38.0, "max": 41.0}, "bbq_ms_per_prompt": 110.0},
    "magnitude@0.5": {"size_bytes": 538_000_000, "bits_per_weight": 32.0,
                      "prefill_tokens_per_s": {"median": 880.0, "min": 860.0, "max": 905.0},
                      "decode_tokens_per_s": {"median": 39.0, "min": 37.0, "max": 40.0}, "bbq_ms_per_prompt": 112.0},
    # the smallest real file: a pruned model as a GGUF F16 (rtn@4's 80 MB below is simulated, no file's size)
    PLANTED_HIGH: {"size_bytes": 270_000_000, "bits_per_weight": 16.0, "bbq_ms_per_prompt": 111.0},
    "rtn@4": {"size_bytes": 80_000_000, "bits_per_weight": 4.5, "bbq_ms_per_prompt": 95.0},
}
#: Planted perplexities (ppl/<unit>.json), for the paradox table and plot.
PPL = {"dense": 20.0, "magnitude@0.3": 20.5, "magnitude@0.5": 21.0, PLANTED_HIGH: 21.2}


def sample_items() -> list[BBQItem]:
    return list(select_items([SAMPLE_BBQ], origin="fixture").items)


def _shown_logprobs(chosen: Sequence[int], perms: Sequence[Sequence[int]]) -> np.ndarray:
    """Log-probs as shown (position j shows dataset answer perm[j]): the chosen answer gets p = 0.6."""
    out = np.full((len(chosen), 3), np.log(0.2))
    for i, (k, perm) in enumerate(zip(chosen, perms)):
        out[i, list(perm).index(k)] = np.log(0.6)
    return out


def build_run(
    root: Path,
    name: str = "synth",
    *,
    variants: Sequence[str] = ("magnitude@0.3", "magnitude@0.5", PLANTED_HIGH, "rtn@4"),
    seeds: Sequence[int] = (0, 1),
    script_in_context: bool = True,
    thresholds: dict | None = None,
    position_driven_dense: bool = False,
) -> Path:
    """Write `root/name` as a run directory of dense + `variants`; return its path."""
    items = sample_items()
    if script_in_context:  # item text must reach HTML escaped; plant markup where a browser would run it
        items = [dataclasses.replace(it, context=f"{it.context} {SCRIPT_TEXT}") if it.item_id == SCRIPT_ITEM else it
                 for it in items]
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    manifest = {
        "config": {"variants": list(variants), "condition": "both", "sample_seed": 0, "compress_seed": 0,
                   "seeds": list(seeds), "run_name": name},
        "created_utc": "2026-01-01T00:00:00+00:00",
        "model": {"name": "synthetic", "path": "(none: answers planted by tests/helpers_runs.py)",
                  "kind": "synthetic", "reference_precision": "dequantized Q4_1 GGUF (synthetic test run)"},
        "data": {"origin": "project SAMPLE in BBQ's schema (fixtures/bbq_sample) - NOT BBQ", "is_sample": True,
                 "files": [str(SAMPLE_BBQ)], "n_items": len(items), "n_available": len(items), "counts": {},
                 "n_unresolved": 0, "unresolved": []},
        "seeds": list(seeds),
        "versions": {"python": "3.11"},
        "machine": {"platform": "test", "cpus": "2"},
        "git_commit": "test",
    }
    if thresholds:
        manifest["thresholds"] = thresholds
    write_json(manifest, run / "manifest.json")
    write_parquet(items_frame(items), run / "items.parquet")
    for spec in ("dense", *variants):
        rule = RULES[spec]
        frames = []
        for seed in seeds:
            perms = [answer_order(seed) for _ in items]
            if position_driven_dense:
                chosen = [_first_shown(it, seed) if rule in (_dense,) else rule(it, seed, _first_shown)
                          for it in items]
            else:
                chosen = [rule(it, seed) for it in items]
            frames.append(make_records(spec, "torch", seed, items, perms, _shown_logprobs(chosen, perms)))
        unit = unit_name(spec, "torch")
        write_parquet(pd.concat(frames, ignore_index=True), run / "records" / f"{unit}.parquet")
        info = {"variant": spec, "spec": spec, "variant_id": unit.split("__")[0], "runtime": "torch", "backend": "torch",
                "steps": [], "scoring_wall_s": 1.0, "ms_per_prompt": 100.0}
        if spec in MEASURED:
            info["measurements"] = MEASURED[spec]
        write_json(info, run / "variants" / f"{unit}.json")
        if spec in PPL:
            write_json({"ppl": PPL[spec], "n_tokens": 4096}, run / "ppl" / f"{unit}.json")
    return run



class HtmlTags(HTMLParser):
    """Every start tag with its attributes, and the page's text (for checks on rendered HTML)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)
