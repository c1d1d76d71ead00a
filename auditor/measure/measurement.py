"""Size and speed of every variant in every format it can be stored in, measured rather than assumed.

For each variant the artifact is written in each applicable format, then:
- size_bytes: sum of the artifact's file sizes (weights, config, tokenizer);
- bits_per_weight: 8 * weight-file bytes / parameters of the dense model (tied
  weights counted once); for GGUF, auditor.artifacts.gguf_info's whole-file figure;
- in a fresh subprocess per (variant, format) and round (auditor.measure.worker): load_s,
  time_to_first_token_s (the first prompt after loading, cold: prefill plus the first greedy
  token), peak_rss_bytes (that process's high-water mark, VmHWM; the largest over rounds) and
  rss_before_load_bytes (the runtime's own baseline after its imports), prefill_tokens_per_s
  (one warm forward over a fixed prompt, batch 1), decode_tokens_per_s (greedy, `new_tokens`
  tokens after that prompt) and bbq_ms_per_prompt (ms per scored BBQ prompt through the
  project's backend for the runtime); torch for safetensors directories, llama.cpp for GGUF.
Timings are interleaved: every artifact is exported first, then `repeats` rounds each measure
every (variant, format) once in the same order (A B C A B C ...), so a drift of the machine's
load hits all variants alike and run i of a variant pairs with run i of dense
(auditor.analysis.claims.ratio_ci). Each figure is reported as median, min, max and the per-run
values; the 1-minute load average is recorded before every run and a note warns when it rose
more than `load_tolerance` above the measurement's own threads (other work on the cores).
Sparse layouts (bitmask, CSR) and zstd are storage measurements only: no runtime executes them
sparse, so they have sizes but no speeds.

Formats per variant: float torch variants (dense, pruned, RTN) -> safetensors,
GGUF (F16, or F32 on request) and the sparse layouts; bitsandbytes variants ->
safetensors only (a bnb model has no GGUF form); gguf-* variants -> their GGUF
file only.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from auditor.analysis.claims import claims_table
from auditor.artifacts.gguf_writer import tokenizer_for_model
from auditor.artifacts.models import (DENSE_WEIGHTS_FOLDER, ModelSource, float32_weights_dir, load_model,
                                      load_tokenizer, resolve_model, return_freed_memory)
from auditor.core.errors import AuditorError
from auditor.core.files import json_safe, write_json
from auditor.core.names import DENSE, variant_id
from auditor.core.provenance import machine, now_utc, package_versions, tree_sha256
from auditor.data.bbq import select_items
from auditor.data.rundir import sealed
from auditor.data.sources import SAMPLE_BBQ
from auditor.measure.exports import (
    FORMATS,
    artifact_size,
    check_zstd_level,
    export_formats,
    export_gguf,
    export_safetensors,
    export_sparse,
    gguf_figures,
    torch_layout,
)
from auditor.scoring.engine import PromptSet
from compressors.calibration import load_calibration
from compressors.registry import build_on_load, parse_chain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements, and the values in run order; NaN for an empty set."""

    median: float
    min: float
    max: float
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        vals = [float(v) for v in values]
        if not vals:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(vals), min(vals), max(vals), tuple(vals))


def rates(n: int, seconds: Sequence[float]) -> Spread:
    """Spread of n / s over the runs (tokens per second per run, then median/min/max); a run of 0 s is NaN."""
    return Spread.of([n / s if s > 0 else math.nan for s in seconds])


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure. Defaults fit six SmolLM2 variants in well under 15 minutes on 2 cores."""

    repeats: int = 3
    new_tokens: int = 16
    n_threads: int | None = None  # None: os.cpu_count(); the same for torch and llama.cpp
    n_ctx: int = 512
    bbq_items: int = 8  # fixture items scored for bbq_ms_per_prompt (seed 0: one prompt each)
    formats: tuple[str, ...] = FORMATS
    outtype: str = "f16"  # GGUF type of float variants
    zstd_level: int = 3
    calib: str | None = None
    calib_samples: int = 32
    calib_seq_len: int = 256
    compress_seed: int = 0
    worker_timeout_s: float = 600.0
    load_tolerance: float = 1.0  # warn when the 1-minute load average moves by more than this during timing

    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1

    def check(self) -> None:
        if self.repeats < 1:
            raise AuditorError(f"repeats must be at least 1, got {self.repeats}")
        if self.new_tokens < 1:
            raise AuditorError(f"new_tokens must be at least 1, got {self.new_tokens}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise AuditorError(f"formats {','.join(self.formats)!r}: valid formats are {', '.join(FORMATS)}")
        if self.outtype not in ("f16", "f32"):
            raise AuditorError(f"outtype {self.outtype!r}: valid GGUF output types are f16, f32")
        check_zstd_level(self.zstd_level)
        if self.bbq_items < 0:
            raise AuditorError(f"bbq_items must be 0 or more, got {self.bbq_items}")


@dataclass(frozen=True)
class Workload:
    """The same token ids for every variant and runtime."""

    prompt_ids: tuple[int, ...]
    groups: tuple[Any, ...]  # PromptGroup
    letter_ids: tuple[int, ...]
    pad_id: int
    origin: str


def build_workload(tokenizer, bbq_items: int) -> Workload:
    """Prompt = the first fixture item's prompt (dataset order); BBQ groups = the first `bbq_items` items.

    The prompts are built as a run builds them (PromptSet: the chat template
    when the tokenizer has one, the plain format for a base model without),
    so measuring a base model such as Gemma 3 270M works and times the prompts
    its study scores.
    """
    items = select_items([SAMPLE_BBQ], origin="fixtures/bbq_sample").items
    if not items:
        raise AuditorError(f"{SAMPLE_BBQ}: no usable fixture items for the measurement prompt")
    prompts = PromptSet.build(tokenizer, items[:max(bbq_items, 1)], [0])
    groups = prompts.groups
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Workload(groups[0].full_ids(0), tuple(groups[:bbq_items]), prompts.letter_ids, int(pad),
                    f"fixtures/bbq_sample: prompt = item {items[0].item_id} ({len(groups[0].full_ids(0))} tokens, "
                    f"{prompts.prompt_format}); BBQ latency over {min(bbq_items, len(groups))} items, seed 0")


@dataclass(frozen=True)
class Measurement:
    """One (variant, format, layout) row. Speeds are None where no runtime executes the layout."""

    variant: str
    family: str  # dense | prune | quantize | prune+quantize
    format: str  # safetensors | gguf | sparse
    layout: str  # float32, bnb-int8, F16, Q8_0, bitmask, csr, zstd-3, ...
    runtime: str | None  # torch | llama.cpp | None (storage only)
    path: str
    size_bytes: int
    bits_per_weight: float
    load_s: Spread | None = None
    time_to_first_token_s: Spread | None = None
    peak_rss_bytes: int | None = None
    rss_before_load_bytes: int | None = None
    prefill_tokens_per_s: Spread | None = None
    decode_tokens_per_s: Spread | None = None
    bbq_ms_per_prompt: float | None = None
    load_average: Spread | None = None  # 1-minute load average before each of this row's runs
    note: str = ""
    sha256: str | None = None  # of the artifact as measured (core.provenance.tree_sha256), taken before any deletion
    # llama.cpp only: its extra weight buffers (ggml's AMX kernels on such CPUs) on or off; None for torch
    llama_extra_buffers: bool | None = None


@dataclass
class MeasureReport:
    model: dict
    settings: MeasureSettings
    workload: Workload
    n_params: int
    rows: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = math.nan
    artifacts_dir: str | None = None  # where the rows' relative paths point; None: deleted after measuring
    load_average: dict = field(default_factory=dict)  # 1-minute load average: start, end, min/max over runs

    def to_json(self) -> dict:
        rows = [asdict(r) for r in self.rows]
        claims = claims_table(rows)
        return json_safe({
            "model": self.model,
            "settings": asdict(self.settings),
            "workload": {"origin": self.workload.origin, "prompt_tokens": len(self.workload.prompt_ids),
                         "bbq_prompts": len(self.workload.groups), "n_threads": self.settings.threads()},
            "n_params": self.n_params,
            "artifacts_dir": self.artifacts_dir,
            "measurements": rows,
            "claims": json.loads(claims.to_json(orient="records")),
            "notes": self.notes,
            "wall_s": self.wall_s,
            "load_average": self.load_average,
            "created_utc": now_utc(),
            "machine": machine(),
            "versions": package_versions(),
        })


# ---------------------------------------------------------------- sizes


def count_parameters(model) -> int:
    """Parameters of a torch model, shared (tied) tensors counted once."""
    return sum(p.numel() for p in model.parameters())  # parameters() already skips duplicates


def bits_per_weight(n_bytes: int, n_params: int) -> float:
    """8 * bytes / parameters; NaN without parameters."""
    return 8 * n_bytes / n_params if n_params else math.nan


# ---------------------------------------------------------------- the worker

def worker_request(runtime: str, path: Path, workload: Workload, settings: MeasureSettings) -> dict:
    return {
        "runtime": runtime, "path": str(path), "prompt_ids": list(workload.prompt_ids),
        "new_tokens": settings.new_tokens, "repeats": 1, "n_threads": settings.threads(),
        "n_ctx": settings.n_ctx, "pad_id": workload.pad_id, "letter_ids": list(workload.letter_ids),
        "bbq_groups": [{"item_id": g.item_id, "perms": [list(p) for p in g.perms],
                        "prefix_ids": list(g.prefix_ids), "suffix_ids": [list(s) for s in g.suffix_ids]}
                       for g in workload.groups],
    }


def run_worker(runtime: str, path: Path, workload: Workload, settings: MeasureSettings) -> dict:
    """Measure `path` in a fresh `python -m auditor.measure.worker` process; return its raw result."""
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(worker_request(runtime, path, workload, settings)))
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "auditor.measure.worker", str(req), str(res)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=settings.worker_timeout_s)
        except subprocess.TimeoutExpired:
            raise AuditorError(f"{path}: measurement in {runtime} took longer than "
                               f"{settings.worker_timeout_s:.0f}s") from None
        if done.returncode != 0 or not res.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise AuditorError(f"{path}: measurement in {runtime} failed (exit {done.returncode}):\n{tail}")
        return json.loads(res.read_text())


def runtime_row(base: Measurement, results: Sequence[dict], loads: Sequence[float | None] = ()) -> Measurement:
    """`base` (sizes) with the workers' timings of every round turned into spreads (values in round order)."""
    def joined(key: str) -> list[float]:
        return [v for r in results for v in r[key]]

    bbq = [r["bbq_ms_per_prompt"] for r in results if r.get("bbq_ms_per_prompt") is not None]
    return replace(
        base, load_s=Spread.of(joined("load_s")), time_to_first_token_s=Spread.of(joined("ttft_s")),
        peak_rss_bytes=max(int(r["peak_rss_bytes"]) for r in results),
        rss_before_load_bytes=min(int(r["rss_before_load_bytes"]) for r in results),
        prefill_tokens_per_s=rates(results[0]["n_prompt_tokens"], joined("prefill_s")),
        decode_tokens_per_s=rates(results[0]["new_tokens"], joined("decode_s")),
        bbq_ms_per_prompt=statistics.median(bbq) if bbq else None,
        load_average=Spread.of([v for v in loads if v is not None]) if loads else None,
        llama_extra_buffers=results[0].get("llama_extra_buffers"),
    )


@dataclass(frozen=True)
class Pending:
    """A (variant, format) exported and waiting for its interleaved timings."""

    base: Measurement
    runtime: str
    path: Path


def time_interleaved(pending: Sequence[Pending], workload: Workload, settings: MeasureSettings,
                     ) -> tuple[list[Measurement], list[float | None]]:
    """`settings.repeats` rounds, each timing every pending artifact once in order (A B A B ...).

    Returns the timed rows (in `pending` order) and the load averages read before each run.
    """
    results: list[list[dict]] = [[] for _ in pending]
    loads: list[list[float | None]] = [[] for _ in pending]
    for round_ in range(settings.repeats):
        for i, p in enumerate(pending):
            loads[i].append(_load_average())
            results[i].append(_timed(f"{p.base.variant} {p.base.format}: {p.runtime} round {round_ + 1}",
                                     run_worker, p.runtime, p.path, workload, settings))
    rows = [runtime_row(p.base, res, ld) for p, res, ld in zip(pending, results, loads)]
    return rows, [v for ld in loads for v in ld]


# ---------------------------------------------------------------- variants and exports

def variant_family(steps: Sequence) -> str:
    families = [s.family for s in steps]
    if not families:
        return DENSE
    return "+".join(f for f in ("prune", "quantize") if f in families)


def _gguf_note(variant) -> str:
    """The quantizer's fallback note (K-quant types replaced), when there is one."""
    for step in variant.steps:
        fallback = (step.measured or {}).get("fallback")
        if fallback:
            return f"fallback: {fallback.get('note', fallback)}"
    return ""


def export_variant(spec: str, steps: Sequence, variant, *, tokenizer, gguf_tokenizer, n_params: int,
                   settings: MeasureSettings, workdir: Path) -> tuple[list[Measurement], list[Pending], list[str]]:
    """Export `variant` in each applicable requested format: storage-only rows, the artifacts a
    runtime will time (`time_interleaved`), and notes."""
    family = variant_family(steps)
    possible, why = export_formats(variant)
    wanted = [f for f in settings.formats if f in possible]
    notes = [f"{spec}: {why}"] if why else []
    if not wanted:  # every variant gets measured: one none of the asked formats can hold, in its own (bnb)
        wanted = [possible[0]]
        notes.append(f"{spec}: measured as {possible[0]}, its only format ({', '.join(settings.formats)} asked)")
    rows: list[Measurement] = []
    pending: list[Pending] = []
    hf_dir = None
    if "safetensors" in wanted or "sparse" in wanted:
        hf_dir = _timed(f"{spec}: safetensors export", export_safetensors, variant, tokenizer, workdir / "hf")
        weights = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors"))
        base = Measurement(spec, family, "safetensors", torch_layout(variant.model), "torch", str(hf_dir),
                           artifact_size(hf_dir), bits_per_weight(weights, n_params))
        if "safetensors" in wanted:
            rows.append(base)
            pending.append(Pending(base, "torch", hf_dir))
    if "sparse" in wanted:
        export = _timed(f"{spec}: sparse layouts and zstd", export_sparse, variant, tokenizer, workdir / "sparse",
                        zstd_level=settings.zstd_level, hf_dir=hf_dir)
        rows.extend(_sparse_rows(spec, family, export, n_params))
    if "gguf" in wanted:
        outtype = settings.outtype if variant.model is not None else "quantized"
        path = _timed(f"{spec}: GGUF export", export_gguf, variant, gguf_tokenizer,
                      workdir / f"model-{outtype}.gguf", settings.outtype)
        label, bpw = gguf_figures(path)
        base = Measurement(spec, family, "gguf", label, "llama.cpp", str(path), artifact_size(path), bpw,
                           note=_gguf_note(variant))
        rows.append(base)
        pending.append(Pending(base, "llama.cpp", path))
    skipped = [f for f in settings.formats if f not in possible]
    if skipped and not why:
        notes.append(f"{spec}: {', '.join(skipped)} not applicable")
    return rows, pending, notes


def _timed(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), logging its wall time: the budget is minutes, so say where they go."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    log.info("%s: %.1fs", what, time.perf_counter() - start)
    return result


def _sparse_rows(spec: str, family: str, export, n_params: int) -> list[Measurement]:
    rows = [Measurement(spec, family, "sparse", f.layout, None, str(f.path), export.size_bytes(f.layout),
                        bits_per_weight(f.size_bytes, n_params),
                        note=f"{f.n_encoded} matrices in {f.layout} layout, {f.n_dense} tensors dense; storage only")
            for f in export.files]
    zst = sum(p.stat().st_size for p in export.zstd_files)
    rows.append(Measurement(spec, family, "sparse", f"zstd-{export.zstd_level}", None, str(export.zstd_files[0]),
                            export.size_bytes("zstd"), bits_per_weight(zst, n_params),
                            note="zstd over the dense safetensors file; storage only"))
    return rows


# ---------------------------------------------------------------- the whole measurement

def _load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _warn_if_busy(threads: int) -> float | None:
    """Warn when other work already occupies the cores: timings will be unreliable.

    Thread pools that spin at barriers (torch's OpenMP, llama.cpp) slow down by an order of
    magnitude, not a few percent, when their threads share cores with other processes.
    """
    load = _load_average()
    cores = os.cpu_count() or 1
    if load is not None and load + threads > cores + 0.5:
        log.warning("load average %.1f on %d cores before measuring with %d threads: other work competes for "
                    "the cores and timings will be unreliable (try a quiet machine or --threads 1)",
                    load, cores, threads)
    return load


def load_summary(before: float | None, during: Sequence[float | None], after: float | None,
                 tolerance: float, own_threads: int) -> dict:
    """start, end, min, max of the 1-minute load averages read around and between the runs;
    moved = max - min > tolerance; competing = max > own_threads + tolerance: load beyond the
    measurement's own worker threads, i.e. other work on the cores. On an idle machine the load
    rises from ~0 to the worker's threads by itself: it moved, but nothing competed.
    (None where the OS reports no load average.)"""
    seen = [v for v in (before, *during, after) if v is not None]
    if not seen:
        return {"start": None, "end": None, "min": None, "max": None, "moved": None, "competing": None,
                "own_threads": own_threads, "tolerance": tolerance}
    return {"start": before, "end": after, "min": min(seen), "max": max(seen),
            "moved": max(seen) - min(seen) > tolerance, "competing": max(seen) > own_threads + tolerance,
            "own_threads": own_threads, "tolerance": tolerance}


def measure(specs: Sequence[str], *, model: str | ModelSource | None = None,
            settings: MeasureSettings = MeasureSettings(), out_dir: Path | None = None, keep_artifacts: bool = False,
            scratch: Path | None = None) -> MeasureReport:
    """Build, export and measure every variant (dense first, added when absent) of `model` (a name or path, or
    a resolved ModelSource).

    With `out_dir`: writes measurements.json (everything, claims included) and
    measurements/<variant_id>__<backend>.json per runtime row (the files a run
    directory's report reads); artifacts stay in out_dir/artifacts/measure when
    `keep_artifacts`, else they live in a temporary directory removed after the timings (every
    artifact exists at once so that the rounds can interleave them), made under `scratch` when given (a
    run's artifacts/ folder: its name ends in ".<pid>", so a killed run's next start removes it).
    """
    settings.check()
    start = time.perf_counter()
    ordered = [DENSE, *dict.fromkeys(s.strip() for s in specs if s.strip() != DENSE)]
    chains = {spec: parse_chain(spec) for spec in ordered}  # bad specs fail before any work
    load_before = _warn_if_busy(settings.threads())
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    tokenizer = load_tokenizer(source)
    workload = build_workload(tokenizer, settings.bbq_items)
    keep = keep_artifacts and out_dir is not None
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    root = Path(out_dir) / "artifacts" / "measure" if keep else Path(
        tempfile.mkdtemp(prefix="auditor-measure-", suffix=f".{os.getpid()}", dir=scratch))
    calibration = None
    pending: list[tuple[int, Pending]] = []  # (index in report.rows, artifact to time)
    try:
        # One model at a time (docs/memory.md): every variant is built on a fresh memory-mapped load of
        # the dense float32 folder, never on a copy of a resident dense model.
        weights = float32_weights_dir(source, root / DENSE_WEIGHTS_FOLDER)
        dense = load_model(source, weights=weights)
        gguf_tokenizer = tokenizer_for_model(dense) if "gguf" in settings.formats else None
        report = MeasureReport({"name": source.name, "path": str(source.path), "kind": source.kind,
                                "reference_precision": source.reference_precision},
                               settings, workload, count_parameters(dense))
        del dense
        for spec in ordered:
            workdir = root / variant_id(spec)
            workdir.mkdir(parents=True, exist_ok=True)
            if calibration is None and any(s.needs_calibration for s in chains[spec]):
                calibration = load_calibration(tokenizer, settings.calib, n_samples=settings.calib_samples,
                                               seq_len=settings.calib_seq_len, seed=settings.compress_seed)
            t0 = time.perf_counter()
            variant = build_on_load(chains[spec], load_model(source, weights=weights), weights,
                                    calibration=calibration, seed=settings.compress_seed,
                                    workdir=workdir / "compress")
            log.info("%s: built in %.1fs", spec, time.perf_counter() - t0)
            rows, waiting, notes = export_variant(spec, chains[spec], variant, tokenizer=tokenizer,
                                                  gguf_tokenizer=gguf_tokenizer, n_params=report.n_params,
                                                  settings=settings, workdir=workdir)
            pending.extend((len(report.rows) + rows.index(p.base), p) for p in waiting)
            report.rows.extend(rows)
            report.notes.extend(notes)
            log.info("%s: exported (%.0fs so far)", spec, time.perf_counter() - start)
            del variant
            return_freed_memory()  # collects first: a bitsandbytes model is not freed by `del` alone
        # Every artifact exists now: time them in interleaved rounds.
        timed, loads = time_interleaved([p for _, p in pending], workload, settings)
        for (index, _), row in zip(pending, timed):
            report.rows[index] = row
        # Paths relative to the artifacts folder, which is temporary unless kept.
        # ... and the sha256 of what was measured, while the files still exist.
        report.rows = [replace(r, path=str(Path(r.path).relative_to(root)),
                               sha256=tree_sha256(Path(r.path)) if Path(r.path).exists() else None)
                       for r in report.rows]
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    report.wall_s = time.perf_counter() - start
    report.artifacts_dir = str(root) if keep else None
    report.load_average = load_summary(load_before, loads, _load_average(), settings.load_tolerance,
                                       settings.threads())
    if report.load_average["competing"]:
        note = (f"the 1-minute load average reached {report.load_average['max']:.1f} during the timings, above "
                f"the measurement's own {settings.threads()} threads (tolerance {settings.load_tolerance:.1f}): "
                "other work competed for the cores; speed ratios carry that noise in their intervals")
        log.warning(note)
        report.notes.append(note)
    if out_dir is not None:
        write_measurements(report, Path(out_dir))
    return report


def write_measurements(report: MeasureReport, out_dir: Path) -> Path:
    """measurements.json plus measurements/<variant_id>__<backend>.json for each runtime row."""
    doc = report.to_json()
    write_json(sealed(doc), out_dir / "measurements.json")  # sealed: a report refuses an edited copy
    for row in doc["measurements"]:
        if row["runtime"] is None:
            continue
        unit = f"{variant_id(row['variant'])}__{row['runtime']}"
        write_json(sealed({**row, "spec": row["variant"], "backend": row["runtime"]}),
                   out_dir / "measurements" / f"{unit}.json")
    return out_dir / "measurements.json"


