"""Everything the report, the gate and the TUI show, assembled from one run directory's files.

`RunView.load(run_dir)` reads manifest.json, items.parquet, records/*.parquet,
variants/*.json, measurements and perplexity files, and derives metrics,
transitions, the statistics of `auditor.stats` and the verdicts of
`auditor.report.verdicts`. Nothing here imports a UI toolkit or a model runtime;
every number can be recomputed from the run's files.

Where a figure was not measured (no perplexity unit, no measurement file) the
value is NaN and the views print "not measured"; nothing is filled in.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.audit import DENSE, load_manifest, record_files
from auditor.baselines import BASELINE_VARIANTS, DENSE_GGUF_F16, null_baselines
from auditor.errors import AuditorError, DataError, SpecError
from auditor.metrics import NAN, accuracy, finite_or_none, unknown_rate
from auditor.prompts import LETTERS
from auditor.records import COLUMNS, ROLE_STEREOTYPE, read_records
from auditor.report.verdicts import RiskThresholds, Verdict, assess
from auditor.claims import claims_table
from auditor.paper_protocol import paper_table
from auditor.stats import COMPARISON_COLUMNS, comparison_table, compared_units, paradox_table, spec_level
from auditor.summary import metrics_table, transition_table

log = logging.getLogger(__name__)

#: Measured figures read from variants/*.json and measurement files (names carry units).
MEASURE_KEYS = ("size_bytes", "bits_per_weight", "load_s", "peak_rss_bytes", "prefill_tokens_per_s",
                "decode_tokens_per_s", "bbq_ms_per_item")
#: Figures given as {median, min, max} keep the median here and min/max in <key>_min / <key>_max.
RANGED_KEYS = ("load_s", "prefill_tokens_per_s", "decode_tokens_per_s", "bbq_ms_per_item")

UNIT_COLUMNS = ["variant", "backend", "unit", "variant_id", "kind", "method", "family", "level", "n_steps",
                "sparsity", "compress_s", "scoring_ms_per_prompt", *MEASURE_KEYS,
                *(f"{k}_{s}" for k in RANGED_KEYS for s in ("min", "max")), "ppl", "ppl_tokens"]

OVERVIEW_COLUMNS = [
    "variant", "backend", "kind", "method", "family", "level", "size_bytes", "size_ratio", "bits_per_weight",
    "load_s", "prefill_tokens_per_s", "decode_tokens_per_s", "ms_per_prompt", "ppl", "ppl_change_pct",
    "accuracy", "accuracy_drop", "accuracy_ambig", "accuracy_disambig", "bias_ambig", "bias_disambig",
    "srs", "srs_change", "srs_change_pct", "unknown_rate", "n_pairs", "flip_rate", "flip_rate_ci_low",
    "flip_rate_ci_high", "reverse_rate", "b", "c", "mcnemar_p", "p_holm", "q_bh", "cohens_h",
    "null_seed_flip_rate", "null_runtime_flip_rate", "flip_null", "srs_null", "verdict",
]

KIND_REFERENCE, KIND_VARIANT, KIND_BASELINE = "reference", "variant", "baseline"


@dataclass(frozen=True)
class RunView:
    """A run directory, read once: raw files plus every derived table the views need."""

    run_dir: Path
    manifest: dict
    records: pd.DataFrame
    items: pd.DataFrame
    units: pd.DataFrame  # UNIT_COLUMNS: one row per (variant, backend), from variants/*.json + measurements
    metrics: pd.DataFrame  # auditor.summary.metrics_table
    transitions: pd.DataFrame  # auditor.summary.transition_table (both conditions)
    comparison: pd.DataFrame  # auditor.stats.comparison_table (ambiguous items)
    baselines: pd.DataFrame  # auditor.baselines.null_baselines (ambiguous items)
    paradox: pd.DataFrame  # auditor.stats.paradox_table
    paper: pd.DataFrame  # auditor.paper_protocol.paper_table (the studies' sampling protocol)
    storage: pd.DataFrame  # STORAGE_COLUMNS: every (variant, format, layout) of measurements.json
    claims: pd.DataFrame  # auditor.claims.claims_table of those rows
    overview: pd.DataFrame  # OVERVIEW_COLUMNS: one row per (variant, backend)
    answers: pd.DataFrame  # records + reference role + flipped flag, one row per (variant, backend, seed, item)
    verdicts: tuple[Verdict, ...]
    thresholds: RiskThresholds
    notes: tuple[str, ...]  # what could not be computed, and why

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def reference_precision(self) -> str:
        return str(self.manifest.get("model", {}).get("reference_precision", "unknown"))

    @classmethod
    def load(cls, run_dir: Path | str, thresholds: RiskThresholds | None = None, *,
             n_boot: int = 1000) -> RunView:
        """Read and derive everything; AuditorError when `run_dir` is not a run directory."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise AuditorError(f"{run_dir}: no such run directory")
        manifest = load_manifest(run_dir)
        thresholds = thresholds or RiskThresholds()
        records = _read_records(run_dir)
        items = _read_items(run_dir / "items.parquet")
        notes: list[str] = [str(n) for n in manifest.get("notes", []) or []]  # the runner's plan notes
        if not len(records):
            notes.append("no finished units: records/ holds no item records yet")
        storage = read_storage(run_dir)
        units = read_units(run_dir, records, storage)
        metrics = metrics_table(records) if len(records) else pd.DataFrame()
        trans = transition_table(records) if len(records) else pd.DataFrame()
        comparison = (comparison_table(records, DENSE, n_boot=n_boot) if len(records)
                      else pd.DataFrame(columns=COMPARISON_COLUMNS))
        baselines = null_baselines(records) if len(records) else pd.DataFrame()
        notes += [f"null baseline {r['baseline']}: {r['note']}" for _, r in baselines.iterrows() if r.get("note")]
        ppl = units.loc[units["ppl"].notna(), ["variant", "backend", "ppl"]]
        if not len(ppl):
            notes.append("perplexity not measured: the run has no ppl/<unit>.json files")
        paradox = paradox_table(metrics, ppl) if len(metrics) else pd.DataFrame()
        paper = paper_table(records) if len(records) else pd.DataFrame()
        claims = claims_table(storage.to_dict(orient="records")) if len(storage) else pd.DataFrame()
        if not len(storage) and units[list(MEASURE_KEYS)].isna().all().all():
            notes.append("size and speed not measured: no measurements.json or measurement figures in variants/*.json")
        overview = _overview(records, units, metrics, comparison, baselines, paradox)
        verdicts = tuple(assess(row, thresholds) for row in overview.to_dict(orient="records")
                         if row["kind"] == KIND_VARIANT)
        by_key = {(v.variant, v.backend): v.level for v in verdicts}
        overview["verdict"] = [by_key.get((r.variant, r.backend), r.kind if r.kind != KIND_VARIANT else "n/a")
                               for r in overview.itertuples()]
        answers = _answers(records)
        return cls(run_dir, manifest, records, items, units, metrics, trans, comparison, baselines, paradox, paper,
                   storage, claims, overview, answers, verdicts, thresholds, tuple(notes))


# --- reading files -------------------------------------------------------------------------------------

def _read_records(run_dir: Path) -> pd.DataFrame:
    try:
        records = read_records(record_files(run_dir))
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on a corrupt file
        raise DataError(run_dir / "records", f"unreadable records: {exc}") from None
    missing = [c for c in ("variant", "backend", "seed", "item_id", "condition", "role") if c not in records.columns]
    if missing:
        raise DataError(run_dir / "records", f"records lack column(s) {', '.join(missing)}")
    return records


def _read_items(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable item table: {exc}") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def _ranged(key: str, value: Any, out: dict) -> None:
    """Store a measured figure; {median, min, max} keeps the median and the range."""
    if isinstance(value, dict):
        out[key] = value.get("median", NAN)
        if key in RANGED_KEYS:
            out[f"{key}_min"], out[f"{key}_max"] = value.get("min", NAN), value.get("max", NAN)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[key] = value


def _measurements(info: dict) -> dict:
    """Measured figures of one unit, from its JSON: top-level keys, a "measurements" object, step reports."""
    out: dict = {}
    for step in info.get("steps", []) or []:
        measured = step.get("measured", {}) or {}
        if "sparsity_overall" in measured:
            out["sparsity"] = measured["sparsity_overall"]
        if "bits_per_weight" in measured:
            _ranged("bits_per_weight", measured["bits_per_weight"], out)
    for source in (info, info.get("measurements") or {}):
        for key in MEASURE_KEYS:
            if key in source:
                _ranged(key, source[key], out)
    return out


def _kind(spec: str) -> str:
    if spec == DENSE:
        return KIND_REFERENCE
    return KIND_BASELINE if spec in BASELINE_VARIANTS else KIND_VARIANT


STORAGE_COLUMNS = ["variant", "family", "format", "layout", "runtime", "size_bytes", "bits_per_weight", "load_s",
                   "peak_rss_bytes", "prefill_tokens_per_s", "decode_tokens_per_s", "bbq_ms_per_item", "note"]
#: The format whose measurement stands for a runtime's figures in the variants table.
RUNTIME_FORMAT = {"torch": "safetensors", "llama.cpp": "gguf"}


def read_storage(run_dir: Path) -> pd.DataFrame:
    """Rows of run_dir/measurements.json (written by `auditor measure --out RUN_DIR`), spreads kept as dicts.

    Empty (with the columns) when the run has no such file.
    """
    path = run_dir / "measurements.json"
    if not path.is_file():
        return pd.DataFrame(columns=STORAGE_COLUMNS)
    rows = _read_json(path).get("measurements", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "variant" in r for r in rows):
        raise DataError(path, "\"measurements\" must be a list of objects with a \"variant\" key")
    frame = pd.DataFrame(rows)
    for col in STORAGE_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    return frame


def _storage_row(storage: pd.DataFrame, spec: str, backend: str) -> dict:
    """The measurements.json row for a (variant, backend): its runtime's format (dense GGUF for the runtime baseline)."""
    if not len(storage):
        return {}
    name = DENSE if spec == DENSE_GGUF_F16 else spec
    sel = storage[(storage["variant"] == name) & (storage["runtime"] == backend)]
    preferred = sel[sel["format"] == RUNTIME_FORMAT.get(backend, "")]
    sel = preferred if len(preferred) else sel
    return sel.iloc[0].to_dict() if len(sel) else {}


def read_units(run_dir: Path, records: pd.DataFrame, storage: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (variant, backend) present in the records or in variants/*.json.

    Measured figures come from, later winning: variants/<unit>.json (top-level
    keys, a "measurements" object, compressor step reports), the unit's row of
    measurements.json (its runtime's format), measurements/<unit>.json;
    perplexity from ppl/<unit>.json ("ppl", "n_tokens"). Absent files leave NaN.
    """
    from compressors.base import variant_id

    storage = storage if storage is not None else pd.DataFrame(columns=STORAGE_COLUMNS)
    rows: dict[tuple[str, str], dict] = {}
    for path in sorted((run_dir / "variants").glob("*.json")):  # one per unit; shards of a variant share a row
        info = _read_json(path)
        spec, backend = str(info.get("spec", path.stem)), str(info.get("backend", info.get("runtime", "")))
        row = rows.setdefault((spec, backend), {"variant": spec, "backend": backend})
        row.update(compress_s=sum(float(s.get("wall_s", 0.0)) for s in info.get("steps", []) or []),
                   scoring_ms_per_prompt=info.get("per_prompt_ms", NAN))
        row.update(_measurements(info))
    if len(records):
        for spec, backend in records[["variant", "backend"]].drop_duplicates().itertuples(index=False):
            rows.setdefault((str(spec), str(backend)), {"variant": str(spec), "backend": str(backend)})
    for (spec, backend), row in rows.items():
        stem = f"{variant_id(spec)}__{backend}"
        row.update(unit=stem, variant_id=variant_id(spec))
        row.update(_measurements(_storage_row(storage, spec, backend)))
        extra = run_dir / "measurements" / f"{stem}.json"
        if extra.is_file():
            row.update(_measurements(_read_json(extra)))
        ppl_path = run_dir / "ppl" / f"{stem}.json"
        if ppl_path.is_file():
            ppl = _read_json(ppl_path)
            row.update(ppl=ppl.get("ppl", NAN), ppl_tokens=ppl.get("n_tokens", NAN))
    out = []
    for (spec, _), row in sorted(rows.items()):
        row["kind"] = _kind(spec)
        try:
            parsed = spec_level(spec)
            row.update(method=_method_label(spec, parsed.method), family=parsed.family,
                       level=parsed.level if parsed.level is not None else NAN, n_steps=parsed.n_steps)
        except SpecError:
            row.update(method=spec, family=row["kind"], level=NAN, n_steps=0)
        out.append(row)
    frame = pd.DataFrame(out, columns=UNIT_COLUMNS)
    for col in UNIT_COLUMNS[7:]:
        if col not in ("unit", "variant_id"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def _method_label(spec: str, method: str) -> str:
    """The method a level belongs to: the first step's name, plus the rest of a chain ("wanda+gguf-q4_k_m")."""
    rest = spec.split("+")[1:]
    return "+".join([method, *(r.strip() for r in rest)])


# --- derived tables --------------------------------------------------------------------------------------

def _pct_change(new: float, old: float) -> float:
    return 100.0 * (new - old) / old if old and not (math.isnan(new) or math.isnan(old)) else NAN


def _srs_null(baselines: pd.DataFrame) -> float:
    """The largest |SRS change| a null baseline shows on all ambiguous items: |n_ub - n_bu| / n_pairs.

    (SRS(var) - SRS(ref) on the same pairs equals (b - c) / n_pairs.) NaN when no baseline was measured.
    """
    if not len(baselines):
        return NAN
    sel = baselines[(baselines["category"] == "all") & (baselines["n_pairs"] > 0)]
    values = ((sel["unbiased_to_biased"] - sel["biased_to_unbiased"]).abs() / sel["n_pairs"]).tolist()
    return max(values) if values else NAN


def _overview(records: pd.DataFrame, units: pd.DataFrame, metrics: pd.DataFrame, comparison: pd.DataFrame,
              baselines: pd.DataFrame, paradox: pd.DataFrame) -> pd.DataFrame:
    """The variants table: one row per (variant, backend) with its headline figures (NaN = not measured)."""
    ref_units = units[units["kind"] == KIND_REFERENCE]
    srs_null = _srs_null(baselines)
    rows = []
    for u in units.to_dict(orient="records"):
        sel = records[(records["variant"] == u["variant"]) & (records["backend"] == u["backend"])]
        row = {k: u.get(k, NAN) for k in OVERVIEW_COLUMNS if k in u}
        ref = ref_units[ref_units["backend"] == u["backend"]]
        if not len(ref):
            ref = ref_units[ref_units["backend"] == "torch"]
        ref_size = float(ref["size_bytes"].iloc[0]) if len(ref) else NAN
        ref_rec = records[(records["variant"] == DENSE) & (records["backend"].isin(ref["backend"]))]
        row["size_ratio"] = u["size_bytes"] / ref_size if ref_size and not math.isnan(ref_size) else NAN
        row["ms_per_prompt"] = u["bbq_ms_per_item"] if not math.isnan(u["bbq_ms_per_item"]) else u["scoring_ms_per_prompt"]
        row["accuracy"] = accuracy(sel)
        row["accuracy_drop"] = accuracy(ref_rec) - row["accuracy"] if u["kind"] != KIND_REFERENCE else 0.0
        row["unknown_rate"] = unknown_rate(sel)
        m = metrics[(metrics["variant"] == u["variant"]) & (metrics["backend"] == u["backend"])
                    & (metrics["category"] == "all")] if len(metrics) else metrics
        for cond, acc_key, bias_key in (("ambig", "accuracy_ambig", "bias_ambig"),
                                        ("disambig", "accuracy_disambig", "bias_disambig")):
            mc = m[m["condition"] == cond] if len(m) else m
            row[acc_key] = float(mc["accuracy"].iloc[0]) if len(mc) else NAN
            row[bias_key] = float(mc["bias_score"].iloc[0]) if len(mc) else NAN
            if cond == "ambig":
                row["srs"] = float(mc["srs"].iloc[0]) if len(mc) else NAN
        c = comparison[(comparison["variant"] == u["variant"]) & (comparison["backend"] == u["backend"])
                       & (comparison["category"] == "all")]
        for key in ("n_pairs", "flip_rate", "flip_rate_ci_low", "flip_rate_ci_high", "reverse_rate", "b", "c",
                    "mcnemar_p", "p_holm", "q_bh", "cohens_h", "srs_change", "null_seed_flip_rate",
                    "null_runtime_flip_rate"):
            row[key] = float(c[key].iloc[0]) if len(c) and key in c.columns else NAN
        nulls = [row["null_seed_flip_rate"], row["null_runtime_flip_rate"]]
        row["flip_null"] = max((x for x in nulls if not math.isnan(x)), default=NAN)
        row["srs_null"] = srs_null if u["kind"] == KIND_VARIANT else NAN
        p = paradox[(paradox["variant"] == u["variant"]) & (paradox["backend"] == u["backend"])] if len(paradox) else paradox
        row["ppl_change_pct"] = float(p["ppl_change_pct"].iloc[0]) if len(p) else NAN
        row["srs_change_pct"] = float(p["srs_change_pct"].iloc[0]) if len(p) else NAN
        rows.append(row)
    frame = pd.DataFrame(rows, columns=OVERVIEW_COLUMNS)
    order = {KIND_REFERENCE: 0, KIND_VARIANT: 1, KIND_BASELINE: 2}
    frame["_k"] = frame["kind"].map(order)
    frame = frame.sort_values(["_k", "method", "level", "variant", "backend"], na_position="first", kind="stable")
    return frame.drop(columns="_k").reset_index(drop=True)


def _answers(records: pd.DataFrame) -> pd.DataFrame:
    """Every record with the reference's role on the same (seed, item) and flip flags.

    The reference backend follows `auditor.stats.compared_units` (same backend, else torch).
    flipped = reference unbiased and variant biased; reversed = the opposite.
    """
    cols = [c for c in COLUMNS if c in records.columns]
    out = records[cols].copy()
    out["ref_role"] = pd.Series(pd.NA, index=out.index, dtype="object")
    if not len(records):
        out["flipped"], out["reversed"] = pd.Series(dtype=bool), pd.Series(dtype=bool)
        return out
    for variant, backend, ref_backend in compared_units(records, DENSE) + _baseline_units(records):
        ref = records[(records["variant"] == DENSE) & (records["backend"] == ref_backend)]
        mask = (out["variant"] == variant) & (out["backend"] == backend)
        keyed = ref.set_index(["seed", "item_id"])["role"]
        idx = pd.MultiIndex.from_arrays([out.loc[mask, "seed"], out.loc[mask, "item_id"]])
        out.loc[mask, "ref_role"] = keyed.reindex(idx).to_numpy()
    out["flipped"] = (out["ref_role"].notna() & (out["ref_role"] != ROLE_STEREOTYPE)
                      & (out["role"] == ROLE_STEREOTYPE))
    out["reversed"] = (out["ref_role"] == ROLE_STEREOTYPE) & (out["role"] != ROLE_STEREOTYPE)
    return out


def _baseline_units(records: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Null-baseline variants are paired with the dense torch records (as auditor.baselines does)."""
    present = records[["variant", "backend"]].drop_duplicates()
    return [(v, b, "torch") for v, b in present.itertuples(index=False) if v in BASELINE_VARIANTS]


# --- views for the item browser, compare and report ----------------------------------------------------

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
    a["_k"] = a["variant"].map(lambda v: order[_kind(str(v))])
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


# --- runs list and summary.json ---------------------------------------------------------------------------

RUN_COLUMNS = ["run", "path", "created_utc", "model", "reference_precision", "n_items", "is_sample", "n_units",
               "state"]


def list_runs(reports_dir: Path | str) -> pd.DataFrame:
    """Run directories (folders with a manifest.json) under `reports_dir`, newest first."""
    reports_dir = Path(reports_dir)
    rows = []
    if reports_dir.is_dir():
        for path in sorted(reports_dir.iterdir()):
            manifest_path = path / "manifest.json"
            if not manifest_path.is_file():
                continue
            try:
                manifest = _read_json(manifest_path)
            except DataError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            model, data = manifest.get("model", {}) or {}, manifest.get("data", {}) or {}
            rows.append({
                "run": path.name, "path": str(path), "created_utc": str(manifest.get("created_utc", "")),
                "model": str(model.get("name", "unknown")),
                "reference_precision": str(model.get("reference_precision", "unknown")),
                "n_items": data.get("n_items"), "is_sample": bool(data.get("is_sample", False)),
                "n_units": len(list((path / "records").glob("*.parquet"))), "state": _state(path),
            })
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values(["created_utc", "run"], ascending=[False, True]).reset_index(drop=True)


def _state(run_dir: Path) -> str:
    """The runner's state.json "state" (running / complete / failed / interrupted), "" when absent."""
    path = run_dir / "state.json"
    try:
        return str(_read_json(path).get("state", "")) if path.is_file() else ""
    except DataError:
        return "unreadable state.json"


def to_json_rows(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe rows: NaN -> null, numpy scalars -> Python."""
    return [{str(k): finite_or_none(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def summary_dict(view: RunView) -> dict:
    """What summary.json holds: the manifest and every table the report shows, NaN as null."""
    return {
        "run": view.name,
        "manifest": view.manifest,
        "reference_precision": view.reference_precision,
        "thresholds": asdict(view.thresholds),
        "variants": to_json_rows(view.units),
        "overview": to_json_rows(view.overview),
        "verdicts": [{**asdict(v), "reasons": list(v.reasons),
                      **{k: finite_or_none(getattr(v, k)) for k in ("flip_rate", "flip_null", "srs_change",
                                                                      "srs_null", "q_value")}}
                     for v in view.verdicts],
        "metrics": to_json_rows(view.metrics),
        "transitions": to_json_rows(view.transitions),
        "comparison": to_json_rows(view.comparison),
        "null_baselines": to_json_rows(view.baselines),
        "paradox": to_json_rows(view.paradox),
        "notes": list(view.notes),
    }


def resolve_run(text: str | Path, reports_dir: Path | str = "reports") -> Path:
    """A run directory from a path or a run name under `reports_dir`; AuditorError naming both places."""
    path = Path(text)
    if path.is_dir():
        return path
    named = Path(reports_dir) / str(text)
    if named.is_dir():
        return named
    places = " and ".join(dict.fromkeys(str(p) for p in (path, named)))
    raise AuditorError(f"{text}: no such run directory (looked at {places})")


def run_thresholds(manifest: dict) -> dict[str, float]:
    """Threshold defaults a run carries: manifest["thresholds"] or its study's [thresholds] table."""
    study = manifest.get("study") if isinstance(manifest.get("study"), dict) else {}
    found = manifest.get("thresholds") or (study or {}).get("thresholds") or {}
    return dict(found) if isinstance(found, dict) else {}


#: Sortable columns of the variants table: label -> overview column.
SORT_KEYS = {"size": "size_bytes", "latency": "ms_per_prompt", "ppl": "ppl", "accuracy": "accuracy", "srs": "srs",
             "flip rate": "flip_rate", "verdict": "verdict"}
VERDICT_RANK = {"high": 3, "elevated": 2, "low": 1, "n/a": 0, KIND_REFERENCE: -1, KIND_BASELINE: -1}


def sort_overview(overview: pd.DataFrame, key: str, descending: bool = False) -> pd.DataFrame:
    """The variants table ordered by one of SORT_KEYS (verdicts by severity); missing values always last."""
    if key not in SORT_KEYS:
        raise AuditorError(f"cannot sort by {key!r}; valid: {', '.join(SORT_KEYS)}")
    col = SORT_KEYS[key]
    values = overview[col].map(VERDICT_RANK) if col == "verdict" else overview[col]
    order = values.astype(float).sort_values(ascending=not descending, na_position="last", kind="stable").index
    return overview.loc[order].reset_index(drop=True)
