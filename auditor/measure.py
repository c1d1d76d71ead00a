"""Size and speed of every variant in every format it can be stored in, measured rather than assumed.

For each variant the artifact is written in each applicable format, then:
- size_bytes: sum of the artifact's file sizes (weights, config, tokenizer);
- bits_per_weight: 8 * weight-file bytes / parameters of the dense model (tied
  weights counted once); for GGUF, auditor.gguf_info's whole-file figure;
- in a fresh subprocess per (variant, format) (auditor.measure_worker): load_s,
  peak_rss_bytes (that process's high-water mark, VmHWM) and rss_before_load_bytes
  (the runtime's own baseline after its imports), prefill_tokens_per_s (one forward over a fixed
  prompt, batch 1), decode_tokens_per_s (greedy, `new_tokens` tokens after that
  prompt) and bbq_ms_per_item (ms per scored BBQ prompt through the project's
  backend for the runtime); torch for safetensors directories, llama.cpp for GGUF.
Throughput and load time are repeated (`repeats`) and reported as median, min
and max. Sparse layouts (bitmask, CSR) and zstd are storage measurements only:
no runtime executes them sparse, so they have sizes but no speeds.

Formats per variant: float torch variants (dense, pruned, RTN) -> safetensors,
GGUF (F16, or F32 on request) and the sparse layouts; bitsandbytes variants ->
safetensors only (a bnb model has no GGUF form); gguf-* variants -> their GGUF
file only.
"""
from __future__ import annotations

import copy
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

from auditor.audit import DENSE
from auditor.errors import AuditorError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("safetensors", "gguf", "sparse")
NO_GGUF_NOTE = "bitsandbytes model: no GGUF form (llama.cpp has no bnb types); safetensors only"


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements; NaN for an empty set."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        vals = [float(v) for v in values]
        if not vals:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(vals), min(vals), max(vals))


def rates(n: int, seconds: Sequence[float]) -> Spread:
    """Spread of n / s over the runs (tokens per second per run, then median/min/max)."""
    return Spread.of([n / s for s in seconds if s > 0])


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure. Defaults fit six SmolLM2 variants in well under 15 minutes on 2 cores."""

    repeats: int = 3
    new_tokens: int = 16
    n_threads: int | None = None  # None: os.cpu_count(); the same for torch and llama.cpp
    n_ctx: int = 512
    bbq_items: int = 8  # fixture items scored for bbq_ms_per_item (seed 0: one prompt each)
    formats: tuple[str, ...] = FORMATS
    outtype: str = "f16"  # GGUF type of float variants
    zstd_level: int = 3
    calib: str | None = None
    calib_samples: int = 32
    calib_seq_len: int = 256
    compress_seed: int = 0
    worker_timeout_s: float = 600.0

    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1

    def check(self) -> None:
        if self.repeats < 1:
            raise AuditorError(f"--repeats must be at least 1, got {self.repeats}")
        if self.new_tokens < 1:
            raise AuditorError(f"--new-tokens must be at least 1, got {self.new_tokens}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise AuditorError(f"--formats {','.join(self.formats)!r}: valid formats are {', '.join(FORMATS)}")
        if self.outtype not in ("f16", "f32"):
            raise AuditorError(f"--outtype {self.outtype!r}: valid GGUF output types are f16, f32")
        check_zstd_level(self.zstd_level)
        if self.bbq_items < 0:
            raise AuditorError(f"--bbq-items must be 0 or more, got {self.bbq_items}")


def check_zstd_level(level: int) -> None:
    if not 1 <= level <= 22:
        raise AuditorError(f"--zstd-level {level}: valid levels are 1 (fast) to 22 (smallest)")


@dataclass(frozen=True)
class Workload:
    """The same token ids for every variant and runtime."""

    prompt_ids: tuple[int, ...]
    groups: tuple[Any, ...]  # PromptGroup
    letter_ids: tuple[int, ...]
    pad_id: int
    origin: str


def build_workload(tokenizer, bbq_items: int) -> Workload:
    """Prompt = the first fixture item's chat prompt (dataset order); BBQ groups = the first `bbq_items` items."""
    from auditor.bbq import select_items
    from auditor.data import SAMPLE_BBQ
    from auditor.prompts import build_groups, letter_token_ids

    items = select_items([SAMPLE_BBQ], origin="fixtures/bbq_sample").items
    if not items:
        raise AuditorError(f"{SAMPLE_BBQ}: no usable fixture items for the measurement prompt")
    groups = build_groups(tokenizer, items[:max(bbq_items, 1)], [0])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Workload(groups[0].full_ids(0), tuple(groups[:bbq_items]), letter_token_ids(tokenizer), int(pad),
                    f"fixtures/bbq_sample: prompt = item {items[0].item_id} ({len(groups[0].full_ids(0))} tokens); "
                    f"BBQ latency over {min(bbq_items, len(groups))} items, seed 0")


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
    peak_rss_bytes: int | None = None
    rss_before_load_bytes: int | None = None
    prefill_tokens_per_s: Spread | None = None
    decode_tokens_per_s: Spread | None = None
    bbq_ms_per_item: float | None = None
    note: str = ""


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
    load_average: dict = field(default_factory=dict)  # 1-minute load average at start and end

    def to_json(self) -> dict:
        from auditor.claims import claims_table
        from auditor.provenance import machine, now_utc, package_versions

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

def artifact_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def count_parameters(model) -> int:
    """Parameters of a torch model, shared (tied) tensors counted once."""
    return sum(p.numel() for p in model.parameters())  # parameters() already skips duplicates


def bits_per_weight(n_bytes: int, n_params: int) -> float:
    """8 * bytes / parameters; NaN without parameters."""
    return 8 * n_bytes / n_params if n_params else math.nan


def gguf_figures(path: Path) -> tuple[str, float]:
    """(file type, 8 * file bytes / elements) from auditor.gguf_info."""
    from auditor.gguf_info import read_gguf_info

    info = read_gguf_info(path)
    return info.file_type, info.bits_per_weight_file


# ---------------------------------------------------------------- the worker

def worker_request(runtime: str, path: Path, workload: Workload, settings: MeasureSettings) -> dict:
    return {
        "runtime": runtime, "path": str(path), "prompt_ids": list(workload.prompt_ids),
        "new_tokens": settings.new_tokens, "repeats": settings.repeats, "n_threads": settings.threads(),
        "n_ctx": settings.n_ctx, "pad_id": workload.pad_id, "letter_ids": list(workload.letter_ids),
        "bbq_groups": [{"item_id": g.item_id, "perms": [list(p) for p in g.perms],
                        "prefix_ids": list(g.prefix_ids), "suffix_ids": [list(s) for s in g.suffix_ids]}
                       for g in workload.groups],
    }


def run_worker(runtime: str, path: Path, workload: Workload, settings: MeasureSettings) -> dict:
    """Measure `path` in a fresh `python -m auditor.measure_worker` process; return its raw result."""
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(worker_request(runtime, path, workload, settings)))
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "auditor.measure_worker", str(req), str(res)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=settings.worker_timeout_s)
        except subprocess.TimeoutExpired:
            raise AuditorError(f"{path}: measurement in {runtime} took longer than "
                               f"{settings.worker_timeout_s:.0f}s") from None
        if done.returncode != 0 or not res.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise AuditorError(f"{path}: measurement in {runtime} failed (exit {done.returncode}):\n{tail}")
        return json.loads(res.read_text())


def runtime_row(base: Measurement, result: dict) -> Measurement:
    """`base` (sizes) with the worker's timings turned into spreads."""
    return replace(
        base, load_s=Spread.of(result["load_s"]), peak_rss_bytes=int(result["peak_rss_bytes"]),
        rss_before_load_bytes=int(result["rss_before_load_bytes"]),
        prefill_tokens_per_s=rates(result["n_prompt_tokens"], result["prefill_s"]),
        decode_tokens_per_s=rates(result["new_tokens"], result["decode_s"]),
        bbq_ms_per_item=result["bbq_ms_per_item"],
    )


# ---------------------------------------------------------------- variants and exports

def variant_family(steps: Sequence) -> str:
    families = [s.family for s in steps]
    if not families:
        return DENSE
    return "+".join(f for f in ("prune", "quantize") if f in families)


def is_bnb(model) -> bool:
    """A transformers model quantized at load time (bitsandbytes): it has no float weights to export."""
    return getattr(model.config, "quantization_config", None) is not None or bool(getattr(model, "is_quantized", False))


def export_formats(variant) -> tuple[tuple[str, ...], str]:
    """The formats a variant can be written in, and a note on what it cannot be."""
    if variant.model is None:
        return ("gguf",), "GGUF only (llama.cpp quantized types have no safetensors form)"
    if is_bnb(variant.model):
        return ("safetensors",), NO_GGUF_NOTE
    return FORMATS, ""


def build_variant(spec: str, steps: Sequence, dense_model, calibration, seed: int, workdir: Path):
    """Apply `steps` to a deepcopy of the dense model, as auditor.audit.run_audit does."""
    from compressors.base import Variant

    variant = Variant(DENSE, model=copy.deepcopy(dense_model) if steps else dense_model)
    for step in steps:
        variant = step.apply(variant, calibration=calibration, seed=seed, workdir=workdir)
    return variant


def export_safetensors(variant, tokenizer, out: Path) -> Path:
    """An HF directory (config, safetensors weights, tokenizer) at `out`."""
    from auditor.export.safetensors_dir import save_hf_dir

    _require(variant, "safetensors")
    return save_hf_dir(variant.model, tokenizer, out)


def export_gguf(variant, gguf_tokenizer, out: Path, outtype: str = "f16") -> Path:
    """A GGUF file at `out`: float variants as F16 (or F32), gguf-* variants copied in their own type."""
    _require(variant, "gguf")
    if variant.model is None:
        if Path(variant.gguf_path).resolve() != Path(out).resolve():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(variant.gguf_path, out)
        return out
    from auditor.export.gguf_writer import write_gguf

    return write_gguf(variant.model, out, tokenizer=gguf_tokenizer, outtype=outtype, name=variant.spec).path


def export_sparse(variant, tokenizer, out: Path, *, zstd_level: int, hf_dir: Path | None = None):
    """The sparse directory (bitmask and CSR layouts, zstd of the dense file) at `out`; from `hf_dir`
    when the variant's safetensors directory already exists, else via a temporary one."""
    from auditor.export.sparse import write_sparse_dir

    _require(variant, "sparse")
    if hf_dir is not None:
        return write_sparse_dir(hf_dir, out, zstd_level=zstd_level)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sparse-src-", dir=out.parent) as tmp:
        return write_sparse_dir(export_safetensors(variant, tokenizer, Path(tmp) / "hf"), out, zstd_level=zstd_level)


def _require(variant, fmt: str) -> None:
    formats, note = export_formats(variant)
    if fmt not in formats:
        raise AuditorError(f"{variant.spec}: cannot be exported as {fmt}: {note}")


def _gguf_note(variant) -> str:
    """The quantizer's fallback note (K-quant types replaced), when there is one."""
    for step in variant.steps:
        fallback = (step.measured or {}).get("fallback")
        if fallback:
            return f"fallback: {fallback.get('note', fallback)}"
    return ""


def measure_variant(spec: str, steps: Sequence, variant, *, tokenizer, gguf_tokenizer, n_params: int,
                    workload: Workload, settings: MeasureSettings,
                    workdir: Path) -> tuple[list[Measurement], list[str]]:
    """Export `variant` in each applicable requested format and measure each; return rows and notes."""
    family = variant_family(steps)
    possible, why = export_formats(variant)
    wanted = [f for f in settings.formats if f in possible]
    notes = [f"{spec}: {why}"] if why else []
    rows: list[Measurement] = []
    hf_dir = None
    if "safetensors" in wanted or "sparse" in wanted:
        hf_dir = _timed(f"{spec}: safetensors export", export_safetensors, variant, tokenizer, workdir / "hf")
        weights = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors"))
        base = Measurement(spec, family, "safetensors", _torch_layout(variant.model), "torch", str(hf_dir),
                           artifact_size(hf_dir), bits_per_weight(weights, n_params))
        if "safetensors" in wanted:
            rows.append(runtime_row(base, _timed(f"{spec}: torch measurement", run_worker, "torch", hf_dir,
                                                 workload, settings)))
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
        rows.append(runtime_row(base, _timed(f"{spec}: llama.cpp measurement", run_worker, "llama.cpp", path,
                                             workload, settings)))
    skipped = [f for f in settings.formats if f not in possible]
    if skipped and not why:
        notes.append(f"{spec}: {', '.join(skipped)} not applicable")
    return rows, notes


def _timed(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), logging its wall time: the budget is minutes, so say where they go."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    log.info("%s: %.1fs", what, time.perf_counter() - start)
    return result


def _torch_layout(model) -> str:
    """float32 / bfloat16 for float models; "bitsandbytes int8" / "bitsandbytes nf4" for bnb ones."""
    quant = getattr(model.config, "quantization_config", None)
    if quant is None:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    get = quant.get if isinstance(quant, dict) else lambda k, d=None: getattr(quant, k, d)
    if get("load_in_8bit", False):
        kind = "int8"
    elif get("load_in_4bit", False):
        kind = get("bnb_4bit_quant_type", "4bit")
    else:
        kind = ""
    method = get("quant_method", "quantized")
    return f"{getattr(method, 'value', method)} {kind}".strip()  # QuantizationMethod is an str Enum


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


def load_dense(model: str | None):
    """(source, tokenizer, dense model) through auditor.models."""
    from auditor.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(model)
    return source, load_tokenizer(source), load_model(source)


def measure(specs: Sequence[str], *, model: str | None = None, settings: MeasureSettings = MeasureSettings(),
            out_dir: Path | None = None, keep_artifacts: bool = False) -> MeasureReport:
    """Build, export and measure every variant (dense first, added when absent).

    With `out_dir`: writes measurements.json (everything, claims included) and
    measurements/<variant_id>__<backend>.json per runtime row (the files a run
    directory's report reads); artifacts stay in out_dir/artifacts/measure when
    `keep_artifacts`, else they live in a temporary directory removed variant by variant.
    """
    from compressors.base import variant_id
    from compressors.calibration import load_calibration
    from compressors.registry import parse_chain

    settings.check()
    start = time.perf_counter()
    ordered = [DENSE, *dict.fromkeys(s.strip() for s in specs if s.strip() != DENSE)]
    chains = {spec: parse_chain(spec) for spec in ordered}  # bad specs fail before any work
    load_before = _warn_if_busy(settings.threads())
    source, tokenizer, dense = load_dense(model)
    workload = build_workload(tokenizer, settings.bbq_items)
    gguf_tokenizer = None
    if "gguf" in settings.formats:
        from auditor.export.gguf_writer import tokenizer_for_model

        gguf_tokenizer = tokenizer_for_model(dense)
    report = MeasureReport({"name": source.name, "path": str(source.path), "kind": source.kind,
                            "reference_precision": source.reference_precision},
                           settings, workload, count_parameters(dense))
    keep = keep_artifacts and out_dir is not None
    root = Path(out_dir) / "artifacts" / "measure" if keep else Path(tempfile.mkdtemp(prefix="auditor-measure-"))
    calibration = None
    try:
        for spec in ordered:
            workdir = root / variant_id(spec)
            workdir.mkdir(parents=True, exist_ok=True)
            if calibration is None and any(s.needs_calibration for s in chains[spec]):
                calibration = load_calibration(tokenizer, settings.calib, n_samples=settings.calib_samples,
                                               seq_len=settings.calib_seq_len, seed=settings.compress_seed)
            t0 = time.perf_counter()
            variant = build_variant(spec, chains[spec], dense, calibration, settings.compress_seed,
                                    workdir / "compress")
            log.info("%s: built in %.1fs", spec, time.perf_counter() - t0)
            rows, notes = measure_variant(spec, chains[spec], variant, tokenizer=tokenizer,
                                          gguf_tokenizer=gguf_tokenizer, n_params=report.n_params,
                                          workload=workload, settings=settings, workdir=workdir)
            # Paths relative to the artifacts folder, which is temporary unless kept.
            report.rows.extend(replace(r, path=str(Path(r.path).relative_to(root))) for r in rows)
            report.notes.extend(notes)
            log.info("%s: measured (%.0fs so far)", spec, time.perf_counter() - start)
            del variant
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    report.wall_s = time.perf_counter() - start
    report.artifacts_dir = str(root) if keep else None
    report.load_average = {"start": load_before, "end": _load_average()}
    if out_dir is not None:
        write_measurements(report, Path(out_dir))
    return report


def json_safe(obj: Any) -> Any:
    """NaN and infinities become None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_measurements(report: MeasureReport, out_dir: Path) -> Path:
    """measurements.json plus measurements/<variant_id>__<backend>.json for each runtime row."""
    from auditor.audit import write_json
    from compressors.base import variant_id

    doc = report.to_json()
    write_json(doc, out_dir / "measurements.json")
    for row in doc["measurements"]:
        if row["runtime"] is None:
            continue
        unit = f"{variant_id(row['variant'])}__{row['runtime']}"
        write_json({**row, "spec": row["variant"], "backend": row["runtime"]},
                   out_dir / "measurements" / f"{unit}.json")
    return out_dir / "measurements.json"


def export_variant(spec: str, fmt: str, out: Path, *, model: str | None = None, outtype: str | None = None,
                   calib: str | None = None, zstd_level: int = 3, seed: int = 0) -> dict:
    """Build `spec` from the dense model and write it in `fmt` at `out`; return what was written.

    safetensors: an HF directory; gguf: one file (F16 by default for float variants,
    F32 with outtype "f32"; gguf-* variants in their own type); sparse: a directory with
    the bitmask and CSR layouts and the zstd'd dense file (see auditor.export.sparse).
    """
    from compressors.calibration import load_calibration
    from compressors.registry import parse_chain

    if fmt not in FORMATS:
        raise AuditorError(f"--format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if outtype is not None and (fmt != "gguf" or outtype not in ("f16", "f32")):
        raise AuditorError(f"--outtype {outtype!r}: applies to --format gguf only, as f16 or f32")
    check_zstd_level(zstd_level)
    steps = parse_chain(spec)
    source, tokenizer, dense = load_dense(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        calibration = (load_calibration(tokenizer, calib, seed=seed)
                       if any(s.needs_calibration for s in steps) else None)
        variant = build_variant(spec, steps, dense, calibration, seed, Path(tmp) / "compress")
        record: dict[str, Any] = {"spec": spec, "format": fmt, "model": source.describe()}
        if fmt == "safetensors":
            path = export_safetensors(variant, tokenizer, out)
            record["layout"] = _torch_layout(variant.model)
        elif fmt == "gguf":
            if variant.model is None and outtype is not None:
                raise AuditorError(f"{spec}: already quantized by llama.cpp; --outtype applies to float variants")
            from auditor.export.gguf_writer import tokenizer_for_model

            gguf_tok = tokenizer_for_model(dense) if variant.model is not None else None
            path = export_gguf(variant, gguf_tok, out, outtype or "f16")
            record["layout"], record["bits_per_weight"] = gguf_figures(path)
        else:
            export = export_sparse(variant, tokenizer, out, zstd_level=zstd_level)
            path = export.out_dir
            record["layouts"] = {f.layout: {"file": f.path.name, "size_bytes": export.size_bytes(f.layout),
                                            "matrices_encoded": f.n_encoded} for f in export.files}
            record["layouts"][f"zstd-{zstd_level}"] = {"file": export.zstd_files[0].name,
                                                       "size_bytes": export.size_bytes("zstd")}
            record["dense_size_bytes"] = export.dense_weights_bytes + export.other_bytes
    record.update(path=str(path), size_bytes=artifact_size(path))
    return json_safe(record)
