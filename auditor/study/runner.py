"""The study runner: plan units, keep a manifest, skip finished units, commit results, merge them.

The run directory's layout and its state live in `auditor.data.rundir`.
Every file is written under a temp name, fsynced, renamed and its folder fsynced
(`auditor.core.files.atomic_path`). A unit's commit record, written last, holds its
unit key and the size and sha256 of every file it wrote; a unit is finished iff
that record carries the planned key and its files verify (`rundir.check_unit`).
A killed run leaves at most temp files (removed on the next run), files of an
uncommitted unit (moved to superseded/ and redone) and finished units (kept). A
damaged unit (a committed file truncated or changed since) is named, moved to
superseded/ and recomputed, never reused.

Refusals: a run directory made by a study with another hash, or whose model or
data fingerprints changed, is refused unless `force`. With `force`, finished
units whose unit key (everything that defines that unit's result) is unchanged
are kept; every other file is moved to superseded/ and its unit redone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from auditor.analysis.baselines import DENSE_FLOAT32, DENSE_GGUF_F16
from auditor.analysis.generative import text_protocols
from auditor.analysis.kld import save_base
from auditor.artifacts.architecture import check_gguf_convertible
from auditor.artifacts.models import ModelSource, resolve_model, source_chat_template
from auditor.artifacts.precision import FLOAT32, resolve_dtype
from auditor.core.errors import AuditorError, ModelError, SpecError
from auditor.core.files import write_json
from auditor.core.names import DENSE, LLAMA_CPP, TORCH, normalize_spec, safe_name, split_mask_seed
from auditor.core.progress import start_unit_progress
from auditor.core.provenance import file_fingerprint, git_commit, machine, now_utc, package_versions
from auditor.data.bbq import BBQSelection, select_items
from auditor.data.cloze import CLOZE_VERSION
from auditor.data.prompt_format import PromptFormat, check_jinja, choose_format
from auditor.data.records import CLOZE, items_frame, write_parquet
from auditor.data.rundir import (
    COMPLETE,
    DAMAGED,
    FAILED,
    FINISHED,
    INCOMPLETE,
    INTERRUPTED,
    LAYOUT_DIRS,
    MEASURE,
    MEASURE_UNIT,
    PPL,
    PROTOCOL_REPORT_PREFIX,
    RECORD_ORDER,
    REPORT_FILES,
    RUNNING,
    SCORE,
    Unit,
    check_unit,
    commit_record,
    merged_descriptor,
    file_digest,
    remove_stale_artifacts,
    remove_temp_files,
    sealed,
    run_lock,
    write_failed_unit,
)
from auditor.data.sources import PROJECT_ROOT, DataSource, resolve_bbq, resolve_corpus
from auditor.scoring.backends.factory import available
from auditor.scoring.generative import TEXT_VERSION
from auditor.measure.exports import nearest_format
from auditor.measure.measurement import MeasureSettings, write_measurements
from auditor.study.executors import make_executor
from auditor.study.reproduce import reproduce_record
from auditor.study.spec import Study, backends_for, chain_of, perplexity_definition, variant_seed
from auditor.study.units import RunContext, shard_indices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """One model's run: where it goes, what it reads, and its units with their keys."""

    study: Study
    run_dir: Path
    source: ModelSource
    data: DataSource
    selection: BBQSelection
    units: tuple[Unit, ...]
    keys: dict[str, str]  # unit.id -> unit key
    prompt_format: PromptFormat
    fingerprints: dict[str, str]
    notes: tuple[str, ...]
    context: RunContext


# --- planning ------------------------------------------------------------------------------------


def plan_study(study: Study) -> list[RunPlan]:
    """Resolve models and data and plan every unit; all bad input fails here, before any work."""
    chains = {spec: chain_of(spec) for spec in study.variants}
    data = resolve_bbq(str(study.path(study.data.bbq)) if study.data.bbq else None)
    selection = select_items([data.path], categories=study.data.categories, condition=study.data.condition,  # type: ignore[arg-type]
                             n=study.data.n_items, seed=study.data.sample_seed, origin=data.origin,
                             partners=study.data.partners)
    calib_path = str(study.path(study.calibration.corpus)) if study.calibration.corpus else None
    ppl_settings = study.perplexity
    if ppl_settings is not None and ppl_settings.corpus:
        ppl_settings = replace(ppl_settings, corpus=str(study.path(ppl_settings.corpus)))
    fingerprints = {"data": _files_fingerprint([Path(f) for f in selection.files]),
                    "items": _items_fingerprint(selection.items)}
    if any(s.needs_calibration for steps in chains.values() for s in steps):
        fingerprints["calibration_corpus"] = file_fingerprint(resolve_corpus(calib_path, "valid").path)
    notes: list[str] = []
    if study.data.n_items is not None and study.data.n_items > len(selection.items):
        notes.append(f"asked for {study.data.n_items} items, only {len(selection.items)} available after the "
                     f"category and condition filters: scored {len(selection.items)}")
    with_ppl = ppl_settings is not None
    if with_ppl:
        fingerprints["perplexity_corpus"] = file_fingerprint(resolve_corpus(ppl_settings.corpus, "test").path)
    sources = [resolve_model(m if m == "smollm2" else str(study.path(m))) for m in study.models]
    dtype = resolve_dtype(study.execution.dtype, study.execution.device)
    # The prompt format is fixed here, before any model is loaded: a bad template file fails now.
    template_file = study.path(study.chat_template) if study.chat_template else None
    formats = [choose_format(_own_chat_template(s) is not None, template_file) for s in sources]

    plans = []
    names: set[str] = set()
    for model, source, fmt in zip(study.models, sources, formats):
        name = safe_name(study.name) if len(study.models) == 1 else f"{safe_name(study.name)}-{safe_name(source.name)}"
        if name in names:
            raise SpecError(f"{study.source}: models: two models would share the run directory {name!r}; "
                            "give them files or folders with different names")
        names.add(name)
        run_dir = study.path(study.output_dir) / name
        fp = {**fingerprints, "model": file_fingerprint(source.path)}
        units, unit_notes = _plan_units(study, chains, with_ppl, dtype)
        if any(u.backend == LLAMA_CPP for u in units):
            try:
                check_gguf_convertible(source)
            except ModelError as exc:  # those units fail with this reason; the others run
                unit_notes.append(f"the llama.cpp units cannot be built: {exc}")
        ctx = RunContext(
            key=hashlib.sha256(f"{study.hash}:{fp['model']}:{fp['items']}:{run_dir}".encode()).hexdigest()[:16],
            run_dir=str(run_dir), source=source, items=selection.items, seeds=study.seeds,
            compress_seed=study.compress_seed, batch_size=study.execution.batch_size, device=study.execution.device,
            threads=study.execution.threads, trust_remote_code=study.trust_remote_code,
            calibration=replace(study.calibration, corpus=calib_path), perplexity=ppl_settings if with_ppl else None,
            keep_artifacts=study.execution.keep_artifacts, cloze=CLOZE in study.protocols, dtype=dtype,
            prompt_format=fmt, text_protocols=text_protocols(study.protocols), generation=study.generation,
            measure=measure_settings(study, calib_path), measured=measured_specs(study),
        )
        keys = {u.id: _unit_key(u, study, chains, fp, selection, fmt, dtype) for u in units}
        plans.append(RunPlan(study, run_dir, source, data, selection, tuple(units), keys, fmt, fp,
                             tuple(notes + unit_notes), ctx))
    return plans


def _own_chat_template(source: ModelSource) -> str | None:
    """The model's own chat template, checked now: an unreadable tokenizer_config.json or chat_template.jinja,
    or one that is not valid Jinja, is a ModelError naming the file (before any run directory exists)."""
    config = Path(source.path) / "tokenizer_config.json"
    if source.kind != "gguf" and config.is_file():  # the tokenizer loader reads it even beside a .jinja
        try:
            doc = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{config}: unreadable tokenizer config ({str(exc)[:200]})") from None
        if not isinstance(doc, dict):
            raise ModelError(f"{config}: unreadable tokenizer config (not a JSON object)")
    try:
        template = source_chat_template(source)
    except (OSError, ValueError, AttributeError, TypeError) as exc:  # JSON, UTF-8 and shape errors
        raise ModelError(f"{source.path}: unreadable tokenizer files (tokenizer_config.json or "
                         f"chat_template.jinja: {type(exc).__name__}: {str(exc)[:200]})") from None
    if template is not None:
        check_jinja(template, f"{source.path} (its chat template)")
    return template


def _plan_units(study: Study, chains: dict[str, list], with_ppl: bool,
                dtype: str = FLOAT32) -> tuple[list[Unit], list[str]]:
    """Units in execution order: per spec (study order), per backend, its shards then its perplexity."""
    n = study.execution.shards
    units: list[Unit] = []
    notes: list[str] = []
    llama_ok = available(LLAMA_CPP)
    for spec in study.variants:
        backends = backends_for(spec, study.backends)
        if LLAMA_CPP in backends and not llama_ok:
            raise AuditorError(f"{study.source}: {spec!r} needs the llama.cpp backend, but llama-cpp-python or the "
                               "auditor's GGUF modules are not importable here")
        for backend in backends:
            units += [Unit(SCORE, spec, spec, backend, k, n) for k in range(n)]
            if with_ppl:
                units.append(Unit(PPL, spec, spec, backend))
        if spec == DENSE and study.null_baselines:
            if llama_ok:
                units += [Unit(SCORE, DENSE_GGUF_F16, DENSE, LLAMA_CPP, k, n) for k in range(n)]
            else:
                notes.append("runtime null baseline not scored: the llama.cpp backend is not available")
        if spec == DENSE and dtype != FLOAT32 and TORCH in backends:
            # What computing in `dtype` flips by itself: planned whenever the run is not float32, so every
            # report of a cheaper precision shows it (null_baselines = false does not drop it).
            units += [Unit(SCORE, DENSE_FLOAT32, DENSE, TORCH, k, n) for k in range(n)]
    if study.measure is not None and study.measure.enabled:  # last: it times what the units above scored
        units.append(Unit(MEASURE, MEASURE_UNIT, DENSE, TORCH))
    return units, notes


def measured_specs(study: Study) -> tuple[str, ...]:
    """The specs the measurement unit measures: every variant of the study with a deployable file, dense first,
    a spec repeated under mask or calibration seeds once (its size and speed do not depend on the seed). RTN
    variants are left out: no file holds their rounded weights, so they are "simulated" wherever size or
    speed shows (auditor.view.deployable), and their float32 export would cost a build and a GGUF F16 file
    for nothing (3.6 GB each at 1.5B parameters)."""
    return tuple(dict.fromkeys(split_mask_seed(v)[0] for v in study.variants if nearest_format(v) is None))


def measure_settings(study: Study, calib_path: str | None) -> MeasureSettings | None:
    """`auditor measure`'s settings for the study's [measure] table (None when it has none, or it is disabled):
    its keys, the study's threads when it names none, and the study's calibration for Wanda's builds."""
    m = study.measure
    if m is None or not m.enabled:
        return None
    return MeasureSettings(repeats=m.repeats, new_tokens=m.new_tokens, n_threads=m.threads or study.execution.threads,
                           bbq_items=m.bbq_items, formats=m.formats, calib=calib_path,
                           calib_samples=study.calibration.n_samples, calib_seq_len=study.calibration.seq_len,
                           compress_seed=study.compress_seed)


def _unit_key(unit: Unit, study: Study, chains: dict[str, list], fp: dict[str, str], selection: BBQSelection,
              fmt: PromptFormat, dtype: str = FLOAT32) -> str:
    """sha256 of everything that defines this unit's result (and nothing that does not)."""
    steps = chains[unit.spec]
    definition: dict[str, Any] = {
        "unit": asdict(unit), "model": fp["model"], "device": study.execution.device,
        "threads": study.execution.threads,
    }
    if unit.backend == TORCH and unit_dtype(unit, dtype) != FLOAT32:  # float32: keys of earlier runs stay valid
        definition["dtype"] = unit_dtype(unit, dtype)
    if steps:
        definition["compress_seed"] = variant_seed(unit.spec, study.compress_seed)
    if any(s.needs_calibration for s in steps):
        definition["calibration"] = {**asdict(study.calibration), "fingerprint": fp["calibration_corpus"]}
    if unit.kind == MEASURE:
        assert study.measure is not None
        measured = measured_specs(study)
        definition.update(measure={**asdict(study.measure), "enabled": None}, variants=list(measured),
                          compress_seed=study.compress_seed)
        if any(s.needs_calibration for spec in measured for s in chain_of(spec)):
            definition["calibration"] = {**asdict(study.calibration), "fingerprint": fp["calibration_corpus"]}
    elif unit.kind == SCORE:
        shard_items = [selection.items[i] for i in shard_indices(len(selection.items), unit.shard, unit.n_shards)]
        definition.update(items=_items_fingerprint(shard_items), seeds=list(study.seeds),
                          batch_size=study.execution.batch_size, template=fmt.version)
        if CLOZE in study.protocols:
            definition["cloze"] = CLOZE_VERSION
        if text_protocols(study.protocols):
            definition["text"] = {"protocols": list(text_protocols(study.protocols)), "prompt": TEXT_VERSION,
                                  **asdict(study.generation)}
    else:
        assert study.perplexity is not None
        definition["perplexity"] = {**perplexity_definition(study.perplexity), "corpus": None,
                                    "fingerprint": fp["perplexity_corpus"]}
    return _sha(definition)


def unit_dtype(unit: Unit, dtype: str) -> str:
    """The torch compute dtype of a unit: float32 for the precision baseline and the measurement unit (it
    builds every variant in float32), the run's dtype for other torch units; llama.cpp units compute in their
    GGUF's own types (named "gguf")."""
    if unit.kind == MEASURE:
        return FLOAT32
    if unit.backend != TORCH:
        return "gguf"
    return FLOAT32 if unit.variant == DENSE_FLOAT32 else dtype


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _items_fingerprint(items) -> str:
    return _sha([asdict(it) for it in items])[:16]


def _files_fingerprint(files: list[Path]) -> str:
    return _sha([(f.name, file_fingerprint(f)) for f in files])[:16]


# --- running -------------------------------------------------------------------------------------


def run_study(study: Study, *, force: bool = False, executor=None, only: Iterable[str] | None = None) -> list[Path]:
    """Plan and run every model of `study` (only the variants named in `only`, when given); return the run
    directories."""
    plans = plan_study(study)
    chosen = [select_units(plan, only) for plan in plans]  # an unknown name fails before any work

    own = executor is None
    executor = executor or make_executor(study.execution)
    try:
        return [execute_plan(plan, force=force, executor=executor, units=units) for plan, units in zip(plans, chosen)]
    finally:
        if own:
            executor.close()


def select_units(plan: RunPlan, only: Iterable[str] | None) -> tuple[Unit, ...]:
    """The planned units of the variants named in `only` (every unit when None), in plan order.

    A name is a variant's spec as the study writes it (whitespace is ignored; a random@ spec names all
    its mask seeds, "random@0.5#seed1" one of them) or a null baseline's name (dense-gguf-f16,
    dense-float32); one the plan does not have is an error naming the study.
    """
    if only is None:
        return plan.units
    names = {u.variant: split_mask_seed(u.variant)[0] for u in plan.units}
    wanted = {normalize_spec(name) for name in only}
    unknown = sorted(wanted - set(names) - set(names.values()))
    if unknown:
        raise AuditorError(f"--only {', '.join(map(repr, unknown))}: not a variant of {plan.study.source} "
                           f"(its variants: {', '.join(names)})")
    return tuple(u for u in plan.units if u.variant in wanted or names[u.variant] in wanted)


def execute_plan(plan: RunPlan, *, force: bool, executor, units: Iterable[Unit] | None = None) -> Path:
    """Run the unfinished units of `plan` (of `units`, a subset, when given) through `executor`, commit each,
    then merge and report. Units left out stay pending: the run is incomplete until a later run does them."""
    run_dir = _prepare_run_dir(plan.run_dir, plan.study)
    with run_lock(run_dir):
        remove_temp_files(run_dir)
        if not plan.study.execution.keep_artifacts:
            remove_stale_artifacts(run_dir)
        previous = _check_previous(run_dir, plan, force)
        kept = _finished_units(run_dir, plan)
        _supersede(run_dir, plan, kept)
        # items.parquet first: the manifest records its size and sha256, which every reader verifies
        _guard(write_parquet, run_dir / "items.parquet")(items_frame(plan.selection.items), run_dir / "items.parquet")
        _guard(_write_manifest, run_dir / "manifest.json")(run_dir, plan, previous, executor.name)
        chosen = {u.id for u in (plan.units if units is None else units)}
        todo = [u for u in plan.units if u.id not in kept and u.id in chosen]
        for unit in plan.units:
            if unit.id in kept:
                log.info("unit %s: finished earlier, skipped", unit.id)
        if todo:
            for name in REPORT_FILES:  # they would describe an older set of units
                (run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "plots", ignore_errors=True)
            for stale in run_dir.glob(f"{PROTOCOL_REPORT_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
        # a log's progress (stdout not a terminal): unit lines and a heartbeat; the local executor computes
        # `todo` in order, so it can say when each unit starts. Counted over the units chosen now (--only),
        # so the time left is this invocation's, not the whole study's.
        progress = start_unit_progress(len(chosen), len(chosen & kept))
        _set_state(run_dir, RUNNING, plan, n_finished=len(kept))
        done = len(kept)
        failed: list[str] = []
        try:
            for result in progress.follow(_in_phases(executor, plan.context, todo),
                                          [u.id for u in todo] if executor.name == "local" else None,
                                          label=lambda r: r.unit.id, error=lambda r: r.error):
                if result.error is not None:
                    path = result.unit.failed_path(run_dir)
                    _guard(write_failed_unit, path)(run_dir, result.unit, plan.keys[result.unit.id], result.error,
                                                    now_utc())
                    failed.append(f"{result.unit.id}: {result.error}")
                    log.error("unit %s: failed (%s); the other units go on", result.unit.id, result.error)
                    continue
                _commit(run_dir, result, plan.keys[result.unit.id])
                done += 1
                log.info("unit %s: written (%d/%d)", result.unit.id, done, len(plan.units))
            _merge_variants(run_dir, plan)
        except KeyboardInterrupt:
            _set_state(run_dir, INTERRUPTED, plan, n_finished=done)
            raise
        except AuditorError as exc:
            _set_state(run_dir, FAILED, plan, n_finished=done, error=str(exc))
            raise
        except Exception as exc:
            _set_state(run_dir, FAILED, plan, n_finished=done, error=repr(exc))
            raise
        finally:
            progress.close()
        if failed:
            _set_state(run_dir, INCOMPLETE, plan, n_finished=done,
                       error=f"{len(failed)} unit(s) failed: " + "; ".join(failed))
        elif done < len(plan.units):
            _set_state(run_dir, INCOMPLETE, plan, n_finished=done,
                       error=f"{len(plan.units) - done} planned unit(s) not run yet (--only); "
                             "`auditor run` without --only runs them")
        else:
            _set_state(run_dir, COMPLETE, plan, n_finished=done)
    return run_dir


def _in_phases(executor, ctx: RunContext, todo: list[Unit]) -> Iterable:
    """The results of `todo`: the scoring and perplexity units, then the measurement unit, which starts only once
    they are all back (on Ray too), so its timings share the machine with no other unit of this run."""
    yield from executor.run(ctx, [u for u in todo if u.kind != MEASURE])
    last = [u for u in todo if u.kind == MEASURE]
    if last:
        yield from executor.run(ctx, last)


def _prepare_run_dir(run_dir: Path, study: Study) -> Path:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test.tmp-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise AuditorError(f"{run_dir}: output directory is not writable ({exc.strerror or exc}); "
                           f"check output_dir in {study.source}") from None
    return run_dir


def _check_previous(run_dir: Path, plan: RunPlan, force: bool) -> dict | None:
    """The manifest of an earlier run in `run_dir`, after refusing what must not be mixed."""
    path = run_dir / "manifest.json"
    if not path.exists():
        others = [p.name for p in run_dir.iterdir() if p.name not in (".lock", "state.json")]
        if others and not force:
            raise AuditorError(f"{run_dir}: exists and is not a run directory (no manifest.json, but "
                               f"{len(others)} other entries); choose another name or output_dir, or use --force")
        return None
    try:
        previous = json.loads(path.read_text())
        old_hash = (previous.get("study") or {}).get("hash")
        old_fp = previous.get("fingerprints") or {}
    except (ValueError, AttributeError, OSError) as exc:
        if force:
            return None
        raise AuditorError(f"{path}: unreadable manifest ({exc}); use --force to rewrite it (units whose commit "
                           "records verify are kept, the rest redone)") from None
    if force:
        return previous
    if not old_hash:
        raise AuditorError(f"{run_dir}: holds a run without a study hash (made by an earlier version of the "
                           "auditor); use --force to keep nothing of it but move its files to superseded/")
    if old_hash != plan.study.hash:
        raise AuditorError(
            f"{run_dir}: holds a run of a different study (study hash {old_hash[:12]}, this study "
            f"{plan.study.hash[:12]}); use --force to keep its unchanged units and redo the rest, "
            "or give the study another name")
    changed = [k for k in sorted(set(old_fp) | set(plan.fingerprints)) if old_fp.get(k) != plan.fingerprints.get(k)]
    if changed:
        raise AuditorError(f"{run_dir}: the {', '.join(changed)} fingerprint(s) changed since this run was started "
                           "(same study, different files); use --force to redo the affected units")
    return previous


def _finished_units(run_dir: Path, plan: RunPlan) -> set[str]:
    """Ids of planned units committed under their planned key whose files verify (size and sha256).

    A damaged unit is logged by name; `_supersede` moves its files aside and it is recomputed.
    """
    kept = set()
    for u in plan.units:
        state, problem = check_unit(run_dir, u, plan.keys[u.id])
        if state == FINISHED:
            kept.add(u.id)
        elif state == DAMAGED:
            log.warning("unit %s is damaged (%s): its files move to superseded/ and it is recomputed", u.id, problem)
        elif problem:
            log.warning("unit %s: %s; its files move to superseded/ and it is recomputed", u.id, problem)
    return kept


def _supersede(run_dir: Path, plan: RunPlan, kept: set[str]) -> None:
    """Clear the way for the units to do.

    A lone descriptor of an unfinished planned unit is deleted (it is redone). Files
    that no longer count (a stale unit key, a damaged or uncommitted unit, a unit this
    plan does not have) are moved to superseded/<utc>/, never deleted.
    """
    keep: set[Path] = set()
    stale: list[Path] = []
    for u in plan.units:
        files = u.files(run_dir)
        if u.id in kept:
            keep.update(files)
        elif u.final_path(run_dir).is_file() or u.commit_path(run_dir).is_file():
            stale += [p for p in files if p.is_file()]
        else:
            for p in files:
                p.unlink(missing_ok=True)
    keep.update(run_dir / "variants" / f"{u.stem}.json" for u in plan.units if u.kind == SCORE)
    for folder in LAYOUT_DIRS:
        if (run_dir / folder).is_dir():
            stale += [p for p in sorted((run_dir / folder).iterdir()) if p.is_file() and p not in keep
                      and p not in stale]
    if not stale:
        return
    target = run_dir / "superseded" / now_utc().replace(":", "")
    for path in stale:
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target / path.parent.name / path.name)
    log.warning("moved %d files of units this plan does not keep to %s", len(stale), target)


def _guard(write: Callable, path: Path) -> Callable:
    """`write` with OSError (disk full, permissions) turned into an AuditorError naming `path`."""
    def guarded(*args, **kwargs):
        try:
            return write(*args, **kwargs)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise AuditorError(f"{path}: cannot write ({reason}); the unit is not marked finished and "
                               "is redone by the next run") from None
    return guarded


def _commit(run_dir: Path, result, key: str) -> None:
    """Write a unit's files, then its commit record (key, size and sha256 of each file): the commit point.

    Until the commit record is in place the unit is not finished, whatever else exists.
    """
    unit = result.unit
    finished = now_utc()
    if unit.kind == SCORE:
        desc = ({**result.descriptor, "unit_key": key, "finished_utc": finished})
        desc_path = unit.descriptor_path(run_dir)
        _guard(write_json, desc_path)(desc, desc_path)
        records = result.records.sort_values(RECORD_ORDER, kind="stable").reset_index(drop=True)
        final = unit.final_path(run_dir)
        _guard(write_parquet, final)(records, final)
    elif unit.kind == MEASURE:  # the same sealed files `auditor measure --out RUN` writes, then the commit record
        _guard(write_measurements, unit.final_path(run_dir))(result.measurements, run_dir)
    else:
        final = unit.final_path(run_dir)
        figures = ({**result.perplexity, "unit": unit.name, "unit_key": key, "finished_utc": finished})
        if result.kld_base is not None:  # the dense rows; sealed in the commit record like every unit file
            base = unit.kld_base_path(run_dir)
            _guard(save_base, base)(result.kld_base, base)
            figures["kld"] = {**figures.get("kld", {}), "base_file": base.name, "base_bytes": base.stat().st_size}
        _guard(write_json, final)(figures, final)
    _write_commit(run_dir, unit, key, finished, result.peak_rss)


def _write_commit(run_dir: Path, unit: Unit, key: str, finished_utc: str, peak_rss: dict | None = None) -> None:
    path = unit.commit_path(run_dir)
    _guard(write_json, path)(commit_record(run_dir, unit, key, finished_utc, peak_rss), path)


def _merge_variants(run_dir: Path, plan: RunPlan) -> None:
    """variants/<stem>.json per (variant, backend): shard descriptors merged (sums, pooled ms/prompt)."""
    groups: dict[str, list[Unit]] = {}
    for u in plan.units:
        if u.kind == SCORE:
            groups.setdefault(u.stem, []).append(u)
    for stem, units in groups.items():
        units = [u for u in units if u.descriptor_path(run_dir).is_file()]  # a failed unit has none
        if not units:
            continue
        merged = merged_descriptor(stem, [json.loads(u.descriptor_path(run_dir).read_text()) for u in units],
                                   [u.name for u in units])
        path = run_dir / "variants" / f"{stem}.json"
        _guard(write_json, path)(merged, path)


def _write_manifest(run_dir: Path, plan: RunPlan, previous: dict | None, executor: str) -> None:
    study, sel, source = plan.study, plan.selection, plan.source
    session = {"started_utc": now_utc(), "executor": executor, "pid": os.getpid(), "host": socket.gethostname(),
               "versions": package_versions(), "git_commit": git_commit(PROJECT_ROOT)}
    sessions = (previous or {}).get("sessions", []) if previous and previous.get("study", {}).get("hash") == study.hash else []
    manifest = {
        "study": {"name": study.name, "file": study.source, "hash": study.hash, "definition": study.to_json()},
        # The flat view the report's provenance section reads.
        "config": {"variants": list(study.variants), "model": str(source.path), "bbq": str(plan.data.path),
                   "categories": list(study.data.categories) if study.data.categories else None,
                   "condition": study.data.condition, "n_items": study.data.n_items,
                   "partners": study.data.partners,
                   "sample_seed": study.data.sample_seed, "seeds": list(study.seeds),
                   "compress_seed": study.compress_seed, "mask_seeds": list(study.mask_seeds), "batch_size": study.execution.batch_size,
                   "device": study.execution.device, "run_name": plan.run_dir.name,
                   "reports_dir": str(plan.run_dir.parent), "calib": plan.context.calibration.corpus,
                   "backends": list(study.backends), "shards": study.execution.shards},
        "created_utc": (previous or {}).get("created_utc") or now_utc(),
        "model": {"name": source.name, "path": str(source.path), "kind": source.kind,
                  "reference_precision": f"{source.reference_precision}, computed in {plan.context.dtype}",
                  "compute_dtype": plan.context.dtype, "dtype_setting": study.execution.dtype,
                  "fingerprint": plan.fingerprints["model"]},
        "prompt_format": {"version": plan.prompt_format.version, "kind": plan.prompt_format.kind,
                          "description": plan.prompt_format.describe(), "template_file": plan.prompt_format.origin or None},
        "data": {"origin": sel.origin, "is_sample": plan.data.is_sample, "files": list(sel.files),
                 "n_items": len(sel.items), "n_available": sel.n_available, "counts": sel.counts,
                 "n_unresolved": len(sel.unresolved), "unresolved": [list(u) for u in sel.unresolved],
                 "fingerprint": plan.fingerprints["data"], "items_fingerprint": plan.fingerprints["items"],
                 "items_file": file_digest(run_dir / "items.parquet")},
        "fingerprints": plan.fingerprints,
        "seeds": list(study.seeds),
        "protocols": list(study.protocols),
        "prompt_template": plan.prompt_format.version,
        "thresholds": dict(study.thresholds),
        "perplexity": asdict(plan.context.perplexity) if plan.context.perplexity else None,
        "units": [{**asdict(u), "name": u.name, "id": u.id, "key": plan.keys[u.id]} for u in plan.units],
        "notes": list(plan.notes),
        "versions": package_versions(),
        "machine": machine(),
        "git_commit": session["git_commit"],
        "sessions": [*sessions, session],
        "reproduce": _reproduce(plan),
    }
    write_json(sealed(manifest), run_dir / "manifest.json")  # every reader checks the seal


def _reproduce(plan: RunPlan) -> dict:
    """The command, study file and full sha256 of every file this run reads (auditor.study.reproduce)."""
    ctx, study = plan.context, plan.study
    calib = resolve_corpus(ctx.calibration.corpus, "valid").path if "calibration_corpus" in plan.fingerprints else None
    ppl = resolve_corpus(ctx.perplexity.corpus, "test").path if ctx.perplexity is not None else None
    return reproduce_record(study.source, trust_remote_code=study.trust_remote_code, model=Path(plan.source.path),
                            bbq_files=list(plan.selection.files), calibration_corpus=calib, perplexity_corpus=ppl,
                            chat_template=study.path(study.chat_template) if study.chat_template else None)


def _set_state(run_dir: Path, state: str, plan: RunPlan, *, n_finished: int, error: str | None = None) -> None:
    doc = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "updated_utc": now_utc(),
           "n_units": len(plan.units), "n_finished": n_finished, "error": error}
    try:
        write_json(sealed(doc), run_dir / "state.json")  # sealed like the manifest: an edit is a damaged file
    except OSError as exc:  # reporting the state must not hide the error that got us here
        log.warning("%s: cannot write state (%s)", run_dir / "state.json", exc.strerror)
