"""Everything the report, the gate and the TUI show, assembled from one run directory's files.

`RunView.load(run_dir)` reads manifest.json, items.parquet, records/*.parquet,
variants/*.json, measurements and perplexity files, and derives metrics,
transitions, the statistics of `auditor.analysis.stats` and the verdicts of
`auditor.analysis.verdicts`. Nothing here imports a UI toolkit or a model runtime;
every number can be recomputed from the run's files.

Where a figure was not measured (no perplexity unit, no measurement file) the
value is NaN and the views print "not measured"; nothing is filled in.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.analysis.baselines import BASELINE_VARIANTS, DENSE_GGUF_F16, null_baselines
from auditor.analysis.claims import claims_table, sparse_breakeven, sparse_kernel_table
from auditor.analysis.comparison import ACCURACY_COLUMNS, COMPARISON_COLUMNS, accuracy_intervals, comparison_table
from auditor.analysis.dose_response import spec_level
from auditor.analysis.generative import GENERATION_COLUMNS, generation_table
from auditor.analysis.mask_seeds import MASK_SPREAD_COLUMNS, mask_spread_table
from auditor.analysis.metrics import NAN, accuracy, unknown_rate
from auditor.analysis.pairing import answers_with_reference
from auditor.analysis.paper_protocol import paper_table
from auditor.analysis.paradox import paradox_table
from auditor.analysis.fidelity import FIDELITY_COLUMNS, fidelity_table
from auditor.analysis.grading import positions_of, validity_of
from auditor.analysis.position import POSITION_COLUMNS
from auditor.analysis.protocols import PROTOCOL_COLUMNS, protocol_table, select_protocol, with_derived_protocols
from auditor.analysis.summary import metrics_table, transition_table
from auditor.analysis.validity import ReferenceValidity
from auditor.analysis.verdicts import RiskThresholds, Verdict, assess, thresholds_from_mapping
from auditor.core.errors import AuditorError, DataError, SpecError
from auditor.core.names import DENSE, RUNTIME_FORMAT, TORCH, unit_name, variant_id
from auditor.data.records import STRICT, exact_ties, read_records
from auditor.data.rundir import (
    PPL,
    SCORE,
    SPARSE_KERNELS_FILE,
    UNIT_FAILED,
    RunStatus,
    load_manifest,
    manifest_thresholds,
    record_files,
    run_status,
)

log = logging.getLogger(__name__)

#: Measured figures read from variants/*.json and measurement files (names carry units).
MEASURE_KEYS = ("size_bytes", "bits_per_weight", "load_s", "peak_rss_bytes", "prefill_tokens_per_s",
                "decode_tokens_per_s", "bbq_ms_per_prompt")
#: Figures given as {median, min, max} keep the median here and min/max in <key>_min / <key>_max.
RANGED_KEYS = ("load_s", "prefill_tokens_per_s", "decode_tokens_per_s", "bbq_ms_per_prompt")

UNIT_COLUMNS = ["variant", "backend", "unit", "variant_id", "kind", "method", "family", "level", "n_steps",
                "sparsity", "compress_s", "scoring_ms_per_prompt", *MEASURE_KEYS,
                *(f"{k}_{s}" for k in RANGED_KEYS for s in ("min", "max")), "ppl", "ppl_tokens", "kld_mean", "kld_se",
                "kld_same_top", "kld_positions"]

#: Comparison-table columns the overview carries besides n_items, n_pairs and srs_change.
_COMPARED = tuple(c for c in COMPARISON_COLUMNS if c not in (
    "variant", "backend", "reference_backend", "category", "n_items", "n_templates", "n_pairs", "srs_change",
    "verdict_family"))

OVERVIEW_COLUMNS = [
    "variant", "backend", "kind", "method", "family", "level", "size_bytes", "size_ratio", "bits_per_weight",
    "load_s", "prefill_tokens_per_s", "decode_tokens_per_s", "ms_per_prompt", "ppl", "ppl_change_pct",
    "accuracy", "accuracy_drop", "accuracy_ambig", "accuracy_disambig", "bias_ambig", "bias_disambig",
    "accuracy_ci_low", "accuracy_ci_high", "accuracy_drop_ci_low", "accuracy_drop_ci_high",
    "srs", "srs_change", "srs_change_pct", "unknown_rate", "n_items", "n_pairs", *_COMPARED, "n_ties",
    "top_letter", "top_letter_share", "letter_mass", "same_top_share", "same_top_ci_low", "same_top_ci_high",
    "kl_mean", "kld_mean", "kld_se", "kld_same_top", "kld_positions", "verdict", "abstention",
]
#: Comparison-table columns copied into the overview ("all" categories row).
_COMPARISON_KEYS = ("n_items", "n_pairs", "srs_change", *_COMPARED)

KIND_REFERENCE, KIND_VARIANT, KIND_BASELINE = "reference", "variant", "baseline"


def run_thresholds(manifest: dict) -> RiskThresholds:
    """The risk thresholds a run was made with (its study's [thresholds]), defaults for the rest.

    The end-of-run report, `auditor report`, the gate and the TUI all grade a run with these.
    """
    risk, _ = thresholds_from_mapping(manifest_thresholds(manifest), "manifest.json thresholds")
    return RiskThresholds(**risk)


def run_protocols(manifest: dict) -> tuple[str, ...]:
    """The scoring protocols a run lists (its study's `protocols`), "strict" for runs made before them."""
    listed = manifest.get("protocols") or (manifest.get("study") or {}).get("definition", {}).get("protocols")
    return tuple(listed) if listed else (STRICT,)


@dataclass(frozen=True)
class RunView:
    """A run directory, read once: raw files plus every derived table the views need."""

    run_dir: Path
    manifest: dict
    records: pd.DataFrame
    items: pd.DataFrame
    units: pd.DataFrame  # UNIT_COLUMNS: one row per (variant, backend), from variants/*.json + measurements
    metrics: pd.DataFrame  # auditor.analysis.summary.metrics_table
    transitions: pd.DataFrame  # auditor.analysis.summary.transition_table (ambiguous items)
    comparison: pd.DataFrame  # auditor.analysis.stats.comparison_table (ambiguous items)
    baselines: pd.DataFrame  # auditor.analysis.baselines.null_baselines (ambiguous items)
    paradox: pd.DataFrame  # auditor.analysis.stats.paradox_table
    paper: pd.DataFrame  # auditor.analysis.paper_protocol.paper_table (the studies' sampling protocol)
    storage: pd.DataFrame  # STORAGE_COLUMNS: every (variant, format, layout) of measurements.json
    claims: pd.DataFrame  # auditor.analysis.claims.claims_table of those rows
    overview: pd.DataFrame  # OVERVIEW_COLUMNS: one row per (variant, backend)
    answers: pd.DataFrame  # records + reference role + flipped flag, one row per (variant, backend, seed, item)
    verdicts: tuple[Verdict, ...]
    thresholds: RiskThresholds
    notes: tuple[str, ...]  # what could not be computed, and why
    positions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=POSITION_COLUMNS))  # position_table
    validity: ReferenceValidity | None = None  # the dense reference's check; None without dense records
    # disambiguated items whose stereotype answer is wrong, reported apart (transition_table(condition="disambig"))
    transitions_disambig: pd.DataFrame = field(default_factory=pd.DataFrame)
    status: RunStatus | None = None  # planned units and which are finished (verified); the report and TUI say so
    protocol: str = STRICT  # the scoring protocol every table above was computed on
    protocols: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROTOCOL_COLUMNS))
    mask_spread: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MASK_SPREAD_COLUMNS))
    scope: tuple[str, ...] = ()  # per compression step: what it left untouched, block-only vs whole-model figures
    measure_context: dict = field(default_factory=dict)  # measurements.json: load average, threads, notes
    sparse_kernels: pd.DataFrame = field(default_factory=pd.DataFrame)  # claims.sparse_kernel_table
    sparse_breakeven: pd.DataFrame = field(default_factory=pd.DataFrame)  # claims.sparse_breakeven
    sparse_context: dict = field(default_factory=dict)  # sparse_kernels.json: threads, load average, notes
    fidelity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FIDELITY_COLUMNS))  # fidelity_table
    # free-text protocols: parse failures and agreement with the letter answers (generation_table)
    generation: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GENERATION_COLUMNS))

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def reference_precision(self) -> str:
        return str(self.manifest.get("model", {}).get("reference_precision", "unknown"))

    @classmethod
    def load(cls, run_dir: Path | str, thresholds: RiskThresholds | None = None, *,
             n_boot: int = 1000, protocol: str | None = None) -> RunView:
        """Read and derive everything on one scoring protocol (default: the run's first); AuditorError
        when `run_dir` is not a run directory."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise AuditorError(f"{run_dir}: no such run directory")
        manifest = load_manifest(run_dir)
        thresholds = thresholds or run_thresholds(manifest)
        status = run_status(run_dir, manifest)
        listed = run_protocols(manifest)
        protocol = protocol or listed[0]
        # Only finished, verified units count: a damaged or uncommitted file is never read.
        all_records, protocol_notes = with_derived_protocols(_read_records(run_dir, status.counted_files(SCORE)),
                                                             (*listed, protocol))
        records = select_protocol(all_records, protocol)
        items = _read_items(run_dir / "items.parquet")
        notes: list[str] = [str(n) for n in manifest.get("notes", []) or []]  # the runner's plan notes
        notes += protocol_notes
        if not status.is_complete:
            notes.append(status.incomplete_text() + "; not scored: " + ", ".join(u.id for u in status.missing))
        if not len(records):
            notes.append("no finished units: records/ holds no item records yet")
        notes += [f"unit {u.id} ({u.variant} on {u.backend}) FAILED: {u.problem}"
                  for u in status.units if u.state == UNIT_FAILED]
        storage = read_storage(run_dir)
        units = read_units(run_dir, records, storage, status.counted_files(PPL))
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
        # the paper protocol reads letter log-probs: none under a free-text protocol (NaN columns)
        paper = (paper_table(records) if len(records) and records.get("logprob_0", pd.Series()).notna().any()
                 else pd.DataFrame())
        claims = claims_table(storage.to_dict(orient="records")) if len(storage) else pd.DataFrame()
        if not len(storage) and units[list(MEASURE_KEYS)].isna().all().all():
            notes.append("size and speed not measured: no measurements.json or measurement figures in variants/*.json")
        positions = (positions_of(records, all_records, protocol, n_boot=n_boot) if len(records)
                     else pd.DataFrame(columns=POSITION_COLUMNS))
        intervals = (accuracy_intervals(records, DENSE, n_boot=n_boot) if len(records)
                     else pd.DataFrame(columns=ACCURACY_COLUMNS))
        n_ties = int(exact_ties(records).sum()) if len(records) else 0
        if n_ties:
            notes.append(f"{n_ties} of {len(records)} records have exactly tied top-two option log-probs (answered "
                         "by the hashed tie rule of auditor.data.records; a float32 head at the scored position "
                         "removes them)")
        validity, variant_findings = validity_of(positions, thresholds)
        if len(records) and "question_index" not in records.columns:
            notes.append("records carry no question_index (an older run): confidence intervals resample items, "
                         "not templates then items")
        fidelity = (fidelity_table(records, DENSE, n_boot=n_boot) if len(records)
                    else pd.DataFrame(columns=FIDELITY_COLUMNS))
        overview = _overview(records, units, metrics, comparison, paradox, positions, intervals, fidelity)
        finding = validity.short if validity is not None and not validity.valid else ""
        verdicts = tuple(assess(row, thresholds, finding, variant_findings.get((row["variant"], row["backend"]), ""))
                         for row in overview.to_dict(orient="records") if row["kind"] == KIND_VARIANT)
        by_key = {(v.variant, v.backend): v for v in verdicts}
        overview["verdict"] = [by_key[(r.variant, r.backend)].level if (r.variant, r.backend) in by_key
                               else r.kind if r.kind != KIND_VARIANT else "n/a" for r in overview.itertuples()]
        overview["abstention"] = [("loss" if by_key[k].abstention_loss else "none") if k in by_key else ""
                                  for k in zip(overview["variant"], overview["backend"])]
        answers = answers_with_reference(records)
        sparse_context, sparse = read_sparse_kernels(run_dir)
        protocols = protocol_table(all_records) if len(all_records) else pd.DataFrame(columns=PROTOCOL_COLUMNS)
        return cls(run_dir, manifest, records, items, units, metrics, trans, comparison, baselines, paradox, paper,
                   storage, claims, overview, answers, verdicts, thresholds, tuple(notes), positions, validity,
                   transition_table(records, condition="disambig") if len(records) else pd.DataFrame(), status,
                   protocol, protocols, mask_spread_table(overview), scope_lines(run_dir), read_measure_context(run_dir),
                   sparse, sparse_breakeven(sparse) if len(sparse) else pd.DataFrame(), sparse_context, fidelity,
                   generation_table(all_records))


# --- reading files -------------------------------------------------------------------------------------

def _read_records(run_dir: Path, files: list[Path] | None = None) -> pd.DataFrame:
    """The records of `files` (the finished units), or of every records file when the run plans no units."""
    try:
        records = read_records(record_files(run_dir) if files is None else files)
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


def scope_lines(run_dir: Path) -> tuple[str, ...]:
    """One line per compression step of the run's variants: what it left untouched and its block-only
    vs whole-model figures, as the step measured them (variants/*.json)."""
    lines: dict[str, str] = {}
    for path in sorted((run_dir / "variants").glob("*.json")):
        for step in _read_json(path).get("steps", []) or []:
            m, spec = step.get("measured", {}) or {}, str(step.get("spec", "?"))
            if "untouched_share_of_parameters" in m:
                text = (f"{spec}: leaves {m['untouched_share_of_parameters']:.1%} of the parameters untouched "
                        f"({', '.join(m.get('untouched_tensors', {})) or 'norms only'}"
                        f"{'; lm_head tied to the embedding' if m.get('tied_embeddings') else ''})")
                if "sparsity_model" in m:
                    text += f"; sparsity {m['sparsity_overall']:.3f} of block weights, {m['sparsity_model']:.3f} of all"
                if "bits_per_weight_model" in m:
                    text += (f"; {m['bits_per_weight']:.2f} bits/weight in the blocks, "
                             f"{m['bits_per_weight_model']:.2f} over the whole model")
                lines.setdefault(spec, text)
            elif "non_block_tensor_types" in m:
                kept = ", ".join(f"{k} {v}" for k, v in m["non_block_tensor_types"].items())
                lines.setdefault(spec, f"{spec}: {m.get('bits_per_weight', NAN):.2f} bits/weight in the blocks, "
                                       f"{m.get('bits_per_weight_model', NAN):.2f} over the whole model; "
                                       f"outside the blocks llama.cpp stores {kept or 'nothing else'}")
    return tuple(lines.values())


def variant_kind(spec: str) -> str:
    if spec == DENSE:
        return KIND_REFERENCE
    return KIND_BASELINE if spec in BASELINE_VARIANTS else KIND_VARIANT


STORAGE_COLUMNS = ["variant", "family", "format", "layout", "runtime", "size_bytes", "bits_per_weight", "load_s",
                   "time_to_first_token_s", "peak_rss_bytes", "prefill_tokens_per_s", "decode_tokens_per_s",
                   "bbq_ms_per_prompt", "note"]


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


def read_measure_context(run_dir: Path) -> dict:
    """How measurements.json was taken: threads, the load average around the timings, its notes; {} without it."""
    path = run_dir / "measurements.json"
    if not path.is_file():
        return {}
    doc = _read_json(path)
    return {"n_threads": (doc.get("workload") or {}).get("n_threads"), "load_average": doc.get("load_average") or {},
            "repeats": (doc.get("settings") or {}).get("repeats"), "notes": doc.get("notes") or [],
            "cpus": (doc.get("machine") or {}).get("cpus")}


def read_sparse_kernels(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """sparse_kernels.json (`auditor bench sparse-kernels --out RUN`): its context and the speed-up table."""
    path = run_dir / SPARSE_KERNELS_FILE
    if not path.is_file():
        return {}, pd.DataFrame()
    doc = _read_json(path)
    timings = doc.get("timings")
    if not isinstance(timings, list) or not all(isinstance(t, dict) and "kernel" in t for t in timings):
        raise DataError(path, "\"timings\" must be a list of objects with a \"kernel\" key")
    context = {"torch_threads": doc.get("torch_threads"), "load_average": doc.get("load_average") or {},
               "notes": doc.get("notes") or [], "cpus": (doc.get("machine") or {}).get("cpus"),
               "created_utc": doc.get("created_utc"), "torch": (doc.get("versions") or {}).get("torch")}
    return context, sparse_kernel_table(timings)


def _storage_row(storage: pd.DataFrame, spec: str, backend: str) -> dict:
    """The measurements.json row for a (variant, backend): its runtime's format (dense GGUF for the runtime baseline)."""
    if not len(storage):
        return {}
    name = DENSE if spec == DENSE_GGUF_F16 else spec
    sel = storage[(storage["variant"] == name) & (storage["runtime"] == backend)]
    preferred = sel[sel["format"] == RUNTIME_FORMAT.get(backend, "")]
    sel = preferred if len(preferred) else sel
    return sel.iloc[0].to_dict() if len(sel) else {}


def read_units(run_dir: Path, records: pd.DataFrame, storage: pd.DataFrame | None = None,
               ppl_files: list[Path] | None = None) -> pd.DataFrame:
    """One row per (variant, backend) present in the records or in variants/*.json.

    Measured figures come from, later winning: variants/<unit>.json (top-level
    keys, a "measurements" object, compressor step reports), the unit's row of
    measurements.json (its runtime's format), measurements/<unit>.json;
    perplexity from ppl/<unit>.json ("ppl", "n_tokens"; its "kld" figures against the dense base as
    kld_mean, kld_se, kld_same_top, kld_positions), only those in `ppl_files` when given
    (the finished perplexity units). Absent files leave NaN.
    """
    storage = storage if storage is not None else pd.DataFrame(columns=STORAGE_COLUMNS)
    rows: dict[tuple[str, str], dict] = {}
    for path in sorted((run_dir / "variants").glob("*.json")):  # one per unit; shards of a variant share a row
        info = _read_json(path)
        spec, backend = str(info.get("variant", path.stem)), str(info.get("backend", info.get("runtime", "")))
        row = rows.setdefault((spec, backend), {"variant": spec, "backend": backend})
        row.update(compress_s=sum(float(s.get("wall_s", 0.0)) for s in info.get("steps", []) or []),
                   scoring_ms_per_prompt=info.get("ms_per_prompt", NAN))
        row.update(_measurements(info))
    if len(records):
        for spec, backend in records[["variant", "backend"]].drop_duplicates().itertuples(index=False):
            rows.setdefault((str(spec), str(backend)), {"variant": str(spec), "backend": str(backend)})
    for (spec, backend), row in rows.items():
        stem = unit_name(spec, backend)
        row.update(unit=stem, variant_id=variant_id(spec))
        row.update(_measurements(_storage_row(storage, spec, backend)))
        extra = run_dir / "measurements" / f"{stem}.json"
        if extra.is_file():
            row.update(_measurements(_read_json(extra)))
        ppl_path = run_dir / "ppl" / f"{stem}.json"
        if ppl_path.is_file() and (ppl_files is None or ppl_path in ppl_files):
            ppl = _read_json(ppl_path)
            row.update(ppl=ppl.get("ppl", NAN), ppl_tokens=ppl.get("n_tokens", NAN))
            kld = ppl.get("kld") if isinstance(ppl.get("kld"), dict) else {}
            if "kld_mean" in kld:  # against the dense base (auditor.analysis.kld); dense itself has no figure
                row.update(kld_mean=kld["kld_mean"], kld_se=kld.get("kld_se", NAN),
                           kld_same_top=kld.get("same_top", NAN), kld_positions=kld.get("n_positions", NAN))
    out = []
    for (spec, _), row in sorted(rows.items()):
        row["kind"] = variant_kind(spec)
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


def _overview(records: pd.DataFrame, units: pd.DataFrame, metrics: pd.DataFrame, comparison: pd.DataFrame,
              paradox: pd.DataFrame, positions: pd.DataFrame, intervals: pd.DataFrame,
              fidelity: pd.DataFrame) -> pd.DataFrame:
    """The variants table: one row per (variant, backend) with its headline figures (NaN = not measured)."""
    ref_units = units[units["kind"] == KIND_REFERENCE]
    rows = []
    for u in units.to_dict(orient="records"):
        sel = records[(records["variant"] == u["variant"]) & (records["backend"] == u["backend"])]
        row = {k: u.get(k, NAN) for k in OVERVIEW_COLUMNS if k in u}
        ref = ref_units[ref_units["backend"] == u["backend"]]
        if not len(ref):
            ref = ref_units[ref_units["backend"] == TORCH]
        ref_size = float(ref["size_bytes"].iloc[0]) if len(ref) else NAN
        ref_rec = records[(records["variant"] == DENSE) & (records["backend"].isin(ref["backend"]))]
        row["size_ratio"] = u["size_bytes"] / ref_size if ref_size and not math.isnan(ref_size) else NAN
        # measured on the variant's own runtime only: the run's scoring time is another source (other batch,
        # other machine load, shared prefixes) and is never filled in for it (units keep it apart)
        row["ms_per_prompt"] = u["bbq_ms_per_prompt"]
        row["accuracy"] = accuracy(sel)
        row["accuracy_drop"] = accuracy(ref_rec) - row["accuracy"] if u["kind"] != KIND_REFERENCE else 0.0
        row["unknown_rate"] = unknown_rate(sel)
        row["n_ties"] = int(exact_ties(sel).sum())
        acc = intervals[(intervals["variant"] == u["variant"]) & (intervals["backend"] == u["backend"])]
        for key in ACCURACY_COLUMNS[2:]:
            row[key] = float(acc[key].iloc[0]) if len(acc) else NAN
        fid = fidelity[(fidelity["variant"] == u["variant"]) & (fidelity["backend"] == u["backend"])]
        for key in ("same_top_share", "same_top_ci_low", "same_top_ci_high", "kl_mean"):
            row[key] = float(fid[key].iloc[0]) if len(fid) else NAN
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
        for key in _COMPARISON_KEYS:
            value = c[key].iloc[0] if len(c) and key in c.columns else NAN
            row[key] = value if isinstance(value, str) else float(value)
        pos = positions[(positions["variant"] == u["variant"]) & (positions["backend"] == u["backend"])]
        row["top_letter"] = str(pos["top_letter"].iloc[0]) if len(pos) else ""
        for key in ("top_letter_share", "letter_mass"):
            row[key] = float(pos[key].iloc[0]) if len(pos) else NAN
        p = paradox[(paradox["variant"] == u["variant"]) & (paradox["backend"] == u["backend"])] if len(paradox) else paradox
        row["ppl_change_pct"] = float(p["ppl_change_pct"].iloc[0]) if len(p) else NAN
        row["srs_change_pct"] = float(p["srs_change_pct"].iloc[0]) if len(p) else NAN
        rows.append(row)
    frame = pd.DataFrame(rows, columns=OVERVIEW_COLUMNS)
    order = {KIND_REFERENCE: 0, KIND_VARIANT: 1, KIND_BASELINE: 2}
    frame["_k"] = frame["kind"].map(order)
    frame = frame.sort_values(["_k", "method", "level", "variant", "backend"], na_position="first", kind="stable")
    return frame.drop(columns="_k").reset_index(drop=True)


# --- runs list and summary.json ---------------------------------------------------------------------------

#: Sortable columns of the variants table: label -> overview column.
SORT_KEYS = {"size": "size_bytes", "decode": "decode_tokens_per_s", "ppl": "ppl", "accuracy": "accuracy", "srs": "srs",
             "flip rate": "flip_rate", "verdict": "verdict"}
VERDICT_RANK = {"high": 4, "elevated": 3, "not shown": 2, "low": 1, "inconclusive": 0, "n/a": 0,
                KIND_REFERENCE: -1, KIND_BASELINE: -1}


def sort_overview(overview: pd.DataFrame, key: str, descending: bool = False) -> pd.DataFrame:
    """The variants table ordered by one of SORT_KEYS (verdicts by severity); missing values always last."""
    if key not in SORT_KEYS:
        raise AuditorError(f"cannot sort by {key!r}; valid: {', '.join(SORT_KEYS)}")
    col = SORT_KEYS[key]
    values = overview[col].map(VERDICT_RANK) if col == "verdict" else overview[col]
    order = values.astype(float).sort_values(ascending=not descending, na_position="last", kind="stable").index
    return overview.loc[order].reset_index(drop=True)
