"""The item browser and the side-by-side comparison: item rows, one item's answers, two variants.

Everything here reads a loaded `RunView`; nothing is computed that the run's files do not hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from auditor.analysis.baselines import BASELINE_VARIANTS
from auditor.core.errors import AuditorError
from auditor.core.names import DENSE
from auditor.data.prompts import LETTERS
from auditor.view.run import KIND_BASELINE, KIND_REFERENCE, KIND_VARIANT, RunView, variant_kind

ITEM_COLUMNS = ["item_id", "category", "condition", "polarity", "question", "n_flipped", "flipped_variants"]


def item_table(view: RunView) -> pd.DataFrame:
    """One row per item: text columns and which compressed variants flipped it (unbiased -> biased, any seed)."""
    if not len(view.items):
        return pd.DataFrame(columns=ITEM_COLUMNS)
    a = view.answers
    flips = a[a["flipped"] & (a["variant"] != DENSE) & ~a["variant"].isin(list(BASELINE_VARIANTS))]
    names = flips.groupby("item_id")["variant"].agg(lambda s: ", ".join(sorted(set(s))))
    counts = flips.groupby("item_id")["variant"].nunique()
    table = view.items[["item_id", "category", "condition", "polarity", "question"]].copy()
    table["n_flipped"] = table["item_id"].map(counts).fillna(0).astype(int)
    table["flipped_variants"] = [n if isinstance(n, str) else "" for n in table["item_id"].map(names)]
    return table[ITEM_COLUMNS].reset_index(drop=True)


def filter_items(table: pd.DataFrame, *, category: str | None = None, condition: str | None = None,
                 flipped_only: bool = False) -> pd.DataFrame:
    """Rows of `item_table` matching the filters (None = any)."""
    sel = table
    if category:
        sel = sel[sel["category"] == category]
    if condition:
        sel = sel[sel["condition"] == condition]
    if flipped_only:
        sel = sel[sel["n_flipped"] > 0]
    return sel.reset_index(drop=True)


@dataclass(frozen=True)
class ItemDetail:
    """One item's text and every (variant, backend, seed) answer to it."""

    item: dict  # a row of items.parquet
    answers: pd.DataFrame  # variant, backend, seed, letter, chosen, answer, role, correct, flipped, reversed

    def option_marks(self, k: int) -> str:
        """What option k is: correct / unknown / stereotype-consistent."""
        marks = []
        if k == self.item.get("label"):
            marks.append("correct")
        if k == self.item.get("unknown_index"):
            marks.append("unknown")
        if k == self.item.get("stereotype_index"):
            marks.append("stereotype-consistent")
        return ", ".join(marks)


def item_detail(view: RunView, item_id: str) -> ItemDetail:
    """Text of `item_id` and its answers; AuditorError when the run has no such item."""
    rows = view.items[view.items["item_id"] == item_id] if len(view.items) else view.items
    if not len(rows):
        raise AuditorError(f"{view.run_dir}: no item {item_id!r} in items.parquet")
    item = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rows.iloc[0].to_dict().items()}
    a = view.answers[view.answers["item_id"] == item_id].copy()
    texts = [item.get(f"ans{k}", "") for k in range(3)]
    a["answer"] = [texts[int(k)] for k in a["chosen"]]
    a["letter"] = [LETTERS[str(p).index(str(int(k)))] if str(int(k)) in str(p) else "?"
                   for p, k in zip(a["perm"], a["chosen"])]
    order = {KIND_REFERENCE: 0, KIND_VARIANT: 1, KIND_BASELINE: 2}
    a["_k"] = a["variant"].map(lambda v: order[variant_kind(str(v))])
    a = a.sort_values(["_k", "variant", "backend", "seed"], kind="stable").drop(columns="_k")
    cols = ["variant", "backend", "seed", "letter", "chosen", "answer", "role", "correct", "flipped", "reversed"]
    return ItemDetail(item, a[cols].reset_index(drop=True))


def flip_examples(view: RunView, n: int = 5) -> list[ItemDetail]:
    """Up to n ambiguous items flipped by the most variants; one per category first, then the rest."""
    table = item_table(view)
    table = table[(table["n_flipped"] > 0)].sort_values(["n_flipped", "item_id"], ascending=[False, True])
    first = table.drop_duplicates("category")
    chosen = list(first["item_id"][:n])
    chosen += [i for i in table["item_id"] if i not in chosen][: n - len(chosen)]
    return [item_detail(view, i) for i in chosen]


@dataclass(frozen=True)
class VariantComparison:
    """Two variants side by side: headline rows, per-category rows, and the items they answer differently."""

    a: dict
    b: dict
    categories: pd.DataFrame  # category, then <column>_a / <column>_b
    differing: pd.DataFrame  # item_id, seed, category, condition, question, answer_a, role_a, answer_b, role_b


def variant_keys(view: RunView) -> list[tuple[str, str]]:
    return list(view.overview[["variant", "backend"]].itertuples(index=False, name=None))


def compare_variants(view: RunView, a: tuple[str, str], b: tuple[str, str]) -> VariantComparison:
    """Side-by-side figures of variants a and b ((variant, backend) keys) from the run's tables."""
    def row(key: tuple[str, str]) -> dict:
        sel = view.overview[(view.overview["variant"] == key[0]) & (view.overview["backend"] == key[1])]
        if not len(sel):
            raise AuditorError(f"{view.run_dir}: no variant {key[0]!r} on backend {key[1]!r}")
        return sel.iloc[0].to_dict()

    ra, rb = row(a), row(b)
    cols = ["flip_rate", "srs_var", "srs_change", "q_bh"]

    def cats(key: tuple[str, str]) -> pd.DataFrame:
        c = view.comparison
        sel = c[(c["variant"] == key[0]) & (c["backend"] == key[1])]
        return sel[["category", *cols]].set_index("category")

    cat = cats(a).merge(cats(b), how="outer", left_index=True, right_index=True, suffixes=("_a", "_b"))
    cat = cat.reset_index()
    ans = view.answers
    keep = ["seed", "item_id", "chosen", "role"]
    left = ans[(ans["variant"] == a[0]) & (ans["backend"] == a[1])][keep]
    right = ans[(ans["variant"] == b[0]) & (ans["backend"] == b[1])][keep]
    diff = left.merge(right, on=["seed", "item_id"], suffixes=("_a", "_b"))
    diff = diff[diff["chosen_a"] != diff["chosen_b"]]
    if len(view.items) and len(diff):
        texts = view.items.set_index("item_id")
        diff = diff.join(texts[["category", "condition", "question", "ans0", "ans1", "ans2"]], on="item_id")
        pick = lambda r, side: r[f"ans{int(r[f'chosen_{side}'])}"]  # noqa: E731
        diff["answer_a"] = diff.apply(lambda r: pick(r, "a"), axis=1)
        diff["answer_b"] = diff.apply(lambda r: pick(r, "b"), axis=1)
    else:
        for col in ("category", "condition", "question", "answer_a", "answer_b"):
            diff[col] = pd.Series(dtype=object)
    differing = diff[["item_id", "seed", "category", "condition", "question", "answer_a", "role_a",
                      "answer_b", "role_b"]].sort_values(["item_id", "seed"]).reset_index(drop=True)
    return VariantComparison(ra, rb, cat, differing)
