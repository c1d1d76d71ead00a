"""`auditor run --plan`: the tokens every unit computes and a wall-time estimate from a short timing here.

Nothing of the run is computed and nothing is written. For each unit the plan
counts exactly the tokens its backend will compute:

- torch scoring: `plan_trees(...).n_nodes` over the unit's shard (the common
  prefix once, shared contexts and answer orders once; auditor.scoring.backends.trees);
- llama.cpp scoring: `planned_decode_tokens` (prefix reuse through the KV cache);
- perplexity: the tokens of every sliding window (`sliding_windows`), each
  window one full forward;
- compression: the calibration forwards of activation-aware steps (Wanda: its
  `calibration_passes` over n_samples x seq_len tokens, in float32, per variant);
- measurement ([measure]): every variant rebuilt and exported, then `repeats` rounds of
  one fresh worker per timed artifact (`measure_estimate`).

The model's weights are never read: its config (config.json, or the GGUF header)
gives the parameter count, the vocabulary and the FLOP sizes (`model_shape`), and
each *runtime kind* the plan uses (torch in a dtype, bitsandbytes int8/NF4,
llama.cpp per GGUF type) is timed on a *proxy*: the source's architecture and
widths with random decoder blocks, all of them for a model of up to
PROXY_MAX_PARAMS parameters, else as many as fit (`proxy_model`), scoring real
prompts of the study: warm-up, then some of the forward passes the run itself
makes (`sample_calls`) until PLAN_BUDGET_S seconds are spent. A torch kind timed
on a shallower proxy is timed again on the same passes with no blocks at all
(`KindTiming.blockless_score_s`): what a pass costs that does not grow with the
depth (the head, the embedding, Python) is counted once and the blocks' time x
the model's depth / the proxy's (`deepen`). A llama.cpp kind's rate is the proxy's x the FLOPs of
the same work on the proxy / on the real model (`forward_flops`). A build (cast,
quantize, export) and the model load are scaled by parameters. The llama.cpp
kinds are quantized from one F32 GGUF of the proxy (`export_f32`), whose export
time each kind's build counts, as the run exports once per variant. Estimate of
a unit = tokens / rate of its kind; of the run = the units + compression + model
load.

The plan also prints a *floor*: the same scoring, perplexity and calibration tokens through
the model's linear layers alone at the matmul rates measured on this CPU (`floor_seconds`,
`matmul_peaks`): what no engine at those rates beats. It tells a team whether a deadline needs a
faster engine, or a bigger machine (or fewer items, orders or variants).

Every unit's predicted peak memory comes from the same shape
(auditor.study.memory_plan); `auditor run` refuses units that exceed the machine's.

Limits, said with the figures: the rates are taken at the load of the moment
(printed), and a perplexity window of max_length tokens is timed once per kind.
"""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from auditor.analysis.baselines import DENSE_FLOAT32
from auditor.artifacts.gguf_info import read_gguf_info
from auditor.artifacts.gguf_writer import tokenizer_for_model, write_gguf
from auditor.artifacts.models import load_tokenizer
from auditor.artifacts.precision import FLOAT32
from auditor.core.names import DENSE, LLAMA_CPP, TORCH
from auditor.core.provenance import now_utc
from auditor.data.prompts import PromptGroup
from auditor.data.rundir import MEASURE, PPL, SCORE, Unit
from auditor.scoring.backends.factory import make_backend
from auditor.scoring.backends.llama_backend import planned_decode_tokens
from auditor.scoring.backends.torch_backend import tree_batches
from auditor.scoring.backends.trees import plan_trees
from auditor.scoring.engine import PromptSet
from auditor.scoring.gemm import ModelDims, forward_flops, measure_gemm
from auditor.scoring.perplexity import corpus_token_ids, sliding_windows
from auditor.study.model_shape import (ModelShape, count_parameters, model_shape, proxy_config, proxy_layers,
                                      proxy_model)
from auditor.study.rate_cache import RateCache, timing_key
from auditor.study.runner import RunPlan, unit_dtype
from auditor.study.spec import chain_runtimes
from auditor.study.units import shard_indices
from compressors.base import Variant
from compressors.gguf_quant import quantize_gguf
from compressors.registry import build_variant, parse_chain

log = logging.getLogger(__name__)

#: `--plan` times each kind on chunks of items until this many seconds have been spent (a slow kind,
#: e.g. bitsandbytes on CPU, then times fewer items); at least one chunk is always timed.
PLAN_BUDGET_S = 30.0
#: A perplexity window is one forward (about 1 s on Qwen 1.5B's proxy at 512 tokens): the median of this many.
WINDOW_ROUNDS = 3
#: Forward passes timed per kind unless --plan-groups says otherwise (x batch_size groups): the plan's
#: rates from two passes of Qwen 1.5B's proxy ranged over 98-155 tokens/s (torch bfloat16, three plans).
PLAN_PASSES = 4
#: Under a budget the perplexity window is timed on at most this many tokens; the rate is scaled to
#: the study's max_length by the FLOPs per token of both lengths (`window_flops_per_token`).
BUDGET_WINDOW = 512
#: A timing without blocks is subtracted (depth ratio - 1) times (`deepen`: 6 on Qwen 1.5B's 4-block proxy)
#: and is short (about 1 s there, 0.8-1.4 s in three plans), so each is the median of this many rounds.
BLOCKLESS_ROUNDS = 3
#: The rate cache's entry for the proxy's construction time (the model load is scaled from it).
PROXY_KIND = "proxy construction"
#: The rate cache's entries for this machine's matmul peaks (`matmul_peaks`), one per arithmetic.
PEAK_KIND = "matmul peak"
#: The arithmetics a runtime other than torch in one dtype (llama.cpp, bitsandbytes) could run its linears in:
#: its floor takes the fastest (ggml's quantized kernels multiply the weights with 8-bit activations).
ANY_ARITHMETIC = ("float32", "bfloat16", "int8")


def kind_spec(spec: str, backend: str) -> str | None:
    """The one step of `spec` that decides its runtime speed: a GGUF type or a bitsandbytes format.

    None for torch variants that compute like the dense model (pruned and RTN weights are dense
    float tensors).
    """
    last = spec.split("+")[-1].strip().partition("@")[0]
    if backend == LLAMA_CPP:
        return last if last.startswith("gguf-") else None
    for part in spec.split("+"):
        method = part.strip().partition("@")[0]
        if method.startswith("bnb-"):
            return method
    return None


def unit_kind(unit: Unit, dtype: str) -> str:
    """The runtime kind a unit runs on: "torch bfloat16", "torch bnb-nf4", "llama.cpp Q4_K_M", ..."""
    step = kind_spec(unit.spec, unit.backend)
    if unit.backend == LLAMA_CPP:
        return f"llama.cpp {step.removeprefix('gguf-').upper()}" if step else "llama.cpp F16"
    return f"torch {step}" if step else f"torch {unit_dtype(unit, dtype)}"


@dataclass(frozen=True)
class KindTiming:
    """One runtime kind timed here: planned tokens per second for scoring and for perplexity windows."""

    kind: str
    score_items: int
    score_tokens: int
    score_wall_s: float
    build_s: float  # variant built from the dense model (quantize, cast or export) and its runtime loaded
    ppl_tokens: int = 0
    ppl_wall_s: float = 0.0
    peak_tokens_per_s: float = float("nan")  # llama.cpp's prefill rate, when asked for
    score_calls: int = 0  # how many of the sampled passes were timed (the budget may stop early)
    # The same passes and window on the proxy without its blocks, torch kinds of a shallower proxy (`deepen`):
    blockless_score_s: float | None = None
    blockless_ppl_s: float | None = None

    @property
    def score_tokens_per_s(self) -> float:
        return self.score_tokens / self.score_wall_s if self.score_wall_s > 0 else float("nan")

    @property
    def ppl_tokens_per_s(self) -> float:
        return self.ppl_tokens / self.ppl_wall_s if self.ppl_wall_s > 0 else float("nan")


@dataclass(frozen=True)
class UnitEstimate:
    unit: Unit
    kind: str
    tokens: int
    est_s: float


@dataclass
class PlanEstimate:
    """A run plan's units with tokens and estimated seconds, and how the rates were measured."""

    run_dir: Path
    units: list[UnitEstimate]
    timings: dict[str, KindTiming]
    compression_s: dict[str, float]  # spec -> estimated seconds to build it
    load_s: float
    load_avg: tuple[float, float]  # 1-minute load average before and after the timings
    notes: list[str] = field(default_factory=list)
    floor_s: float | None = None  # `floor_seconds`; None where the run's device is not this CPU
    peaks: dict[str, float] = field(default_factory=dict)  # matmul FLOP/s by arithmetic, of the floor

    @property
    def score_s(self) -> float:
        return sum(u.est_s for u in self.units if u.unit.kind == SCORE)

    @property
    def ppl_s(self) -> float:
        return sum(u.est_s for u in self.units if u.unit.kind == PPL)

    @property
    def measure_s(self) -> float:
        return sum(u.est_s for u in self.units if u.unit.kind == MEASURE)

    @property
    def total_s(self) -> float:
        return self.score_s + self.ppl_s + self.measure_s + sum(self.compression_s.values()) + self.load_s


def unit_tokens(plan: RunPlan, prompts: PromptSet, corpus_tokens: int | None) -> dict[str, int]:
    """unit.id -> tokens its backend computes (module docstring)."""
    out: dict[str, int] = {}
    n = len(prompts.groups)
    for u in plan.units:
        if u.kind == SCORE:
            groups = [prompts.groups[i] for i in shard_indices(n, u.shard, u.n_shards)]
            out[u.id] = (planned_decode_tokens(groups) if u.backend == LLAMA_CPP
                         else plan_trees(groups).n_nodes)
        elif u.kind == MEASURE:
            out[u.id] = sum(n for _, _, n in measure_runs(plan, prompts))
        else:
            settings = plan.context.perplexity
            assert settings is not None and corpus_tokens is not None
            out[u.id] = sum(w.end - w.begin for w in sliding_windows(corpus_tokens, settings.max_length,
                                                                       settings.stride))
    return out


def window_flops_per_token(dims: ModelDims, n_tokens: int) -> float:
    """FLOPs per token of one perplexity window of n_tokens: causal attention, the head at every position."""
    return forward_flops(dims, n_tokens, n_tokens * (n_tokens + 1) / 2, n_tokens) / n_tokens


def sample_calls(groups: Sequence[PromptGroup], batch_size: int, n_groups: int) -> list[list[PromptGroup]]:
    """About n_groups / batch_size of the forward passes the torch engine makes over `groups` in one call, as
    a run does over its shard (`tree_batches`: trees of similar width together), each as the groups it holds.

    They are spread evenly over the passes' widths, the median one first, so a budget that stops after
    one pass has timed a typical one. Why the run's own passes: calls of consecutive groups mix narrow
    and wide trees in one pass, and on the Qwen 1.5B team audit 17-22% of the tokens they computed were
    padding, against 0.8% in a run's shard; torch's rate came out 20% low (docs/engine.md).
    """
    plan = plan_trees(groups)
    batches = tree_batches(plan, batch_size)
    if not batches:
        return []
    k = max(1, min(len(batches), round(n_groups / batch_size)))
    picked = sorted({int((i + 0.5) * len(batches) / k) for i in range(k)}, key=lambda b: abs(b - len(batches) // 2))
    return [[groups[g] for g in sorted({g for t in batches[b] for g, _ in plan.members[t]})] for b in picked]


def _planned_tokens(backend_name: str, groups: Sequence[PromptGroup]) -> int:
    """Tokens one scoring call over `groups` computes (each call plans, and clears its cache, anew)."""
    if backend_name == LLAMA_CPP:
        return planned_decode_tokens(groups)
    return plan_trees(groups).n_nodes


def _time_scoring(backend, backend_name: str, calls: Sequence[Sequence[PromptGroup]], letter_ids,
                  budget_s: float | None, rounds: int = 1) -> tuple[int, int, int, float]:
    """(calls timed, items scored, tokens computed, seconds): `letter_logprobs` on each call in order, its
    median of `rounds` timings counted, until `budget_s` is spent (at least one call; all without a budget)."""
    if not calls:
        return 0, 0, 0, 0.0
    backend.letter_logprobs(list(calls[0][:2]), letter_ids)  # warm-up: thread pools, allocator, kernels
    n_calls = n_items = tokens = 0
    wall = 0.0
    for part in calls:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            backend.letter_logprobs(list(part), letter_ids)
            times.append(time.perf_counter() - start)
        wall += statistics.median(times)
        n_calls += 1
        n_items += len(part)
        tokens += _planned_tokens(backend_name, part)
        if budget_s is not None and wall >= budget_s:
            break
    return n_calls, n_items, tokens, wall


def _time_window(backend, ids: Sequence[int]) -> float:
    start = time.perf_counter()
    backend.token_logprobs(list(ids))
    return time.perf_counter() - start


@dataclass(frozen=True)
class F32Export:
    """The dense model's F32 GGUF, written once and quantized into each llama.cpp kind (`time_kind`)."""

    path: Path
    export_s: float  # what writing it took: part of every kind's build, as the run exports for each variant


def export_f32(dense, workdir: Path) -> F32Export:
    """Write `dense` as an F32 GGUF under `workdir`, as GGUFQuantizer does before it quantizes (timed)."""
    start = time.perf_counter()
    path = write_gguf(dense, workdir / "dense-f32.gguf", tokenizer=tokenizer_for_model(dense), outtype="f32",
                      name=DENSE).path
    return F32Export(path, time.perf_counter() - start)


def time_kind(kind: str, spec: str | None, dtype: str, dense, tokenizer, prompts: PromptSet, *,
              calls: Sequence[Sequence[PromptGroup]], batch_size: int, pad_id: int, workdir: Path, seed: int,
              window_ids: Sequence[int] | None = None, n_threads: int | None = None,
              peak_prefill_ids: Sequence[int] | None = None, budget_s: float | None = None,
              f32_export: F32Export | None = None, rounds: int = 1) -> KindTiming:
    """Build the kind's variant from `dense` (timed), score `calls` (timed, `_time_scoring`: each call's
    median of `rounds`) and one window (the median of WINDOW_ROUNDS).

    With `f32_export` a llama.cpp kind is quantized from that file by llama.cpp's quantizer (F16
    too: the same tensor types as the converter's F16) and its build is the export's time plus its
    own: what GGUFQuantizer does, without writing the same 4 bytes per parameter once per kind.
    With `peak_prefill_ids` (llama.cpp kinds) the runtime's prefill rate on that prompt is measured
    too, best of 3 after a warm-up: the peak its scoring rate is compared with.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    backend_name = LLAMA_CPP if kind.startswith("llama.cpp") else TORCH
    start = time.perf_counter()
    if f32_export is not None and backend_name == LLAMA_CPP:
        ftype = kind.split()[-1]  # "F16", "Q4_K_M", ...
        path = workdir / f"dense-{ftype.lower()}.gguf"
        quantize_gguf(f32_export.path, path, ftype)
        read_gguf_info(path)  # as GGUFQuantizer measures the file it wrote
        variant = Variant(spec or DENSE, gguf_path=path)
        start -= f32_export.export_s
    else:
        variant = build_variant(parse_chain(spec) if spec else [], dense, seed=seed, workdir=workdir)
    backend = make_backend(variant, backend_name, tokenizer=tokenizer, batch_size=batch_size, pad_id=pad_id,
                           workdir=workdir, n_threads=n_threads, dtype=dtype)
    build_s = time.perf_counter() - start  # quantizing, casting or exporting, and loading the runtime
    try:
        n_calls, n_items, tokens, wall = _time_scoring(backend, backend_name, calls, prompts.letter_ids, budget_s,
                                                       rounds)
        ppl_tokens, ppl_wall = 0, 0.0
        if window_ids:
            ppl_tokens = len(window_ids)
            ppl_wall = statistics.median(_time_window(backend, window_ids) for _ in range(WINDOW_ROUNDS))
        peak = float("nan")
        if peak_prefill_ids and hasattr(backend, "prefill_s"):
            backend.prefill_s(peak_prefill_ids)
            peak = len(peak_prefill_ids) / min(backend.prefill_s(peak_prefill_ids) for _ in range(3))
    finally:
        backend.close()
    log.info("%s: %d items, %d tokens in %.1fs (build %.1fs)", kind, n_items, tokens, wall, build_s)
    return KindTiming(kind, n_items, tokens, wall, build_s, ppl_tokens, ppl_wall, peak, score_calls=n_calls)


def _times_window(plan: RunPlan, kind: str, dtype: str) -> bool:
    """Whether `kind` runs a perplexity unit of `plan`, so its timing includes a window."""
    return any(u.kind == PPL and unit_kind(u, dtype) == kind for u in plan.units)


def work_flops(dims: ModelDims, calls: Sequence[Sequence[PromptGroup]]) -> float:
    """FLOPs of scoring `calls` as the torch engine plans them (tokens, attended pairs, head rows)."""
    total = 0.0
    for groups in calls:
        trees = plan_trees(groups)
        total += forward_flops(dims, trees.n_nodes, trees.n_attended_pairs, trees.n_answer_nodes)
    return total


def deepen(proxy_s: float, blockless_s: float | None, n_layers: int, proxy_layers: int) -> float | None:
    """Seconds on a model of `n_layers` blocks for work that took `proxy_s` on `proxy_layers` of them and
    `blockless_s` on none: the part that does not grow with the depth once, the blocks' part x the depths'
    ratio (the proxy's blocks are the model's, shape for shape). None without a blockless timing or when
    the two contradict that (the blockless one not below the proxy's: noise); the caller scales by FLOPs then.

    Why not FLOPs alone: a pass's head (the answer rows' float32 logits, cast from the whole vocabulary
    matrix), embedding and Python cost far more than their FLOPs. Scaled with the blocks they made the
    plan time Qwen 1.5B's torch bfloat16 at 71-85 planned tokens/s on a 4-block proxy against 104 measured.
    """
    if blockless_s is None or not 0 <= blockless_s < proxy_s:
        return None
    return blockless_s + (proxy_s - blockless_s) * n_layers / proxy_layers


def floor_arithmetics(kind: str) -> tuple[str, ...]:
    """The matmul arithmetics `kind` can compute its linears in: a torch kind in one dtype its own; any other
    kind (llama.cpp, bitsandbytes) any of ANY_ARITHMETIC."""
    dtype = kind.removeprefix("torch ")
    if kind.startswith("torch ") and dtype in ("float32", "bfloat16", "float16"):
        return (dtype,)
    return ANY_ARITHMETIC


def floor_seconds(dims: ModelDims, units: Sequence[UnitEstimate], calib_tokens: int,
                  peaks: dict[str, float]) -> float | None:
    """The least time the units' scoring and perplexity tokens, and `calib_tokens` of float32 calibration,
    take through the model's linear layers alone, each unit at the fastest of `peaks` (FLOP/s by arithmetic)
    its kind can use. Attention, norms, the head, builds, loads and the measurement unit are not counted, so
    no engine at these rates finishes the same work sooner. None when some of that work has no peak."""
    per_token = 2.0 * dims.block_params
    work = [(calib_tokens, ("float32",))] if calib_tokens else []
    work += [(u.tokens, floor_arithmetics(u.kind)) for u in units if u.unit.kind in (SCORE, PPL)]
    seconds = 0.0
    for tokens, arithmetics in work:
        rates = [peaks[a] for a in arithmetics if a in peaks]
        if not rates:
            return None
        seconds += tokens * per_token / max(rates)
    return seconds


def matmul_peaks(dims: ModelDims, arithmetics: Sequence[str], tokens: int, head_rows: int, *,
                 cache: RateCache | None, key, retime: bool) -> tuple[dict[str, float], list[str]]:
    """FLOP/s of each arithmetic at the widths of `dims` and a pass of `tokens` rows (`measure_gemm`, best of
    3), read from `cache` under `key(PEAK_KIND arithmetic)` where kept (one this torch cannot run is left
    out); and when the kept ones were taken."""
    peaks: dict[str, float] = {}
    kept: list[str] = []
    for arithmetic in arithmetics:
        entry = key(f"{PEAK_KIND} {arithmetic}")
        hit = cache.get(entry) if cache and not retime else None
        if hit is not None and isinstance(hit[0].get("flops_per_s"), (int, float)):
            peaks[arithmetic] = float(hit[0]["flops_per_s"])
            kept.append(hit[1])
            continue
        try:
            peaks[arithmetic] = measure_gemm(dims, tokens, head_rows, repeats=3, dtype=arithmetic).flops_per_s
        except RuntimeError as exc:  # an arithmetic this torch build cannot run here: the floor goes without it
            log.warning("--plan: the %s matmul rate could not be measured (%s)", arithmetic, exc)
            continue
        if cache is not None:
            cache.put(entry, {"flops_per_s": peaks[arithmetic]}, now_utc())
    return peaks, kept


def estimate_plan(plan: RunPlan, *, n_groups: int | None = None, budget_s: float | None = PLAN_BUDGET_S,
                  shape: ModelShape | None = None, cache: RateCache | None = None,
                  retime: bool = False) -> PlanEstimate:
    """Count every unit's tokens and time each runtime kind the plan uses on a proxy (module docstring).

    With `cache`, a kind timed before on this machine with the same proxy and settings is read from it
    (auditor.study.rate_cache) and only the others are timed, then kept; `retime` times every kind anew."""
    import torch

    ctx = plan.context
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    load_before = os.getloadavg()[0]
    shape = shape or model_shape(ctx.source, trust_remote_code=ctx.trust_remote_code)
    tokenizer = load_tokenizer(ctx.source)
    prompts = PromptSet.build(tokenizer, ctx.items, ctx.seeds)
    corpus = None
    if ctx.perplexity is not None:
        corpus = corpus_token_ids(tokenizer, ctx.perplexity.corpus, max_tokens=ctx.perplexity.max_tokens)
    tokens = unit_tokens(plan, prompts, len(corpus.ids) if corpus else None)
    # The proxy's shape from its config alone: its weights are made only if some kind must be timed.
    proxy_cfg = proxy_config(shape.config, proxy_layers(shape, trust_remote_code=ctx.trust_remote_code))
    proxy_dims = ModelDims.from_config(proxy_cfg.get_text_config() if hasattr(proxy_cfg, "get_text_config")
                                       else proxy_cfg)
    proxy_params = count_parameters(proxy_cfg, trust_remote_code=ctx.trust_remote_code)
    by_params = shape.n_params / proxy_params  # builds and the load scale with the weights

    kinds: dict[str, str | None] = {}
    for u in plan.units:
        kinds.setdefault(unit_kind(u, ctx.dtype), kind_spec(u.spec, u.backend))
    # Wanda's calibration forward runs on the float32 dense model: its rate is needed too.
    calib_specs = [s for s in dict.fromkeys(u.spec for u in plan.units)
                   if any(step.needs_calibration for step in parse_chain(s))]
    if calib_specs:
        kinds.setdefault("torch float32", None)
    window = None
    if corpus is not None:
        cap = ctx.perplexity.max_length if budget_s is None else min(ctx.perplexity.max_length, BUDGET_WINDOW)
        window = corpus.ids[:min(len(corpus.ids), cap)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_timed = n_groups or PLAN_PASSES * ctx.batch_size
    calls = sample_calls(prompts.groups, ctx.batch_size, n_timed)
    shallower = proxy_dims.n_layers < shape.dims.n_layers

    def key(kind: str, with_window: bool) -> str:
        return timing_key(kind, proxy_cfg.to_json_string(use_diff=False), batch_size=ctx.batch_size,
                          n_groups=n_timed, budget_s=budget_s, window=len(window) if with_window and window else 0,
                          threads=ctx.threads, device=ctx.device)

    with_window = {kind: _times_window(plan, kind, ctx.dtype) for kind in [PROXY_KIND, *kinds]}
    keys = {kind: key(kind, windowed) for kind, windowed in with_window.items()}
    raw: dict[str, KindTiming] = {}
    measured: dict[str, str] = {}  # kind -> when its timing was taken (UTC)
    cached: set[str] = set()

    def build_proxy():
        """The proxy model, its construction timed as PROXY_KIND unless that timing is cached."""
        start = time.perf_counter()
        model = proxy_model(ctx.source, shape, seed=ctx.compress_seed, n_layers=proxy_dims.n_layers,
                            trust_remote_code=ctx.trust_remote_code).to(ctx.device)
        if PROXY_KIND not in raw:
            raw[PROXY_KIND] = KindTiming(PROXY_KIND, 0, 0, 0.0, time.perf_counter() - start)
            measured[PROXY_KIND] = now_utc()
        return model

    for kind in [PROXY_KIND, *kinds]:
        hit = cache.get(keys[kind]) if cache and not retime else None
        if hit is not None:
            try:
                raw[kind] = KindTiming(**hit[0])
            except TypeError:  # an entry of another layout: timed again
                continue
            measured[kind] = hit[1]
            cached.add(kind)

    def kind_dtype(kind: str, spec: str | None) -> str:
        return kind.split()[-1] if kind.startswith("torch ") and not spec else "float32"

    dense = f32 = None
    with tempfile.TemporaryDirectory(prefix="auditor-plan-") as tmp:  # never inside the run directory
        for kind, spec in kinds.items():
            if kind in raw:
                continue
            if dense is None:
                dense = build_proxy()
            if kind.startswith("llama.cpp") and f32 is None:  # one export for every llama.cpp kind (time_kind)
                f32 = export_f32(dense, Path(tmp))
            raw[kind] = time_kind(
                kind, spec, kind_dtype(kind, spec), dense, tokenizer, prompts, calls=calls,
                batch_size=ctx.batch_size, pad_id=int(pad), workdir=Path(tmp) / kind.replace(" ", "_"),
                seed=ctx.compress_seed, window_ids=window if with_window[kind] else None,
                n_threads=ctx.threads, budget_s=budget_s, f32_export=f32)
            measured[kind] = now_utc()
        if PROXY_KIND not in raw:  # every kind cached but the proxy's construction: build it once to time it
            dense = build_proxy()
        del dense
        # The torch kinds just timed on a shallower proxy, again on the same passes without blocks (`deepen`).
        blockless_kinds = [kind for kind in kinds if shallower and kind.startswith("torch ") and kind not in cached]
        bare = None
        try:
            for kind in blockless_kinds:
                if bare is None:
                    bare = proxy_model(ctx.source, shape, seed=ctx.compress_seed, n_layers=0,
                                       trust_remote_code=ctx.trust_remote_code).to(ctx.device)
                t = raw[kind]
                bare_t = time_kind(
                    kind, kinds[kind], kind_dtype(kind, kinds[kind]), bare, tokenizer, prompts,
                    calls=calls[:t.score_calls], batch_size=ctx.batch_size, pad_id=int(pad),
                    workdir=Path(tmp) / f"blockless_{kind.replace(' ', '_')}", seed=ctx.compress_seed,
                    window_ids=window if with_window[kind] else None, n_threads=ctx.threads, budget_s=None,
                    rounds=BLOCKLESS_ROUNDS)
                raw[kind] = replace(t, blockless_score_s=bare_t.score_wall_s,
                                    blockless_ppl_s=bare_t.ppl_wall_s if t.ppl_tokens else None)
        except Exception as exc:  # an architecture that cannot run without blocks: its kinds keep the FLOPs scaling
            log.warning("--plan: the proxy without blocks did not run (%s: %s); torch rates scaled by FLOPs",
                        type(exc).__name__, exc)
        del bare
    if cache is not None:
        for kind, timing in raw.items():
            if kind not in cached:
                cache.put(keys[kind], asdict(timing), measured[kind])
    timings: dict[str, KindTiming] = {}
    n_deepened = 0
    for kind in kinds:
        t = raw[kind]
        timed = calls[:t.score_calls]
        score_s = deepen(t.score_wall_s, t.blockless_score_s, shape.dims.n_layers, proxy_dims.n_layers)
        if score_s is None:  # by FLOPs: the same work costs this much more on the model
            score_s = t.score_wall_s * work_flops(shape.dims, timed) / work_flops(proxy_dims, timed)
        else:
            n_deepened += 1
        ppl_s = 0.0
        if t.ppl_tokens:
            ppl_s = deepen(t.ppl_wall_s, t.blockless_ppl_s, shape.dims.n_layers, proxy_dims.n_layers)
            if ppl_s is None:
                ppl_s = t.ppl_wall_s * (window_flops_per_token(shape.dims, t.ppl_tokens)
                                        / window_flops_per_token(proxy_dims, t.ppl_tokens))
        timings[kind] = replace(t, score_wall_s=score_s, build_s=t.build_s * by_params, ppl_wall_s=ppl_s)
    proxy_s = raw[PROXY_KIND].build_s

    units = []
    for u in plan.units:
        if u.kind == MEASURE:  # after the compression estimates, which it uses
            continue
        kind = unit_kind(u, ctx.dtype)
        t = timings[kind]
        rate = t.score_tokens_per_s
        if u.kind == PPL:  # a longer window costs more per token (attention): scale by FLOPs per token
            full = min(ctx.perplexity.max_length, len(corpus.ids))
            rate = t.ppl_tokens_per_s * (window_flops_per_token(shape.dims, t.ppl_tokens)
                                         / window_flops_per_token(shape.dims, full))
        units.append(UnitEstimate(u, kind, tokens[u.id], tokens[u.id] / rate))
    compression: dict[str, float] = {}
    calib_passes: dict[str, int] = {}
    for spec in dict.fromkeys(u.spec for u in plan.units):
        if spec == DENSE:
            continue
        seconds = 0.0
        for u in plan.units:
            if u.spec == spec and kind_spec(spec, u.backend):
                seconds = max(seconds, timings[unit_kind(u, ctx.dtype)].build_s)
        if spec in calib_specs:
            c = ctx.calibration
            calib_passes[spec] = sum(step.calibration_passes for step in parse_chain(spec))
            seconds += calib_passes[spec] * c.n_samples * c.seq_len / timings["torch float32"].score_tokens_per_s
        compression[spec] = seconds
    notes = [f"rates timed on a {proxy_dims.n_layers}-block proxy of the model ({proxy_params:,} random "
             f"parameters; the model has {shape.n_params:,} in {shape.dims.n_layers} blocks) and scaled to its "
             f"depth: {n_deepened} kind(s) by the blocks' share of the time (the same passes timed without "
             "blocks), the others by FLOPs; builds and the model load scaled by parameters (the load from the "
             "proxy's construction)"
             if shallower else
             f"rates timed on the model's architecture with random weights ({shape.n_params:,} parameters); "
             "the model load is the time to build it",
             "pruning masks and RTN rounding are not counted (seconds on a small model, minutes at 1.5B "
             "parameters); a quantizer's build time is its kind's measured build"]
    for spec, passes in calib_passes.items():
        notes.append(f"{spec} adds its float32 calibration forwards: {passes} passes over "
                     f"{ctx.calibration.n_samples} x {ctx.calibration.seq_len} tokens")
    if any(u.variant == DENSE_FLOAT32 for u in plan.units):
        notes.append(f"{DENSE_FLOAT32}: the precision baseline, dense computed in float32")
    for u in plan.units:
        if u.kind == MEASURE:
            units.append(measure_estimate(plan, u, prompts, timings, compression, proxy_s * by_params))
            notes.append(f"{u.name}: {ctx.measure.repeats} rounds of one fresh worker per timed artifact "
                         f"({WORKER_START_S:.0f} s start-up each), its tokens at the scoring rate of the artifact's "
                         "kind (torch float32 where the plan times no such kind); batch-1 decoding is slower per "
                         "token than scoring, so it is a lower bound on a large model")
    floor_s, peaks = None, {}
    if ctx.device == "cpu" and units:  # the peaks are this CPU's; on a GPU they would say nothing
        c = ctx.calibration
        calib_tokens = sum(calib_passes.values()) * c.n_samples * c.seq_len if calib_passes else 0
        needed = {"float32"} if calib_tokens else set()  # the arithmetics to measure
        for u in units:
            if u.unit.kind in (SCORE, PPL):
                needed.update(floor_arithmetics(u.kind))
        first = plan_trees(calls[0]) if calls else None  # the median pass: the matmuls' row count
        rows, head_rows = (first.n_nodes, max(1, first.n_answer_nodes)) if first else (512, 1)
        peaks, kept = matmul_peaks(shape.dims, sorted(needed), rows, head_rows, cache=cache,
                                   key=lambda kind: key(kind, False), retime=retime)
        floor_s = floor_seconds(shape.dims, units, calib_tokens, peaks) if needed else None
        if kept:
            notes.append(f"the floor's matmul rates read from this machine's cache (taken {min(kept)}); "
                         "`--retime` measures them anew")
    if cached:
        when = sorted(measured[k] for k in cached)
        notes.append(f"{len(cached)} of {len(raw)} timings read from this machine's cache ({cache.path}; taken "
                     f"{when[0]}" + (f" to {when[-1]}" if when[-1] != when[0] else "")
                     + "): the load average above is today's, not theirs; `--retime` measures them anew")
    return PlanEstimate(plan.run_dir, units, timings, compression, proxy_s * by_params,
                        (load_before, os.getloadavg()[0]), notes, floor_s, peaks)


def format_estimate(est: PlanEstimate, n_cores: int | None = None) -> str:
    """The `auditor run --plan` text: units, tokens, seconds; kinds and their measured rates; totals."""
    lines = [f"run directory: {est.run_dir} (nothing is run or written by --plan)",
             f"{'unit':<58} {'kind':<20} {'tokens':>12} {'est. s':>9}"]
    for u in est.units:
        lines.append(f"{u.unit.name:<58} {u.kind:<20} {u.tokens:>12,} {u.est_s:>9.0f}")
    lines.append("")
    lines.append(f"{'kind':<20} {'timed items':>11} {'timed tokens':>12} {'tokens/s':>10} {'ppl tokens/s':>13} "
                 f"{'build s':>8}")
    for t in est.timings.values():
        ppl = f"{t.ppl_tokens_per_s:13.0f}" if t.ppl_tokens else f"{'-':>13}"
        lines.append(f"{t.kind:<20} {t.score_items:>11} {t.score_tokens:>12,} {t.score_tokens_per_s:>10.0f} {ppl} "
                     f"{t.build_s:>8.1f}")
    lines.append("")
    n_tokens = sum(u.tokens for u in est.units if u.unit.kind == SCORE)
    lines.append(f"scoring:     {est.score_s / 3600:7.2f} h  ({n_tokens:,} planned tokens)")
    lines.append(f"perplexity:  {est.ppl_s / 3600:7.2f} h")
    lines.append(f"compression: {sum(est.compression_s.values()) / 3600:7.2f} h  "
                 f"({len(est.compression_s)} variants built)")
    lines.append(f"model load:  {est.load_s / 3600:7.2f} h")
    if any(u.unit.kind == MEASURE for u in est.units):
        lines.append(f"measurement: {est.measure_s / 3600:7.2f} h")
    lines.append(f"estimated wall time: {est.total_s / 3600:.2f} h on {n_cores or os.cpu_count()} cores "
                 f"(rates timed at load average {est.load_avg[0]:.2f} -> {est.load_avg[1]:.2f}; a busier or "
                 "quieter machine changes it in proportion)")
    if est.floor_s is not None:
        rates = ", ".join(f"{a} {r / 1e9:,.0f}" for a, r in sorted(est.peaks.items()))
        lines.append(f"floor: {est.floor_s / 3600:.2f} h: the same scoring, perplexity and calibration tokens "
                     f"through the linear layers alone at the matmul rates measured on this CPU ({rates} GFLOP/s "
                     "at the model's widths): a faster engine can approach it, not pass it")
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)


#: Seconds a fresh measurement worker takes before loading anything (`python -m auditor.measure.worker` imports
#: torch, transformers and llama_cpp): 2.4 s of CPU measured on the 2-core dev machine (2026-12-06), rounded up;
#: its wall time grows with the machine's load.
WORKER_START_S = 3.0


def measure_runs(plan: RunPlan, prompts: PromptSet) -> list[tuple[str, str, int]]:
    """(spec, runtime kind, tokens) of every worker run of the measurement unit (auditor.measure.measurement):
    `repeats` rounds over each measured spec's timed artifacts (torch for its safetensors directory, llama.cpp
    for its GGUF, as the formats allow). Tokens of a run: the prompt four times (time to first token, warm-up,
    timed prefill, the prefill before the decode), `new_tokens` decode steps and `bbq_items` scored groups."""
    settings = plan.context.measure
    if settings is None:
        return []
    prompt = len(prompts.groups[0].full_ids(0)) if prompts.groups else 0
    bbq = plan_trees(list(prompts.groups[:settings.bbq_items])).n_nodes if settings.bbq_items else 0
    per_run = 4 * prompt + settings.new_tokens + bbq
    out = []
    for _ in range(settings.repeats):
        for spec in plan.context.measured:
            natural, capable = chain_runtimes(spec)
            timed = [b for b, fmt in ((TORCH, "safetensors"), (LLAMA_CPP, "gguf"))
                     if fmt in settings.formats and b in capable and (b == natural or natural == TORCH)]
            out += [(spec, unit_kind(Unit(SCORE, spec, spec, b), FLOAT32), per_run) for b in timed]
    return out


def measure_estimate(plan: RunPlan, unit: Unit, prompts: PromptSet, timings: dict[str, KindTiming],
                     compression: dict[str, float], load_s: float) -> UnitEstimate:
    """Seconds of the measurement unit: each measured spec built again (its compression estimate) and exported
    (about a model load per artifact), then every worker run: start-up, a load, its tokens at its kind's
    scoring rate (torch float32's when the plan timed no such kind)."""
    runs = measure_runs(plan, prompts)
    fallback = timings.get("torch float32") or next(iter(timings.values()))
    seconds = sum(compression.get(spec, 0.0) for spec in plan.context.measured)
    seconds += load_s * len({(spec, kind) for spec, kind, _ in runs})
    for _, kind, tokens in runs:
        seconds += WORKER_START_S + load_s + tokens / timings.get(kind, fallback).score_tokens_per_s
    return UnitEstimate(unit, "measure", sum(n for _, _, n in runs), seconds)
