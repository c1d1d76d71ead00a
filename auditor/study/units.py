"""Units of work and the worker that computes them, whatever executor runs it.

A unit is (variant, backend, item shard) for BBQ scoring, (variant, backend)
for perplexity, or the measurement of every variant (a study's [measure]:
auditor.measure.measurement, which builds the variants itself). Computing a
unit returns its result to the caller and writes nothing into the run directory:
the runner commits every unit's files, so the local and the Ray executor share
one commit path and one lock holder.

A worker keeps the tokenizer and the prompts for every unit it computes, and the
most recently built variant, so the shards and backends of a variant computed in
a row build it once. Compressors are deterministic for a seed, so a variant
rebuilt in another process is the same model.

Memory (docs/memory.md): the worker holds one model at a time. The dense weights
live in a float32 safetensors folder (the source, or written once from a GGUF);
each variant, the dense one included, is a fresh memory-mapped load. A compressed
one whose first unit scores it in torch in a cheaper dtype is built block by block
straight into that dtype (`BlockWeights`: one float32 block at a time, when its one
compressor allows); any other is read into ordinary memory and compressed in place
in float32, and a torch backend in a cheaper dtype casts it in place, tensor by
tensor (the dense one straight from the file), so no second copy of the weights is
ever made.
A variant whose float32 weights were cast away and is then asked for them (the
float32 precision baseline, a llama.cpp F16 export after its torch units) is built
again, which gives the same model. Freed memory is handed back to the OS after
each variant.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor.analysis.baselines import DENSE_FLOAT32
from auditor.analysis.kld import BaseCollector, Comparison, KldBase, bytes_per_position, kld_positions, load_base
from auditor.artifacts.block_weights import BlockWeights
from auditor.artifacts.models import (DENSE_WEIGHTS_FOLDER, ModelSource, float32_weights_dir, load_model, load_tokenizer,
                                      read_weights_privately, return_freed_memory)
from auditor.artifacts.precision import FLOAT32, is_bnb_quantized, model_compute_dtype, torch_dtype
from auditor.core.errors import AuditorError
from auditor.core.names import DENSE, LLAMA_CPP, TORCH, variant_id
from auditor.core.rss import children_peak_bytes, reset_peak, vm_hwm_bytes
from auditor.data.bbq import BBQItem
from auditor.data.cloze import CLOZE_VERSION, cloze_requests
from auditor.data.prompt_format import CHAT, CHAT_VERSION, PromptFormat
from auditor.data.rundir import ARTIFACTS_DIR, MEASURE, PPL, SCORE, Unit, read_commit, verify_file
from auditor.measure.measurement import MeasureSettings, measure
from auditor.scoring.backends.factory import make_backend
from auditor.analysis.generative import score_text_protocol
from auditor.scoring.engine import PromptSet, score, score_cloze
from auditor.scoring.generative import TEXT_VERSION, GenerationSettings, build_text_prompts
from auditor.scoring.perplexity import corpus_token_ids, perplexity, scored_positions
from auditor.study.spec import CalibrationSettings, PerplexitySettings, chain_of, variant_seed
from compressors.calibration import load_calibration
from compressors.registry import build_on_load, can_stream

log = logging.getLogger(__name__)

# Test hook: seconds to sleep inside every unit after computing it and before returning it, so a
# test can kill the process while a unit is in progress (tests/study/test_resume.py).
SLOW_UNIT_ENV = "AUDITOR_TEST_SLOW_UNIT_S"


@dataclass(frozen=True)
class RunContext:
    """Everything a worker needs, as plain picklable data (it travels to Ray workers)."""

    key: str  # identifies this context in a worker's cache (study hash + fingerprints)
    run_dir: str
    source: ModelSource
    items: tuple[BBQItem, ...]
    seeds: tuple[int, ...]
    compress_seed: int
    batch_size: int
    device: str
    threads: int | None
    trust_remote_code: bool
    calibration: CalibrationSettings  # corpus resolved to an absolute path (or None)
    perplexity: PerplexitySettings | None  # corpus resolved to an absolute path (or None)
    keep_artifacts: bool
    cloze: bool = False  # also score the cloze protocol (auditor.data.cloze) in every scoring unit
    dtype: str = "float32"  # resolved torch compute dtype (auditor.artifacts.precision); never "auto"
    prompt_format: PromptFormat = PromptFormat(CHAT, CHAT_VERSION)
    text_protocols: tuple[str, ...] = ()  # free-text protocols scored in every scoring unit (generative, sampled)
    generation: GenerationSettings = GenerationSettings()
    measure: MeasureSettings | None = None  # the measurement unit's settings ([measure]); None: none planned
    measured: tuple[str, ...] = ()  # the specs it measures (the study's variants, a mask seed's spec once)


@dataclass
class UnitResult:
    """What a unit produced; the runner writes it."""

    unit: Unit
    descriptor: dict[str, Any]
    records: pd.DataFrame | None = None
    perplexity: dict[str, Any] | None = None
    kld_base: KldBase | None = None  # the dense perplexity unit's rows (auditor.analysis.kld), committed beside it
    error: str | None = None  # why the unit failed (then nothing else is set)
    measurements: Any = None  # the measurement unit's auditor.measure.measurement.MeasureReport
    peak_rss: dict[str, int | None] = field(default_factory=dict)  # `_UnitPeak.read()`, kept in the commit record


class _UnitPeak:
    """A unit's peak resident memory, for its commit record: this process's high-water mark reset when the unit
    starts (what it holds then, e.g. the variant kept from the shard before, plus what it adds), and an upper
    bound of the child processes it waited for (a converter, the measurement's timing workers) where it rose
    above any before (`children_peak_bytes`: a child counts this process's memory when it started). None
    where the mark cannot be reset (not Linux): the process's peak since it started would say nothing about
    the unit."""

    def __init__(self) -> None:
        self.reset = reset_peak()
        self.children_before = children_peak_bytes()

    def read(self) -> dict[str, int | None]:
        children = children_peak_bytes()
        return {"peak_rss_bytes": vm_hwm_bytes() if self.reset else None,
                "children_peak_rss_bytes": children if children > self.children_before else None}


def shard_indices(n_items: int, shard: int, n_shards: int) -> np.ndarray:
    """Item positions of shard k of n: contiguous, sizes differing by at most one (np.array_split)."""
    return np.array_split(np.arange(n_items), n_shards)[shard]


@dataclass
class _Built:
    spec: str
    variant: Any  # compressors.base.Variant
    workdir: Path
    backends: dict[str, Any] = field(default_factory=dict)
    cast_in_place: bool = False  # the variant's model was cast for torch scoring: its float32 weights are gone


class UnitWorker:
    """Computes units for one RunContext; loads the model once and keeps the latest variant."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._tokenizer = None
        self._weights: Path | None = None  # float32 safetensors folder of the dense weights
        self._prompts = None
        self._cloze = None
        self._text_prompts = None
        self._calibration = None
        self._corpus = None
        self._built: _Built | None = None
        if ctx.threads:
            import torch

            torch.set_num_threads(ctx.threads)

    # --- shared state, loaded on first use ---------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.ctx.source)
        return self._tokenizer

    def _dense_model(self):
        """A fresh float32 dense model, memory-mapped from the float32 weights folder.

        The folder is the source itself for a float32 HF directory, else written once
        into the run's artifacts (`float32_weights_dir`); each variant is built on its
        own fresh load, so the worker never holds the dense model beside a variant.
        """
        start = time.perf_counter()
        if self._weights is None:
            folder = Path(self.ctx.run_dir) / "artifacts" / f"{DENSE_WEIGHTS_FOLDER}.{os.getpid()}"
            self._weights = float32_weights_dir(self.ctx.source, folder, trust_remote_code=self.ctx.trust_remote_code)
            return_freed_memory()  # the loader's temporaries (a GGUF's dequantized copy)
        model = load_model(self.ctx.source, device=self.ctx.device, trust_remote_code=self.ctx.trust_remote_code,
                           weights=self._weights)
        log.info("loaded %s in %.1fs", self.ctx.source.describe(), time.perf_counter() - start)
        return model

    @property
    def prompts(self):
        if self._prompts is None:
            self._prompts = PromptSet.build(self.tokenizer, self.ctx.items, self.ctx.seeds,
                                            prompt_format=self.ctx.prompt_format)
        return self._prompts

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    def calibration(self, seed: int | None = None):
        """Calibration windows drawn with `seed` (default the study's compress seed; a variant's own seed
        when [compression] calib_seeds gave it one); the latest draw is kept for the next variant."""
        seed = self.ctx.compress_seed if seed is None else seed
        if self._calibration is None or self._calibration[0] != seed:
            c = self.ctx.calibration
            self._calibration = (seed, load_calibration(self.tokenizer, c.corpus, n_samples=c.n_samples,
                                                        seq_len=c.seq_len, seed=seed))
        return self._calibration[1]

    # --- units ---------------------------------------------------------------------------------

    def execute(self, unit: Unit) -> UnitResult:
        """Compute `unit`. A unit that cannot be built or scored for a stated reason (an AuditorError:
        e.g. a variant llama.cpp cannot convert) comes back failed with that reason, so the other
        units still run; any other exception is a bug and propagates."""
        log.info("unit %s: started", unit.id)
        start = time.perf_counter()
        peaks = _UnitPeak()
        try:
            if unit.kind == MEASURE:
                result = self._measure(unit, start)
                result.peak_rss = peaks.read()
                return result
            dtype = FLOAT32 if unit.variant == DENSE_FLOAT32 else self.ctx.dtype
            built = self._variant(unit.spec, unit.backend, dtype)
            backend = self._backend(built, unit.backend, dtype)
            built = self._built or built  # _backend may have rebuilt it
            if unit.kind == SCORE:
                result = self._score(unit, backend)
            else:
                result = self._perplexity(unit, backend)
        except AuditorError as exc:
            log.error("unit %s failed: %s", unit.id, exc)
            return UnitResult(unit, {"unit_wall_s": time.perf_counter() - start}, error=str(exc))
        result.descriptor.update({
            **built.variant.describe(), "variant": unit.variant, "spec": unit.spec,
            "backend": unit.backend, "unit": unit.name, "kind": unit.kind, "shard": unit.shard,
            "n_shards": unit.n_shards, "unit_wall_s": time.perf_counter() - start,
            "compute_dtype": getattr(backend, "compute_dtype", "gguf"),
        })
        result.peak_rss = peaks.read()
        _test_delay(unit)
        return result

    def _measure(self, unit: Unit, start: float) -> UnitResult:
        """Size and speed of every variant's artifacts (auditor.measure.measurement.measure: each variant built
        anew from the dense weights, exported, then timed in interleaved rounds in fresh processes). This
        worker's variant is dropped first: one model at a time. The scratch folder is in the run's artifacts/,
        where a killed run's leftovers are removed by the next start."""
        assert self.ctx.measure is not None, "the measurement unit is planned only when the study sets [measure]"
        self.release()
        scratch = Path(self.ctx.run_dir) / ARTIFACTS_DIR
        report = measure(self.ctx.measured, model=self.ctx.source, settings=self.ctx.measure, scratch=scratch)
        try:
            scratch.rmdir()  # artifacts/ itself, once empty
        except OSError:
            pass
        descriptor = {"variant": unit.variant, "unit": unit.name, "kind": unit.kind, "measure_wall_s": report.wall_s,
                      "unit_wall_s": time.perf_counter() - start}
        _test_delay(unit)
        return UnitResult(unit, descriptor, measurements=report)

    def _score(self, unit: Unit, backend) -> UnitResult:
        full = self.prompts
        idx = shard_indices(len(full.items), unit.shard, unit.n_shards)
        prompts = PromptSet(tuple(full.items[i] for i in idx), full.seeds, tuple(full.groups[i] for i in idx),
                            full.letter_ids, full.prompt_format)
        scored = score(backend, prompts, unit.variant)
        descriptor = {"prompt_template": prompts.prompt_format, "n_items": len(prompts.items),
                      "n_prompts": prompts.n_prompts, "scoring_wall_s": scored.wall_s, "ms_per_prompt": scored.ms_per_prompt,
                      "planned_tokens": scored.planned_tokens, "computed_tokens": scored.computed_tokens,
                      **_kernels(backend)}
        records = scored.records
        if self.ctx.cloze:
            if self._cloze is None:
                self._cloze = cloze_requests(self.tokenizer, self.ctx.items)
            cloze = score_cloze(backend, prompts.items, [self._cloze[i] for i in idx], unit.variant)
            records = pd.concat([records, cloze.records], ignore_index=True)
            descriptor.update(cloze=CLOZE_VERSION, cloze_wall_s=cloze.wall_s, cloze_ms_per_item=cloze.ms_per_prompt)
        if self.ctx.text_protocols:  # free-text answers (auditor.analysis.generative), same items and seeds
            if self._text_prompts is None:
                self._text_prompts = build_text_prompts(self.ctx.prompt_format.wrap(self.tokenizer), self.ctx.items,
                                                        self.ctx.seeds)
            n_seeds = len(self.ctx.seeds)
            shard = [p for i in idx for p in self._text_prompts[i * n_seeds:(i + 1) * n_seeds]]
            frames = [records]
            for protocol in self.ctx.text_protocols:
                text, figures = score_text_protocol(backend, self.tokenizer, shard, unit.variant, protocol,
                                                    self.ctx.generation)
                frames.append(text)
                descriptor.update(figures)
            records = pd.concat(frames, ignore_index=True)
            descriptor["text_prompt"] = TEXT_VERSION
        return UnitResult(unit, descriptor, records=records)

    def _perplexity(self, unit: Unit, backend) -> UnitResult:
        settings = self.ctx.perplexity
        assert settings is not None, "ppl units are planned only when the study sets [perplexity]"
        if self._corpus is None:  # the same token ids for every variant
            self._corpus = corpus_token_ids(self.tokenizer, settings.corpus, max_tokens=settings.max_tokens)
        scored = scored_positions(len(self._corpus.ids), settings.max_length, settings.stride,
                                  bos=self._corpus.bos_id is not None)
        at = kld_positions(scored, settings.kld_tokens)
        sink, kld = None, None
        if len(at) and unit.variant == DENSE:
            sink = BaseCollector()
        elif len(at):
            base, reference = self._kld_base(unit)
            sink = Comparison(base) if base is not None else None
            kld = {"reference": reference} if base is not None else {"problem": reference}
        res = perplexity(backend, self._corpus.ids, max_length=settings.max_length, stride=settings.stride,
                         bos_id=self._corpus.bos_id, rows_at=at, on_rows=sink)
        figures = {"variant": unit.variant, "backend": unit.backend, **res.as_dict(),
                   "corpus": self._corpus.origin, "max_tokens": settings.max_tokens}
        base = sink.base() if isinstance(sink, BaseCollector) else None
        if base is not None:
            figures["kld"] = {"reference": "this unit (the dense base)", "n_positions": len(base.positions),
                              "n_vocab": base.n_vocab, "bytes_per_position": bytes_per_position(base.n_vocab)}
        elif kld is not None:
            figures["kld"] = {**kld, **(sink.summary() if isinstance(sink, Comparison) else {})}
        return UnitResult(unit, {"ppl_wall_s": res.wall_s, **_kernels(backend)}, perplexity=figures, kld_base=base)

    def _kld_base(self, unit: Unit) -> tuple[KldBase | None, str]:
        """(the committed dense base, its unit's name) of dense on this unit's backend, else on torch; (None, why)
        when neither is committed and intact (dense's perplexity unit runs first in plan order; an --only run or
        a parallel executor can get here before it)."""
        run_dir = Path(self.ctx.run_dir)
        for dense in dict.fromkeys([Unit(PPL, DENSE, DENSE, unit.backend), Unit(PPL, DENSE, DENSE, TORCH)]):
            path = dense.kld_base_path(run_dir)
            rel = path.relative_to(run_dir).as_posix()
            commit = read_commit(run_dir, dense)
            if commit is None or rel not in commit["files"] or verify_file(path, rel, commit["files"][rel]):
                continue
            try:
                return load_base(path), dense.name
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable KLD base (%s)", path, exc)
        return None, ("KLD not computed: dense's perplexity unit had not committed its base (ppl/*.kld-base.npz) "
                      "when this unit ran (an --only run without dense, a parallel executor, or kld_tokens = 0); "
                      f"remove commits/{PPL}__{unit.name}.json and run again to compute it")

    # --- variants and backends -----------------------------------------------------------------

    def build(self, spec: str, backend: str = TORCH, dtype: str | None = None):
        """The variant `spec` (a compressors.base.Variant) as its first unit on `backend` in `dtype`
        (default: the run's) gets it, built now or kept from the last call."""
        return self._variant(spec, backend, dtype or self.ctx.dtype).variant

    def _variant(self, spec: str, backend: str, dtype: str) -> _Built:
        if self._built is not None and self._built.spec == spec:
            return self._built
        self.release()

        workdir = Path(self.ctx.run_dir) / "artifacts" / f"{variant_id(spec)}.{os.getpid()}"
        steps = chain_of(spec)
        seed = variant_seed(spec, self.ctx.compress_seed)
        calibration = self.calibration(seed) if any(s.needs_calibration for s in steps) else None
        model = self._dense_model()
        # Torch scoring in a cheaper dtype on the CPU (where the load is the file's mapping): block by
        # block into that dtype, one float32 block at a time. Otherwise compressed in place in float32,
        # in ordinary memory rather than the file's mapping (read_weights_privately).
        blocks = None
        if backend == TORCH and dtype != FLOAT32 and self.ctx.device == "cpu" and can_stream(steps):
            blocks = BlockWeights(self._weights, torch_dtype(dtype))
        variant = build_on_load(steps, model, self._weights, calibration=calibration, seed=seed, workdir=workdir,
                                blocks=blocks)
        if steps:
            log.info("built %s in %.1fs%s", spec, sum(s.wall_s for s in variant.steps),
                     f", block by block into {dtype}" if blocks is not None else "")
        self._built = _Built(spec, variant, workdir, cast_in_place=blocks is not None)
        return self._built

    def _backend(self, built: _Built, name: str, dtype: str = FLOAT32):
        key = f"{name}:{dtype}"  # the dense model is scored in the run's dtype and, as a baseline, in float32
        if key in built.backends:
            return built.backends[key]
        if built.cast_in_place and _needs_float32(built.variant, name, dtype):
            log.info("%s: built again, its float32 weights were cast to %s for torch scoring",
                     built.spec, model_compute_dtype(built.variant.model))
            self.release()
            built = self._variant(built.spec, name, dtype)
        # One backend at a time: units come grouped by backend, and a backend closed here is cheap to make
        # again (the GGUF export stays in the workdir). Then the cast can be in place: one copy, not two.
        for other in built.backends.values():
            other.close()
        built.backends.clear()
        gc.collect()
        in_place = (name == TORCH and built.variant.model is not None
                    and model_compute_dtype(built.variant.model) != dtype)
        if in_place and not chain_of(built.spec) and not is_bnb_quantized(built.variant.model):
            # The dense model is still the memory-mapped load: cast it from the file, one tensor at a time.
            read_weights_privately(built.variant.model, self._weights, dtype=torch_dtype(dtype))
        built.backends[key] = make_backend(built.variant, name, tokenizer=self.tokenizer,
                                           batch_size=self.ctx.batch_size, pad_id=self.pad_id,
                                           workdir=built.workdir, n_threads=self.ctx.threads, dtype=dtype,
                                           in_place=in_place)
        if in_place and model_compute_dtype(built.variant.model) != FLOAT32:
            built.cast_in_place = True
        return built.backends[key]

    def release(self) -> None:
        """Drop the current variant (and its artifacts unless kept)."""
        built, self._built = self._built, None
        if built is None:
            return
        for backend in built.backends.values():
            backend.close()
        del built.backends, built.variant
        return_freed_memory()
        if not self.ctx.keep_artifacts and built.workdir.exists():
            shutil.rmtree(built.workdir, ignore_errors=True)
            try:
                built.workdir.parent.rmdir()  # artifacts/ itself, once empty
            except OSError:
                pass

    def close(self) -> None:
        """Drop the current variant and the dense float32 folder this worker wrote (never the source)."""
        self.release()
        weights, self._weights = self._weights, None
        if (weights is None or weights == self.ctx.source.path or not weights.name.startswith(DENSE_WEIGHTS_FOLDER)
                or self.ctx.keep_artifacts):
            return
        shutil.rmtree(weights, ignore_errors=True)
        try:
            weights.parent.rmdir()  # artifacts/ itself, once empty
        except OSError:
            pass


def _test_delay(unit: Unit) -> None:
    """The SLOW_UNIT_ENV test hook: sleep after computing `unit`, before it is returned and written."""
    delay = float(os.environ.get(SLOW_UNIT_ENV, "0") or 0)
    if delay > 0:
        log.info("unit %s: computed; test hook sleeping %.1fs before it is written", unit.id, delay)
        time.sleep(delay)


def _needs_float32(variant, backend: str, dtype: str) -> bool:
    """Whether scoring `variant` on `backend` in `dtype` reads its float32 torch weights: a torch float32
    backend, or llama.cpp on a torch variant (exported to GGUF F16 from them)."""
    if variant.model is None:
        return False
    return dtype == FLOAT32 if backend == TORCH else backend == LLAMA_CPP and variant.gguf_path is None


def _kernels(backend) -> dict:
    """For a llama.cpp unit, whether ggml's extra weight buffers (its AMX kernels on such CPUs) were on:
    they change a quantized file's answers on a few percent of prompts (docs/engine.md)."""
    extra = getattr(backend, "extra_buffers", None)
    return {} if extra is None else {"llama_extra_buffers": bool(extra)}
