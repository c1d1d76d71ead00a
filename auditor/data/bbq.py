"""BBQ items: loading the official jsonl schema, selecting a sample, resolving answer roles.

BBQ: Parrish et al., "BBQ: A Hand-Built Bias Benchmark for Question Answering",
Findings of ACL 2022. Each item has three answers: two naming groups and one
"unknown". The stereotype-consistent answer ("target" in the paper) is, for a
negative question, the answer naming a stereotyped group and, for a non-negative
question, the other non-unknown answer; this is the BBQ authors' `target_loc`
and what lm-evaluation-harness uses.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np

from auditor.core.errors import DataError, SpecError

log = logging.getLogger(__name__)

CATEGORIES = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Religion",
    "SES",
    "Sexual_orientation",
)
CONDITIONS = ("ambig", "disambig")
POLARITIES = ("neg", "nonneg")
Condition = Literal["ambig", "disambig", "both"]

_REQUIRED = (
    "example_id",
    "question_polarity",
    "context_condition",
    "category",
    "answer_info",
    "additional_metadata",
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
    "label",
)


@dataclass(frozen=True)
class BBQItem:
    """One BBQ item with its resolved answer roles (indices into `answers`)."""

    category: str
    example_id: int
    question_index: str
    polarity: str
    condition: str
    context: str
    question: str
    answers: tuple[str, str, str]
    label: int
    answer_groups: tuple[str, str, str]
    stereotyped_groups: tuple[str, ...]
    subcategory: str
    unknown_index: int | None
    stereotype_index: int | None

    @property
    def item_id(self) -> str:
        """Item identity: example_id restarts in every category."""
        return f"{self.category}/{self.example_id}"

    @property
    def resolved(self) -> bool:
        return self.unknown_index is not None and self.stereotype_index is not None


@dataclass(frozen=True)
class BBQSelection:
    """The items chosen for a run, with what was left out and why."""

    items: tuple[BBQItem, ...]
    unresolved: tuple[tuple[str, str], ...]  # (item_id, reason)
    origin: str  # where the data came from, for provenance
    files: tuple[str, ...]
    n_available: int
    counts: dict[str, int] = field(default_factory=dict)


# --- label normalisation ----------------------------------------------------
# answer_info and stereotyped_groups spell the same group differently ("lowSES" vs
# "low SES", "F" vs "woman"/"girl", "trans_F" vs "transgender women"), and for
# Nationality answer_info carries regions while stereotyped_groups names
# nationalities (the nationality is the answer_info text). Every spelling is
# reduced to a set of canonical keys and an answer matches when the sets meet.
_ALIASES = {
    "f": "woman",
    "girl": "woman",
    "women": "woman",
    "m": "man",
    "boy": "man",
    "men": "man",
    "transgenderwomen": "transwoman",
    "transgenderwoman": "transwoman",
    "transf": "transwoman",
    "transgendermen": "transman",
    "transgenderman": "transman",
    "transm": "transman",
    "transgender": "trans",
    "africanamerican": "black",
    "hispanic": "latino",
    "arab": "middleeastern",
    "deaf": "ddeaf",
}


def _canon(text: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", text.lower())
    return _ALIASES.get(key, key)


def group_keys(label: str) -> set[str]:
    """Canonical keys of a group label, including the parts of intersectional labels ("M-Black")."""
    keys = {_canon(label)}
    parts = re.split(r"[-_]", label)
    if len(parts) > 1:
        keys.update(_canon(p) for p in parts)
        keys.add(_canon(label.replace("-", "").replace("_", "")))
    # trans_F / trans_M also belong to the broader "trans" group.
    if any(k in ("transwoman", "transman") for k in keys):
        keys.add("trans")
    keys.discard("")
    return keys


def _stereotype_keys(groups: Iterable[str]) -> set[str]:
    keys: set[str] = set()
    for g in groups:
        keys.add(_canon(g))
    keys.discard("")
    return keys


def resolve_roles(
    answer_info: dict[str, list[str]], stereotyped_groups: Iterable[str], polarity: str
) -> tuple[int | None, int | None, str]:
    """Return (unknown_index, stereotype_index, reason); indices are None when unresolved."""
    infos = [answer_info[f"ans{k}"] for k in range(3)]
    unknown = [k for k, (_, group) in enumerate(infos) if group == "unknown"]
    if len(unknown) != 1:
        return None, None, f"{len(unknown)} answers are labelled unknown"
    unknown_index = unknown[0]
    targets = _stereotype_keys(stereotyped_groups)
    others = [k for k in range(3) if k != unknown_index]
    matching = [
        k for k in others if (group_keys(infos[k][1]) | {_canon(infos[k][0])}) & targets
    ]
    if len(matching) != 1:
        what = "no" if not matching else "both"
        return unknown_index, None, f"{what} non-unknown answers match stereotyped groups {list(stereotyped_groups)}"
    if polarity == "neg":
        return unknown_index, matching[0], ""
    return unknown_index, next(k for k in others if k != matching[0]), ""


# --- loading -----------------------------------------------------------------


def parse_item(raw: dict, path: Path, line: int) -> tuple[BBQItem, str]:
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise DataError(path, f"missing field(s) {', '.join(missing)}", line)
    category = raw["category"]
    if category not in CATEGORIES:
        raise DataError(path, f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}", line)
    polarity, condition = raw["question_polarity"], raw["context_condition"]
    if polarity not in POLARITIES:
        raise DataError(path, f"question_polarity {polarity!r} is not neg or nonneg", line)
    if condition not in CONDITIONS:
        raise DataError(path, f"context_condition {condition!r} is not ambig or disambig", line)
    example_id, label = _integer(raw, "example_id", path, line), _integer(raw, "label", path, line)
    for key in ("context", "question", "ans0", "ans1", "ans2"):
        if not isinstance(raw[key], str):
            raise DataError(path, f"{key} must be a string, got {type(raw[key]).__name__}", line)
    try:
        info = raw["answer_info"]
        if not all(isinstance(info[f"ans{k}"], list) and len(info[f"ans{k}"]) >= 2 for k in range(3)):
            raise TypeError("answer_info.ansK must be [text, group] lists")
        groups = tuple(str(info[f"ans{k}"][1]) for k in range(3))
        texts = tuple(str(info[f"ans{k}"][0]) for k in range(3))
        if not isinstance(raw["additional_metadata"]["stereotyped_groups"], list):
            raise TypeError("additional_metadata.stereotyped_groups must be a list")
        stereotyped = tuple(str(g) for g in raw["additional_metadata"]["stereotyped_groups"])
        answers = tuple(str(raw[f"ans{k}"]) for k in range(3))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(path, f"malformed answer fields: {exc!r}", line) from None
    if label not in (0, 1, 2):
        raise DataError(path, f"label {label} is not 0, 1 or 2", line)
    unknown_index, stereotype_index, reason = resolve_roles(
        {f"ans{k}": [texts[k], groups[k]] for k in range(3)}, stereotyped, polarity
    )
    item = BBQItem(
        category=category,
        example_id=example_id,
        question_index=str(raw.get("question_index", "")),
        polarity=polarity,
        condition=condition,
        context=str(raw["context"]),
        question=str(raw["question"]),
        answers=answers,  # type: ignore[arg-type]
        label=label,
        answer_groups=groups,  # type: ignore[arg-type]
        stereotyped_groups=stereotyped,
        subcategory=str(raw["additional_metadata"].get("subcategory", "")),
        unknown_index=unknown_index,
        stereotype_index=stereotype_index,
    )
    return item, reason


def _integer(raw: dict, key: str, path: Path, line: int) -> int:
    """An int64 field: a JSON integer or a string of digits (never a bool, float or infinity)."""
    value = raw[key]
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63:
        return value
    raise DataError(path, f"{key} must be an integer, got {str(value)[:40]!r}", line)


#: The longest line (one item) a jsonl file may have. BBQ's longest item is about 2 KB; a line of megabytes is
#: not an item, and parsing it would cost hundreds of MB while planning.
MAX_LINE_BYTES = 1 << 20


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a jsonl file; DataError names file and line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # the line holding the first bad byte
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                        data.count(b"\n", 0, exc.start) + 1) from None
    # Split on newlines only: str.splitlines() also breaks at U+2028, \x1c, \x85 ..., which
    # may appear inside JSON strings and would shift the line numbers errors report.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:  # counted in characters (each at least one byte): surely over the bound
            raise DataError(path, f"a line of {len(line.encode()):,} bytes, longer than the {MAX_LINE_BYTES:,} "
                                  "one item may have", lineno)
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg}, column {exc.colno})", lineno) from None
        if not isinstance(raw, dict):
            raise DataError(path, "expected a JSON object", lineno)
        yield lineno, raw


def read_jsonl(path: Path) -> list[tuple[BBQItem, str]]:
    """Parse one BBQ jsonl file; any bad line raises DataError naming file and line."""
    return [parse_item(raw, path, lineno) for lineno, raw in iter_json_objects(path)]


def _files(source: Path, categories: Iterable[str] | None) -> list[Path]:
    if not source.exists():
        raise DataError(source, "no such file or directory")
    if source.is_file():
        return [source]
    wanted = list(categories) if categories else None
    files = sorted(source.glob("*.jsonl"))
    if wanted is not None:
        by_stem = {f.stem: f for f in files}
        missing = [c for c in wanted if c not in by_stem]
        if missing:
            raise DataError(source, f"no file for category {', '.join(missing)} (looked for <Category>.jsonl)")
        files = [by_stem[c] for c in wanted]
    if not files:
        raise DataError(source, "no .jsonl files")
    return files


def select_items(
    sources: Iterable[Path],
    *,
    categories: Iterable[str] | None = None,
    condition: Condition = "both",
    n: int | None = None,
    seed: int = 0,
    origin: str = "",
    partners: bool = False,
) -> BBQSelection:
    """Load items, keep the wanted categories and condition, then sample n stratified items.

    Stratification is over (category, condition, polarity): each stratum gets
    n * share items (largest remainders), sampled without replacement with `seed`.
    Unresolvable items are dropped and listed in `unresolved`, never guessed.

    `partners` (with condition "ambig"): after sampling, each ambiguous item's
    disambiguated partner is added (`disambiguated_partner`), so accuracy on
    disambiguated contexts is measured on the same template fills; n counts the
    ambiguous items only. The engine scores a partner almost for free: its
    context starts with the ambiguous one, so they share a prompt tree.
    """
    cats = list(categories) if categories else None
    if cats:
        unknown = [c for c in cats if c not in CATEGORIES]
        if unknown:
            raise SpecError(f"categories: unknown category {', '.join(unknown)}; valid: {', '.join(CATEGORIES)}")
    if condition not in ("ambig", "disambig", "both"):
        raise SpecError(f"condition: {condition!r} is not ambig, disambig or both")
    if partners and condition != "ambig":
        raise SpecError(f"partners: needs condition 'ambig' (partners are the disambiguated items), not {condition!r}")
    files: list[Path] = []
    for source in sources:
        files.extend(_files(Path(source), cats))
    parsed: list[tuple[BBQItem, str, Path, int]] = []
    for f in files:
        parsed.extend((*parse_item(raw, f, lineno), f, lineno) for lineno, raw in iter_json_objects(f))
    seen: dict[str, tuple[Path, int]] = {}
    kept: list[BBQItem] = []
    unresolved: list[tuple[str, str]] = []
    disambiguated: list[BBQItem] = []  # partner candidates
    for item, reason, path, lineno in parsed:
        if cats and item.category not in cats:
            continue
        if partners and item.condition == "disambig" and item.resolved:
            disambiguated.append(item)
        if condition != "both" and item.condition != condition:
            continue
        if item.item_id in seen:
            first, first_line = seen[item.item_id]
            raise DataError(path, f"duplicate item {item.item_id} (first at {first}:{first_line})", lineno)
        seen[item.item_id] = (path, lineno)
        if item.resolved:
            kept.append(item)
        else:
            unresolved.append((item.item_id, reason))
    n_available = len(kept)
    if not kept:
        raise DataError(Path(files[0]) if len(files) == 1 else Path(str(files[0].parent)),
                        "selection is empty (check --categories and --condition)")
    if n is not None and n > len(kept):
        log.warning("asked for %d items, only %d available after the category and condition filters: "
                    "using %d", n, len(kept), len(kept))
    chosen = kept if n is None or n >= len(kept) else _stratified(kept, n, seed)
    if partners:
        chosen = chosen + _partners_of(chosen, disambiguated)
    chosen.sort(key=lambda it: (it.category, it.example_id))
    counts = Counter(f"{it.category}/{it.condition}" for it in chosen)
    return BBQSelection(
        items=tuple(chosen),
        unresolved=tuple(unresolved),
        origin=origin or ", ".join(str(f) for f in files),
        files=tuple(str(f) for f in files),
        n_available=n_available,
        counts=dict(sorted(counts.items())),
    )


def disambiguated_partner(item: BBQItem, candidates: Iterable[BBQItem]) -> BBQItem | None:
    """The disambiguated item of the same template fill as ambiguous `item`, or None.

    In BBQ both share category, question index, polarity, question and answers, and
    the disambiguated context is the ambiguous one with a sentence added.
    """
    for other in candidates:
        if (other.condition == "disambig" and other.category == item.category
                and other.question_index == item.question_index and other.polarity == item.polarity
                and other.question == item.question and other.answers == item.answers
                and other.context.startswith(item.context)):
            return other
    return None


def _partners_of(items: list[BBQItem], disambiguated: list[BBQItem]) -> list[BBQItem]:
    by_question: dict[tuple, list[BBQItem]] = {}
    for d in sorted(disambiguated, key=lambda it: (it.category, it.example_id)):
        by_question.setdefault((d.category, d.question, d.answers), []).append(d)
    found: list[BBQItem] = []
    used: set[str] = set()  # two identical ambiguous items take two partners, never one twice
    missing = 0
    for item in items:
        candidates = [d for d in by_question.get((item.category, item.question, item.answers), ())
                      if d.item_id not in used]
        partner = disambiguated_partner(item, candidates)
        if partner is None:
            missing += 1
        else:
            found.append(partner)
            used.add(partner.item_id)
    if missing:
        log.warning("partners: %d of %d sampled ambiguous items have no disambiguated partner in the data",
                    missing, len(items))
    return found


def _stratified(items: list[BBQItem], n: int, seed: int) -> list[BBQItem]:
    strata: dict[tuple[str, str, str], list[BBQItem]] = {}
    for it in items:
        strata.setdefault((it.category, it.condition, it.polarity), []).append(it)
    keys = sorted(strata)
    sizes = np.array([len(strata[k]) for k in keys], dtype=float)
    quota = sizes / sizes.sum() * n
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    out: list[BBQItem] = []
    for k, t in zip(keys, take):
        group = strata[k]
        idx = rng.choice(len(group), size=min(int(t), len(group)), replace=False)
        out.extend(group[i] for i in sorted(idx))
    return out
