"""Study files: a TOML description of models x compressor specs x seeds, validated before any work.

A study names models, compressor specs (explicit `variants` and `method x level`
grids), answer-order seeds, the BBQ selection, calibration and perplexity
corpora, the runtimes to score on, execution settings, report thresholds, the
[decision] constraints a variant must meet to ship and the [measure] table (size
and speed of every variant, measured inside the run).
Parsing rejects unknown keys and wrong types (naming the file and the key) and
parses every compressor spec with `compressors.registry.parse_chain`, so a typo
fails in a second, not after an hour of compression.

Relative paths in a study file are resolved against the file's folder. The
study hash is sha256 of the canonical JSON of the settings that can change a
record (`Study.results_definition`); where results go, how units are executed,
the report thresholds, the [decision] constraints and the [measure] table are left
out, so a run can be resumed on another executor or judged with other thresholds
or budgets without being redone (the measurement unit's own key covers [measure]).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from auditor.analysis.verdicts import (
    ELEVATED,
    HIGH,
    LOW,
    NOT_SHOWN,
    GateThresholds,
    RiskThresholds,
    thresholds_from_mapping,
)
from auditor.artifacts.precision import DTYPES, FLOAT32
from auditor.core.errors import SpecError
from auditor.core.names import DENSE, normalize_spec, split_mask_seed, with_mask_seed
from auditor.data.bbq import CATEGORIES
from auditor.data.prompts import CYCLIC_SEEDS, MAX_SEEDS, seed_problem
from auditor.data.records import CLOZE, DEBIASED, GENERATIVE, PROTOCOLS, SAMPLED, STRICT
from auditor.measure.exports import FORMATS
from auditor.scoring.generative import GenerationSettings
from auditor.scoring.perplexity import DEFAULT_KLD_TOKENS, DEFAULT_MAX_LENGTH, DEFAULT_MAX_TOKENS, DEFAULT_STRIDE
from compressors.registry import REGISTRY, parse_chain

DEFAULT_MODEL = "smollm2"
BACKENDS = ("auto", "torch", "llama.cpp")
EXECUTORS = ("local", "ray")
CONDITIONS = ("ambig", "disambig", "both")


@dataclass(frozen=True)
class DataSettings:
    """Which BBQ items: `bbq` None means $AUDITOR_BBQ_DIR, then the fixture sample."""

    bbq: str | None = None
    categories: tuple[str, ...] | None = None
    condition: str = "both"
    n_items: int | None = None
    sample_seed: int = 0
    partners: bool = False  # with condition "ambig": add each sampled item's disambiguated partner


@dataclass(frozen=True)
class CalibrationSettings:
    """Calibration windows for activation-aware methods (Wanda); corpus None = WikiText-2 valid or fixture."""

    corpus: str | None = None
    n_samples: int = 32
    seq_len: int = 256


@dataclass(frozen=True)
class PerplexitySettings:
    """Sliding-window perplexity per variant; corpus None = WikiText-2 test or the fixture text."""

    corpus: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    stride: int = DEFAULT_STRIDE
    max_tokens: int = DEFAULT_MAX_TOKENS
    kld_tokens: int = DEFAULT_KLD_TOKENS  # dense rows kept for the full-vocabulary KLD (auditor.analysis.kld)


@dataclass(frozen=True)
class ExecutionSettings:
    """How units are run. Only shards, batch_size, device, threads and dtype can change a record.

    `dtype` is the compute precision of torch scoring (auditor.artifacts.precision): float32,
    bfloat16, float16 or auto (bfloat16 where the hardware multiplies it natively).
    """

    executor: str = "local"
    ray_address: str | None = None
    cpus_per_unit: float = 1.0
    gpus_per_unit: float = 0.0
    shards: int = 1
    batch_size: int = 16
    device: str = "cpu"
    threads: int | None = None
    keep_artifacts: bool = False
    dtype: str = FLOAT32


@dataclass(frozen=True)
class MeasureOptions:
    """[measure]: size, bits per weight, load time, TTFT, prefill and decode tokens/s and peak memory of every
    variant, measured by `auditor run` after its scoring units (one unit: auditor.measure.measurement, timings
    interleaved across variants). The keys are `auditor measure`'s flags; `enabled = false` keeps the table
    but plans no unit. threads None: the study's [execution] threads, else every core."""

    enabled: bool = True
    repeats: int = 3
    formats: tuple[str, ...] = FORMATS
    new_tokens: int = 16
    threads: int | None = None
    bbq_items: int = 8


@dataclass(frozen=True)
class Study:
    """A parsed, validated study. `variants` are expanded specs with the dense reference first."""

    name: str
    output_dir: str
    models: tuple[str, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    protocols: tuple[str, ...] = (STRICT,)  # scoring protocols; the first is the report's primary analysis
    compress_seed: int = 0
    mask_seeds: tuple[int, ...] = ()  # random@ specs run once per mask seed, as SPEC#seedS
    calib_seeds: tuple[int, ...] = ()  # data-dependent specs (Wanda) run once per calibration draw, as SPEC#seedS
    backends: tuple[str, ...] = ("auto",)
    null_baselines: bool = True
    data: DataSettings = field(default_factory=DataSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    perplexity: PerplexitySettings | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # the free-text protocols'
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    thresholds: dict[str, float] = field(default_factory=dict)
    # [decision]: the constraints a variant must meet to ship, by auditor.view.decision.Constraints field
    # (max_size_bytes, min_decode_tokens_per_s, ...); `auditor decide RUN` and the report read them.
    decision: dict[str, float | str] = field(default_factory=dict)
    measure: MeasureOptions | None = None  # [measure]; None: no table (`auditor measure --out RUN` still works)
    chat_template: str | None = None  # a Jinja chat template file; None: the model's own, else the plain format
    # Not part of the study's definition: where relative paths start, and the CLI-only switch.
    base_dir: str = "."
    source: str = "<in memory>"
    trust_remote_code: bool = False

    def path(self, value: str) -> Path:
        """A path from the study, resolved against the study file's folder."""
        p = Path(value).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else Path(self.base_dir) / p))

    def results_definition(self) -> dict[str, Any]:
        """Every setting that can change a record or a perplexity figure (what the hash covers).

        Of the protocols only cloze is scored (debiased rows are derived when a run is read).
        """
        cloze = {"cloze": True} if CLOZE in self.protocols else {}
        text = [p for p in self.protocols if p in (GENERATIVE, SAMPLED)]
        if text:  # generated answers are scored: a study without them keeps its hash
            cloze |= {"text_protocols": text, "generation": asdict(self.generation)}
        return {**cloze,
            "models": list(self.models), "variants": list(self.variants), "seeds": list(self.seeds),
            "compress_seed": self.compress_seed, "backends": list(self.backends),
            "null_baselines": self.null_baselines, "data": _data_definition(self.data),
            "calibration": asdict(self.calibration),
            "perplexity": perplexity_definition(self.perplexity),
            "execution": {k: getattr(self.execution, k) for k in ("shards", "batch_size", "device", "threads")}
            # float32 (the default) is left out, so studies written before the setting keep their hash.
            | ({"dtype": self.execution.dtype} if self.execution.dtype != FLOAT32 else {}),
            **({"chat_template": self.chat_template} if self.chat_template else {}),
        }

    @property
    def hash(self) -> str:
        return study_hash(self.results_definition())

    def to_json(self) -> dict[str, Any]:
        """The whole parsed study (for the manifest)."""
        out = _plain(asdict(self))
        out.pop("trust_remote_code")
        return out


def perplexity_definition(settings: PerplexitySettings | None) -> dict[str, Any] | None:
    """[perplexity] as the study hash and the perplexity units' keys see it: kld_tokens = 0 (the default) is
    left out, so studies and units written before the setting keep their hashes."""
    if settings is None:
        return None
    out = asdict(settings)
    if not out["kld_tokens"]:
        del out["kld_tokens"]
    return out


def study_hash(definition: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of a results definition."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --- reading -------------------------------------------------------------------


class _Table:
    """One TOML table being read: typed getters, and unknown keys rejected at `done()`."""

    def __init__(self, data: Any, where: str, file: str) -> None:
        if not isinstance(data, dict):
            raise SpecError(f"{file}: {where} must be a table")
        self.data, self.where, self.file, self.used = data, where, file, set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.file}: {self._key(key)}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            check: Callable[[Any], str | None] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML integers are valid floats; booleans are never numbers.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_name(kinds)}, got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        if check is not None and (problem := check(value)):
            raise self.fail(key, problem)
        return value

    def get_list(self, key: str, item: type | tuple[type, ...], default: Any = None,
                 check: Callable[[Any], str | None] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = item if isinstance(item, tuple) else (item,)
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        for v in value:
            if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
                raise self.fail(key, f"expected a list of {_kind_name(kinds)}, found {v!r}")
            if check is not None and (problem := check(v)):
                raise self.fail(key, problem)
        return value

    def sub(self, key: str) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            return None
        return _Table(self.data[key], self._key(key), self.file)

    def done(self, hints: dict[str, str] | None = None) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            k = unknown[0]
            hint = (hints or {}).get(k, "")
            valid = ", ".join(sorted(self.used))
            raise self.fail(k, f"unknown key{(' (' + hint + ')') if hint else ''}; valid keys here: {valid}")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be positive, got {v}"


def _at_least_2(v: Any) -> str | None:
    return None if v >= 2 else f"must be at least 2, got {v}"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


#: Largest compression or mask seed: torch, numpy and llama.cpp all take a 32-bit unsigned seed.
MAX_SEED = 2**32 - 1
#: Largest batch of prompts scored at once (a larger one would only exhaust memory).
MAX_BATCH_SIZE = 65536


def _seed(v: Any) -> str | None:
    return None if 0 <= v <= MAX_SEED else f"must be in [0, {MAX_SEED}] (a 32-bit seed), got {v}"


def _batch_size(v: Any) -> str | None:
    return None if 0 < v <= MAX_BATCH_SIZE else f"must be in [1, {MAX_BATCH_SIZE}], got {v}"


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def load_study(path: str | Path) -> Study:
    """Parse and validate a study file; every problem raises SpecError naming the file and key."""
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"{file}: no such study file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{file}: invalid TOML: {exc}") from None
    return parse_study(data, source=str(file), base_dir=str(file.resolve().parent))


def parse_study(data: dict[str, Any], *, source: str = "<in memory>", base_dir: str = ".") -> Study:
    """Build a Study from a parsed TOML document (or an equivalent dict)."""
    top = _Table(data, "", source)
    name = top.get("name", str, check=_non_empty)
    if name is None:
        raise top.fail("name", "is required (the run name; the run directory is OUTPUT_DIR/NAME)")
    output_dir = top.get("output_dir", str, "reports", check=_non_empty)
    models = top.get_list("models", str, [DEFAULT_MODEL], check=_non_empty)
    if not models:
        raise top.fail("models", "needs at least one model")
    if len(set(models)) != len(models):
        raise top.fail("models", f"lists a model twice: {models}")
    seeds = top.get_list("seeds", int, [0])
    if not seeds:
        raise top.fail("seeds", "needs at least one seed (0 = dataset answer order)")
    if len(seeds) > MAX_SEEDS:
        raise top.fail("seeds", f"{len(seeds)} seeds asked, but three options have only {MAX_SEEDS} answer orders "
                                "(seeds 0-2: the cyclic rotations, 3-5: their reflections)")
    for s in seeds:
        if (problem := seed_problem(s)) is not None:
            raise top.fail("seeds", problem)
    if len(set(seeds)) != len(seeds):
        raise top.fail("seeds", f"seeds must be distinct, got {seeds}")
    protocols = _protocols(top, seeds)
    backends = top.get_list("backends", str, ["auto"])
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise top.fail("backends", f"{bad or backends!r}: valid backends are {', '.join(BACKENDS)}")
    null_baselines = top.get("null_baselines", bool, True)
    chat_template = top.get("chat_template", str, None, check=_non_empty)

    data_t = top.sub("data") or _Table({}, "data", source)
    settings = _data_settings(data_t)
    comp = top.sub("compression") or _Table({}, "compression", source)
    variants, compress_seed, mask_seeds, calib_seeds = _compression(comp)
    calib = _calibration(top.sub("calibration") or _Table({}, "calibration", source))
    ppl_t = top.sub("perplexity")
    ppl = _perplexity(ppl_t) if ppl_t is not None else None
    generation = _generation(top.sub("generation") or _Table({}, "generation", source), protocols)
    execution = _execution(top.sub("execution") or _Table({}, "execution", source))
    thresholds = _thresholds(top.sub("thresholds") or _Table({}, "thresholds", source))
    decision = _decision(top.sub("decision") or _Table({}, "decision", source))
    measure_t = top.sub("measure")
    measure = _measure(measure_t) if measure_t is not None else None
    top.done({"trust_remote_code": "remote model code is enabled only by the CLI flag --trust-remote-code",
              "variant": "did you mean [compression] variants?", "levels": "put it in a [[compression.grid]] table",
              "methods": "put it in a [[compression.grid]] table", "categories": "put it in the [data] table",
              "n_items": "put it in the [data] table", "corpus": "set [calibration] corpus or [perplexity] corpus"})

    study = Study(
        name=name, output_dir=output_dir, models=tuple(models), variants=variants, seeds=tuple(seeds),
        protocols=protocols, compress_seed=compress_seed, mask_seeds=mask_seeds, calib_seeds=calib_seeds,
        backends=tuple(backends), null_baselines=null_baselines, data=settings, calibration=calib, perplexity=ppl,
        generation=generation, execution=execution,
        thresholds=thresholds, decision=decision, measure=measure, base_dir=base_dir, source=source, chat_template=chat_template,
    )
    check_variants(study)
    return study


def _protocols(top: _Table, seeds: list[int]) -> tuple[str, ...]:
    """Scoring protocols: strict (letters under each order), debiased (needs seeds 0-2), cloze (harness)."""
    def known(p: str) -> str | None:
        return None if p in PROTOCOLS else f"unknown protocol {p!r}; valid: {', '.join(PROTOCOLS)}"

    protocols = top.get_list("protocols", str, [STRICT], check=known)
    if not protocols or len(set(protocols)) != len(protocols):
        raise top.fail("protocols", f"needs distinct protocols, got {protocols}")
    if DEBIASED in protocols and not set(CYCLIC_SEEDS) <= set(seeds):
        raise top.fail("protocols", f"'{DEBIASED}' averages the three cyclic answer orders: seeds must include "
                                    f"{', '.join(map(str, CYCLIC_SEEDS))} (got {seeds})")
    return tuple(protocols)


def _data_definition(data: DataSettings) -> dict[str, Any]:
    # partners = false (the default) is left out, so studies written before the setting keep their hash.
    plain = _plain(asdict(data))
    if not data.partners:
        plain.pop("partners")
    return plain


def _data_settings(t: _Table) -> DataSettings:
    def known(c: str) -> str | None:
        return None if c in CATEGORIES else f"unknown category {c!r}; valid: {', '.join(CATEGORIES)}"

    out = DataSettings(
        bbq=t.get("bbq", str, None, check=_non_empty),
        categories=tuple(cats) if (cats := t.get_list("categories", str, None, check=known)) else None,
        condition=t.get("condition", str, "both",
                        check=lambda c: None if c in CONDITIONS else f"{c!r} is not one of {', '.join(CONDITIONS)}"),
        n_items=t.get("n_items", int, None, check=_positive),
        sample_seed=t.get("sample_seed", int, 0, check=_non_negative),
        partners=t.get("partners", bool, False),
    )
    if out.partners and out.condition != "ambig":
        raise t.fail("partners", f"needs condition = \"ambig\" (the sample is drawn from ambiguous items and each "
                           f"one's disambiguated partner is added), not {out.condition!r}")
    t.done()
    return out


def _level_text(level: Any) -> str:
    if isinstance(level, float):
        if not math.isfinite(level):
            raise ValueError(f"level {level} is not finite")
        return f"{level:g}"
    return str(level).strip()


def _compression(t: _Table) -> tuple[tuple[str, ...], int, tuple[int, ...], tuple[int, ...]]:
    specs: list[str] = [DENSE]
    for spec in t.get_list("variants", str, [], check=_non_empty):
        specs.append(normalize_spec(spec))
    grids = t.data.get("grid", [])
    t.used.add("grid")
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise t.fail("grid", "must be an array of tables ([[compression.grid]] with methods and levels)")
    for i, raw in enumerate(grids, start=1):
        g = _Table(raw, f"{t.where}.grid[{i}]", t.file)
        methods = g.get_list("methods", str, None, check=_non_empty)
        levels = g.get_list("levels", (int, float, str), None)
        then = g.get("then", str, None, check=_non_empty)
        g.done({"method": "did you mean methods?", "level": "did you mean levels?"})
        if not methods or not levels:
            raise g.fail("methods" if not methods else "levels", "is required and must not be empty")
        for method in methods:
            for level in levels:
                try:
                    text = _level_text(level)
                except ValueError as exc:
                    raise g.fail("levels", str(exc)) from None
                specs.append(normalize_spec(f"{method}@{text}" + (f"+{then}" if then else "")))
    seed = t.get("seed", int, 0, check=_seed)
    mask_seeds = t.get_list("mask_seeds", int, [], check=_seed)
    if len(set(mask_seeds)) != len(mask_seeds):
        raise t.fail("mask_seeds", f"mask seeds must be distinct, got {mask_seeds}")
    calib_seeds = t.get_list("calib_seeds", int, [], check=_seed)
    if len(set(calib_seeds)) != len(calib_seeds):
        raise t.fail("calib_seeds", f"calibration seeds must be distinct, got {calib_seeds}")
    t.done({"methods": "put methods and levels in a [[compression.grid]] table",
            "levels": "put methods and levels in a [[compression.grid]] table"})
    for spec in specs:
        if "#" in spec:
            raise t.fail("variants", f"{spec!r}: '#' is reserved for mask seeds and calibration seeds; use "
                                     "[compression] mask_seeds or calib_seeds")
        if mask_seeds and calib_seeds and has_random_mask(spec) and needs_calibration(spec):
            raise t.fail("calib_seeds", f"{spec!r} draws both a random mask and calibration windows, and one "
                                        "variant seed drives both: set mask_seeds or calib_seeds, not both")
    unique = tuple(dict.fromkeys(specs))  # keep order, drop repeats
    if mask_seeds or calib_seeds:
        unique = tuple(v for spec in unique for v in (
            [with_mask_seed(spec, s) for s in mask_seeds] if mask_seeds and has_random_mask(spec) else
            [with_mask_seed(spec, s) for s in calib_seeds] if calib_seeds and needs_calibration(spec) else [spec]))
    return unique, seed, tuple(mask_seeds), tuple(calib_seeds)


def has_random_mask(spec: str) -> bool:
    """Whether a chain draws a random mask (a random@ step): the specs that mask_seeds repeat."""
    return any(part.strip().partition("@")[0] == "random" for part in spec.split("+"))


def needs_calibration(spec: str) -> bool:
    """Whether a chain has a data-dependent step (Wanda): the specs that calib_seeds repeat, one calibration
    draw each (the variant seed seeds the calibration windows). A spec that does not parse is False here;
    `check_variants` reports it with the study file's name."""
    try:
        return any(step.needs_calibration for step in parse_chain(spec))
    except (SpecError, ImportError):
        return False


def chain_of(variant: str) -> list:
    """The compressor steps of a variant name (a mask seed suffix is not part of the chain)."""
    return parse_chain(split_mask_seed(variant)[0])


def variant_seed(variant: str, compress_seed: int) -> int:
    """The compression seed a variant is built with: its mask or calibration seed (SPEC#seedS) when it has
    one, else the study's. It seeds the random mask and the calibration windows' draw."""
    seed = split_mask_seed(variant)[1]
    return compress_seed if seed is None else seed


def _calibration(t: _Table) -> CalibrationSettings:
    out = CalibrationSettings(
        corpus=t.get("corpus", str, None, check=_non_empty),
        n_samples=t.get("n_samples", int, CalibrationSettings.n_samples, check=_positive),
        seq_len=t.get("seq_len", int, CalibrationSettings.seq_len, check=_positive),
    )
    t.done()
    return out


#: Longest free-text answer asked for: an option's text is a few tokens, and each costs a decode step.
MAX_NEW_TOKENS = 256


def _generation(t: _Table, protocols: tuple[str, ...]) -> GenerationSettings:
    """[generation]: settings of the free-text protocols; the table needs one of them among the protocols."""
    d = GenerationSettings()
    out = GenerationSettings(
        max_new_tokens=t.get("max_new_tokens", int, d.max_new_tokens,
                             check=lambda v: None if 0 < v <= MAX_NEW_TOKENS else
                             f"must be in [1, {MAX_NEW_TOKENS}], got {v}"),
        samples=t.get("samples", int, d.samples, check=_positive),
        temperature=t.get("temperature", float, d.temperature,
                          check=lambda v: None if 0 < v <= 10 and math.isfinite(v) else
                          f"must be > 0 and <= 10 (greedy decoding is the '{GENERATIVE}' protocol), got {v}"),
        seed=t.get("seed", int, d.seed, check=_seed),
    )
    t.done()
    if t.data and not {GENERATIVE, SAMPLED} & set(protocols):
        raise t.fail(next(iter(t.data)), f"is set but no free-text protocol is scored: add '{GENERATIVE}' "
                                         f"(greedy) or '{SAMPLED}' to protocols")
    return out


def _perplexity(t: _Table) -> PerplexitySettings:
    d = PerplexitySettings()
    out = PerplexitySettings(
        corpus=t.get("corpus", str, None, check=_non_empty),
        max_length=t.get("max_length", int, d.max_length, check=_at_least_2),
        stride=t.get("stride", int, d.stride, check=_positive),
        max_tokens=t.get("max_tokens", int, d.max_tokens, check=_at_least_2),
        kld_tokens=t.get("kld_tokens", int, d.kld_tokens, check=_non_negative),
    )
    if out.stride > out.max_length:
        raise t.fail("stride", f"{out.stride} is larger than max_length {out.max_length} (tokens would be skipped)")
    t.done()
    return out


#: Largest `new_tokens` of [measure]: greedy decode steps per timed run (each costs a forward).
MAX_MEASURE_TOKENS = 4096


def _measure(t: _Table) -> MeasureOptions:
    """[measure]: `auditor measure`'s settings for the run's measurement unit (MeasureOptions)."""
    d = MeasureOptions()

    def known(f: str) -> str | None:
        return None if f in FORMATS else f"unknown format {f!r}; valid: {', '.join(FORMATS)}"

    formats = t.get_list("formats", str, list(d.formats), check=known)
    if not formats or len(set(formats)) != len(formats):
        raise t.fail("formats", f"needs distinct formats among {', '.join(FORMATS)}, got {formats}")
    out = MeasureOptions(
        enabled=t.get("enabled", bool, d.enabled),
        repeats=t.get("repeats", int, d.repeats, check=_positive),
        formats=tuple(formats),
        new_tokens=t.get("new_tokens", int, d.new_tokens,
                         check=lambda v: None if 0 < v <= MAX_MEASURE_TOKENS else
                         f"must be in [1, {MAX_MEASURE_TOKENS}], got {v}"),
        threads=t.get("threads", int, None, check=_positive),
        bbq_items=t.get("bbq_items", int, d.bbq_items, check=_non_negative),
    )
    t.done({"new-tokens": "spell it new_tokens", "bbq-items": "spell it bbq_items",
            "outtype": "float variants are measured as GGUF F16, what they ship as",
            "out": "the run directory is where the measurements go"})
    return out


def _execution(t: _Table) -> ExecutionSettings:
    d = ExecutionSettings()
    out = ExecutionSettings(
        executor=t.get("executor", str, d.executor,
                       check=lambda e: None if e in EXECUTORS else f"{e!r}: valid executors are {', '.join(EXECUTORS)}"),
        ray_address=t.get("ray_address", str, None) or None,
        cpus_per_unit=t.get("cpus_per_unit", float, d.cpus_per_unit, check=_non_negative),
        gpus_per_unit=t.get("gpus_per_unit", float, d.gpus_per_unit, check=_non_negative),
        shards=t.get("shards", int, d.shards, check=_positive),
        batch_size=t.get("batch_size", int, d.batch_size, check=_batch_size),
        device=t.get("device", str, d.device, check=_non_empty),
        threads=t.get("threads", int, None, check=_positive),
        keep_artifacts=t.get("keep_artifacts", bool, d.keep_artifacts),
        dtype=t.get("dtype", str, d.dtype,
                    check=lambda v: None if v in DTYPES else f"{v!r}: valid dtypes are {', '.join(DTYPES)}"),
    )
    t.done()
    return out


#: The gate's threshold names (auditor.analysis.verdicts.GateThresholds).
GATE_KEYS = frozenset(f.name for f in fields(GateThresholds))


def threshold_problem(key: str, value: float) -> str:
    """Why `value` cannot be threshold `key` ("" when it can): every threshold is a finite number, and the
    gate's (rates, accuracies, SRS changes and q-values, all fractions) lie in [0, 1]."""
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if key in GATE_KEYS and not 0 <= value <= 1:
        return f"must be >= 0 and <= 1 (a fraction), got {value:g}"
    return ""


def _thresholds(t: _Table) -> dict[str, float]:
    """Defaults for the report's verdicts and `auditor gate`: finite, the gate's in [0, 1], the report's
    validated by auditor.analysis.verdicts. Checked here, when the study is read, so a bad value fails before
    any run directory exists."""
    t.used.update(t.data)
    risk, gate = thresholds_from_mapping(t.data, f"{t.file}: [{t.where}]")
    for key, value in {**risk, **gate}.items():
        problem = threshold_problem(key, value)
        if problem:
            raise SpecError(f"{t.file}: [{t.where}] {key} {problem}")
    try:
        RiskThresholds(**risk)
        GateThresholds(**gate)
    except SpecError as exc:
        raise SpecError(f"{t.file}: {exc}") from None
    return {**risk, **gate}


# --- [decision]: the constraints a team ships under -------------------------------

#: [decision] keys -> (auditor.view.decision.Constraints field, kind). The keys are `auditor decide`'s flags
#: with "_" for "-" (--max-size -> max_size), the way [thresholds] spells `auditor gate`'s.
DECISION_KEYS = {
    "max_size": ("max_size_bytes", "size"),
    "min_decode_tps": ("min_decode_tokens_per_s", "number"),
    "max_peak_memory": ("max_peak_rss_bytes", "size"),
    "max_grade": ("max_grade", "grade"),
    "min_same_top": ("min_same_top", "share"),
    "max_kl": ("max_kl", "number"),
    "min_accuracy": ("min_accuracy", "share"),
}
#: Risk grades a max-grade constraint can name, least risky first (auditor.view.decision.GRADE_ORDER).
DECISION_GRADES = (LOW, NOT_SHOWN, ELEVATED, HIGH)
#: Size units (case-insensitive): decimal KB/MB/GB/TB, binary KiB/MiB/GiB/TiB; none = bytes.
SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str, where: str = "--max-size") -> float:
    """Bytes of "300MB", "1.5 GiB", "4096" (case-insensitive units); SpecError "WHERE 'TEXT': ..." otherwise."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in SIZE_UNITS):
        raise SpecError(f"{where} {text!r}: expected a size such as 300MB, 1.5GB or 512MiB "
                        "(units B, KB, MB, GB, KiB, MiB, GiB)")
    value = float(match.group(1)) * SIZE_UNITS.get(unit, 1)
    if not math.isfinite(value):
        raise SpecError(f"{where} {text!r}: must be a finite size")
    return value


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where} {value!r}: expected a number") from None
    if not (number >= 0 and math.isfinite(number)):  # NaN fails the first test
        raise SpecError(f"{where} {value!r}: must be a finite number >= 0")
    return number


def _share(value: Any, where: str) -> float:
    text = str(value).strip()
    share = _number(text[:-1], where) / 100 if text.endswith("%") else _number(value, where)
    if share > 1:
        raise SpecError(f"{where} {value!r}: a share is between 0 and 1 (or 0% and 100%)")
    return share


def _grade(value: Any, where: str) -> str:
    grade = " ".join(str(value).strip().lower().replace("-", " ").replace("_", " ").split())
    if grade not in DECISION_GRADES:
        raise SpecError(f"{where} {value!r}: valid grades are {', '.join(DECISION_GRADES)}")
    return grade


_PARSERS = {"size": parse_size, "number": _number, "share": _share, "grade": _grade}


def decision_value(key: str, value: Any, where: str) -> float | str:
    """A [decision] key's (or `auditor decide` flag's) value in the units of its Constraints field: bytes,
    tokens/s, a share in [0, 1], nats, or a grade name. Text as on the command line ("300MB", "80%",
    "not shown"); SpecError "WHERE 'VALUE': problem" (one line) when it is not finite or out of range."""
    return _PARSERS[DECISION_KEYS[key][1]](value, where)


def _decision(t: _Table) -> dict[str, float | str]:
    """[decision] as Constraints fields. TOML types per kind: a size is a string with its unit (a bare
    number would silently mean bytes), a grade a string, a share a number or "80%", the rest numbers."""
    out: dict[str, float | str] = {}
    kinds = {"size": str, "grade": str, "share": (float, str), "number": float}
    for key, (name, kind) in DECISION_KEYS.items():
        if key in t.data and kind == "size" and isinstance(t.data[key], (int, float)) \
                and not isinstance(t.data[key], bool):
            raise t.fail(key, f"{t.data[key]!r}: give the unit, e.g. {key} = \"300MB\" (B, KB, MB, GB, KiB, MiB, "
                              "GiB)")
        value = t.get(key, kinds[kind])
        if value is not None:
            out[name] = decision_value(key, value, f"{t.file}: [{t.where}] {key}")
    hints = {f"{k.replace('_', '-')}": f"spell it {k}" for k in DECISION_KEYS}
    hints.update({name: f"spell it {k}" for k, (name, _) in DECISION_KEYS.items() if name != k})
    hints.update({k: "a gate threshold: put it in [thresholds]" for k in GATE_KEYS if k not in DECISION_KEYS})
    t.done(hints)
    return out


# --- variants and runtimes ------------------------------------------------------


def chain_runtimes(spec: str) -> tuple[str, frozenset[str]]:
    """(natural runtime, runtimes it can be scored on) of a spec, from the registry without importing torch.

    A chain ending in a gguf-* quantizer exists only as a GGUF file (llama.cpp);
    a bitsandbytes model has no GGUF form (torch only); any other torch model can
    also be exported to GGUF F16 and scored by llama.cpp.
    """
    if spec == DENSE:
        return "torch", frozenset({"torch", "llama.cpp"})
    spec = split_mask_seed(spec)[0]
    targets = [REGISTRY[part.strip().partition("@")[0]].target for part in spec.split("+")]
    if targets[-1].startswith("compressors.gguf_quant:"):
        return "llama.cpp", frozenset({"llama.cpp"})
    if any(t.startswith("compressors.bnb:") for t in targets):
        return "torch", frozenset({"torch"})
    return "torch", frozenset({"torch", "llama.cpp"})


def backends_for(spec: str, backends: tuple[str, ...]) -> tuple[str, ...]:
    """The backends a spec is scored on: "auto" = its natural runtime, plus every listed one it supports."""
    natural, capable = chain_runtimes(spec)
    out = []
    for b in backends:
        chosen = natural if b == "auto" else b
        if chosen in capable and chosen not in out:
            out.append(chosen)
    return tuple(out)


def check_variants(study: Study) -> None:
    """Parse every spec (unknown compressors and out-of-range levels fail here) and check its backends."""
    for spec in study.variants:
        try:
            chain_of(spec)
        except SpecError as exc:
            raise SpecError(f"{study.source}: compression: {exc}") from None
        except ImportError as exc:
            raise SpecError(f"{study.source}: compression: {spec!r} cannot be used here: "
                            f"its compressor module is not available ({exc})") from None
        if not backends_for(spec, study.backends):
            natural, capable = chain_runtimes(spec)
            raise SpecError(f"{study.source}: backends: {spec!r} can be scored on {', '.join(sorted(capable))} only; "
                            f"backends = {list(study.backends)} includes none of them (add \"auto\" or \"{natural}\")")
