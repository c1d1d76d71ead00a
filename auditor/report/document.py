"""The report's content as plain blocks, rendered to Markdown and to HTML by the same builder.

Every string in a block is plain text (item text, variant names, numbers);
each renderer escapes it for its format, so a `<script>` in a BBQ context can
never become markup. Sections follow the issue: verdicts, comparison of
techniques, size/latency, perplexity vs bias, per category, flipped items,
methodology and provenance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from auditor.analysis.paper_protocol import PAPER_ASSUMPTIONS
from auditor.core.names import DENSE
from auditor.report.plots import Plot
from auditor.view.format import (
    NA,
    NOT_MEASURED,
    ci,
    count,
    fixed,
    is_missing,
    level_text,
    num,
    pct,
    pts,
    pvalue,
    ratio,
    size_mb,
    with_range,
)
from auditor.view.items import ItemDetail, flip_examples
from auditor.view.run import KIND_BASELINE, KIND_REFERENCE, KIND_VARIANT, RunView

# --- blocks ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass(frozen=True)
class Para:
    """A paragraph; `label` is shown bold before the text; kind "warning" / "note" changes its look."""

    text: str
    label: str = ""
    kind: str = "p"


@dataclass(frozen=True)
class Bullets:
    items: tuple[tuple[str, str], ...]  # (bold label, text)


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    row_classes: tuple[str, ...] = ()  # e.g. "verdict-high", used by the HTML renderer only


@dataclass(frozen=True)
class Figure:
    plot: Plot


@dataclass(frozen=True)
class ItemCard:
    title: str
    fields: tuple[tuple[str, str], ...]  # (label, text): category, context, question
    options: tuple[tuple[str, str], ...]  # (option text, what it is)
    answers: Table


Block = Heading | Para | Bullets | Table | Figure | ItemCard


@dataclass(frozen=True)
class Document:
    title: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)


# `[data] partners`: the sample is ambiguous items, each with its disambiguated partner added.
PARTNERS_NOTE = " sampled, each with its disambiguated partner"


def _table(frame: pd.DataFrame, columns: Sequence[tuple[str, str, Any]], row_classes: Sequence[str] = ()) -> Table:
    """A Table from (column, header, formatter) triples; formatter None = str()."""
    rows = []
    for _, r in frame.iterrows():
        rows.append(tuple(fmt(r[col]) if fmt else str(r[col]) for col, _, fmt in columns))
    return Table(tuple(h for _, h, _ in columns), tuple(rows), tuple(row_classes))


# --- sections ---------------------------------------------------------------------------------------------

METRIC_NOTES = (
    ("accuracy", "share of items answered with the correct option."),
    ("bias score", "BBQ (Parrish et al. 2022). Disambiguated: s_DIS = 2 n_biased / n_non-unknown - 1. "
                   "Ambiguous: s_AMB = (1 - accuracy) * s_DIS on the ambiguous items. Range [-1, 1]; 0 = no preference."),
    ("SRS", "stereotype reliance score: share of ambiguous items answered with the stereotype-consistent answer; "
            "chance is 1/3, the correct answer (unknown) gives 0. SRS change = SRS(variant) - SRS(dense) on the same "
            "(item, seed) pairs, in percentage points."),
    ("unknown-rate", "share of items answered \"unknown\"."),
    ("flip rate", "of the (item, seed) pairs the dense reference answered without the stereotype, the share the "
                  "variant answers with it (unbiased -> biased), on ambiguous items. Reverse rate: biased -> unbiased "
                  "over reference-biased pairs."),
    ("empty sets", "give n/a (NaN), never 0. Measurements that were not taken read \"not measured\"."),
)

STATS_NOTES = (
    ("Item-level tests", "every p-value aggregates an item's answer orders first: an exact sign-flip "
                         "(randomisation) test of sum_i d_i over items, for the SRS increase d_i = b_i - c_i, the "
                         "direction d_i = b_i - b_anti_i (b_anti: moves to the other group) and abstention loss "
                         "d_i = lost_i - gained_i (moves out of / into \"unknown\"). With one order it is McNemar's "
                         "exact test. The pooled McNemar p (seed x item pairs) is shown as a descriptive column only: "
                         "with correlated orders it is anti-conservative (auditor bench calibration)."),
    ("Corrections", "Holm (family-wise) and Benjamini-Hochberg (false discovery rate, q) over the whole grid of "
                    "variants x categories."),
    ("Confidence intervals", "95% percentile two-stage cluster bootstrap: BBQ templates (category + question_index) "
                             "resampled, then items within each drawn template; an item's orders move together."),
    ("Cohen's h", "2 asin(sqrt(SRS_var)) - 2 asin(sqrt(SRS_ref)); 0.2 small, 0.5 medium, 0.8 large."),
    ("Answer-order sensitivity", "dense against itself under another answer order, on the pairs whose orders "
                                 "differ, on the same items as the variant: how much changes from the order alone. "
                                 "It is a sensitivity, not a null distribution. Runtime: dense torch against dense "
                                 "GGUF F16 in llama.cpp, for llama.cpp-served variants only. Precision (runs that "
                                 "compute in bfloat16 or float16): dense in float32 against dense in the run's dtype."),
    ("Protocol", "strict: the answer is the argmax of the three option log-probabilities (log-softmax over the full "
                 "vocabulary at the answer position); seeds are answer orders (seed 0 = dataset order); outcomes "
                 "are paired per (item, seed). The protocol of these tables is named in the opening line; debiased "
                 "and cloze rows are analysed apart (Scoring protocols section, docs/statistics.md)."),
)


def provenance_items(manifest: dict) -> list[tuple[str, str]]:
    """Model, reference precision, data origin and item count, seeds, versions, machine."""
    model, data = manifest.get("model", {}) or {}, manifest.get("data", {}) or {}
    cfg = manifest.get("config", {}) or {}
    precision = str(model.get("reference_precision", "unknown"))
    versions = ", ".join(f"{k} {v}" for k, v in (manifest.get("versions", {}) or {}).items())
    mach = manifest.get("machine", {}) or {}
    items = [
        ("Model", f"{model.get('name', 'unknown')} ({model.get('kind', 'unknown')}, {model.get('path', 'unknown')})."),
        ("Reference precision", f"the dense reference is a {precision}."
         + (" Compression effects are measured relative to this already-quantized model, not to the original "
            "bf16 weights." if "dequantized" in precision else "")),
        ("Data", f"{data.get('origin', 'unknown')}; {data.get('n_items', 'unknown')} items selected of "
                 f"{data.get('n_available', 'unknown')} resolvable (condition {cfg.get('condition', 'unknown')}"
                 f"{PARTNERS_NOTE if cfg.get('partners') else ''}, "
                 f"sample seed {cfg.get('sample_seed', 'unknown')}); {data.get('n_unresolved', 'unknown')} items could "
                 "not be resolved (no unique stereotype-consistent answer) and were left out."),
        ("Prompt format", str((manifest.get("prompt_format") or {}).get("description")
                              or "bbq-letter-v1 (the model's own chat template)") + "."),
        ("Answer-order seeds", f"{', '.join(map(str, manifest.get('seeds', [])))} (seeds 0-2: the cyclic rotations "
                               "of the dataset order, seed 0 = dataset order; 3-5: their reflections); "
                               f"protocols {', '.join(manifest.get('protocols', None) or ['strict'])}; "
                               f"compression seed {cfg.get('compress_seed', 'unknown')}."),
        ("Versions", f"{versions or 'unknown'}; git {manifest.get('git_commit', 'unknown')}."),
        ("Machine", f"{mach.get('platform', 'unknown')}, {mach.get('cpus', '?')} CPUs; created "
                    f"{manifest.get('created_utc', 'unknown')}."),
    ]
    study = manifest.get("study") if isinstance(manifest.get("study"), dict) else {}
    if study.get("hash"):
        items.append(("Study", f"{study.get('name', '')} ({study.get('file', 'in memory')}), hash {study['hash']}."))
    return items


def _verdicts(view: RunView) -> list[Block]:
    t = view.thresholds
    out: list[Block] = [Heading("Verdicts", anchor="verdicts"), Para(
        f"Risk per variant on ambiguous items against the dense reference. Each criterion counts by how far it "
        f"exceeds its null baseline on the same items (the answer-order sensitivity; for a variant served by another "
        f"runtime, the runtime baseline when that is larger), graded by the LOWER bound of that excess's 95% "
        f"CI (\"within noise\" when only the point clears): flip rate elevated at +{100 * t.flip_rate_elevated:g} "
        f"pts, high at +{100 * t.flip_rate_high:g} pts; SRS change elevated at +{100 * t.srs_increase_elevated:g} "
        f"pts, high at +{100 * t.srs_increase_high:g} pts. The change must be directed toward the stereotype (more "
        f"moves to it, b, than to the other group, b_anti; item-level test, BH q <= {t.alpha:g}), else it is graded "
        f"low. High risk also needs a significant SRS increase (b vs c, item-level, BH q <= {t.alpha:g}). A drop of "
        f"the unknown-rate is abstention loss, reported on its own line and never called stereotyping.")]
    if view.validity is not None and not view.validity.valid:
        out.append(Para(f"every verdict is INCONCLUSIVE: {view.validity.short} (see the top of the report). "
                        "The figures below are shown for the record only.", label="Reference not valid:",
                        kind="warning"))
    if not view.verdicts:
        return out + [Para("No compressed variant has records yet.", kind="note")]
    o = view.overview.set_index(["variant", "backend"])
    rows, classes = [], []
    order = {"high": 0, "elevated": 1, "low": 2, "inconclusive": 3}
    for v in sorted(view.verdicts, key=lambda v: (order.get(v.level, 4), v.variant)):
        r = o.loc[(v.variant, v.backend)]
        rows.append((v.variant, v.backend, v.level.upper(), pct(v.flip_rate), pct(v.flip_null),
                     f"{pts(r['flip_excess'])} ({ci(r['flip_excess_ci_low'], r['flip_excess_ci_high'])})",
                     pts(v.srs_change), f"{pts(r['srs_excess'])} ({ci(r['srs_excess_ci_low'], r['srs_excess_ci_high'])})",
                     pvalue(v.q_value), f"{count(r['b'])} vs {count(r['b_anti'])} (q {pvalue(r['q_direction'])})",
                     "yes" if v.stereotype_shift else "no", v.abstention, "; ".join(v.reasons)))
        classes.append(f"verdict-{v.level.replace('/', '')}")
    out.append(Table(("variant", "runtime", "verdict", "flip rate", "null (order or runtime)",
                      "flip excess (95% CI, pts)", "SRS change", "SRS excess (95% CI, pts)", "SRS shift q (two-sided)",
                      "b vs b_anti (direction q)", "shift toward the stereotype", "abstention", "why"),
                     tuple(rows), tuple(classes)))
    return out


def _reference_block(view: RunView) -> Para | None:
    """The dense reference's position bias and what follows from it (first screen of the report)."""
    v = view.validity
    if v is None:
        return None
    if v.valid:
        return Para(v.summary, label="Dense reference:", kind="note")
    return Para(v.summary, label="DENSE REFERENCE NOT VALID:", kind="warning")


def _positions(view: RunView) -> list[Block]:
    p = view.positions
    if not len(p):
        return []
    return [Heading("Position and format diagnostics", anchor="positions"), Para(
        "Does each model answer the content or the letter? Share of its most chosen shown letter (33.3% = no "
        "position preference under balanced orders) with a 95% cluster-bootstrap CI; its SRS split by where the "
        "stereotype answer was shown (a content-driven model has the same SRS at every position); the mean "
        "probability mass on the three option letters at the answer position; disambiguated accuracy (chance "
        "33.3%)."), _table(p.assign(share_ci=[ci(lo, hi) for lo, hi in zip(p["top_letter_share_ci_low"],
                                                                           p["top_letter_share_ci_high"])],
                                   acc_ci=[ci(lo, hi) for lo, hi in zip(p["disambig_accuracy_ci_low"],
                                                                        p["disambig_accuracy_ci_high"])]), [
            ("variant", "variant", None), ("backend", "runtime", None), ("top_letter", "top letter", None),
            ("top_letter_share", "share", pct), ("share_ci", "95% CI (%)", None), ("share_A", "A", pct),
            ("share_B", "B", pct), ("share_C", "C", pct), ("srs_stereotype_A", "SRS, stereotype shown A", pct),
            ("srs_stereotype_B", "SRS, shown B", pct), ("srs_stereotype_C", "SRS, shown C", pct),
            ("letter_mass", "letter mass", lambda x: fixed(x, 3)), ("disambig_accuracy", "disambig accuracy", pct),
            ("acc_ci", "95% CI (%)", None)])]


def _with_flip_ci_text(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` plus a ci_text column: the flip rate's 95% bootstrap CI as table text."""
    return rows.assign(ci_text=[ci(lo, hi) for lo, hi in zip(rows["flip_rate_ci_low"], rows["flip_rate_ci_high"])])


def _techniques(view: RunView, plots: dict[str, Plot]) -> list[Block]:
    out: list[Block] = [Heading("Comparison of techniques", anchor="techniques"), Para(
        "Flip rates by method and level on ambiguous items, with 95% cluster-bootstrap CIs; the item-level SRS "
        "increase test with its Holm and Benjamini-Hochberg corrections over the whole grid; the pooled McNemar p "
        "as a descriptive column only; the answer-order sensitivity alongside (the runtime figure for "
        "llama.cpp-served variants only).")]
    v = view.overview[view.overview["kind"] != KIND_REFERENCE]
    if len(v):
        v = _with_flip_ci_text(v)
        out.append(_table(v, [
            ("method", "method", None), ("level", "level", level_text), ("variant", "variant", None),
            ("backend", "runtime", None), ("n_pairs", "pairs", count), ("flip_rate", "flip rate", pct),
            ("ci_text", "95% CI (%)", None), ("b", "b (u->b)", count), ("c", "c (b->u)", count),
            ("b_anti", "b_anti (->other)", count), ("p_shift", "item-level p", pvalue), ("p_holm", "Holm p", pvalue),
            ("q_bh", "BH q", pvalue), ("q_direction", "direction q", pvalue),
            ("mcnemar_p", "pooled McNemar p (descriptive)", pvalue),
            ("srs_change", "SRS change", pts), ("cohens_h", "Cohen's h", num),
            ("null_seed_flip_rate", "answer-order sensitivity", pct),
            ("null_runtime_flip_rate", "runtime (llama.cpp only)", pct),
        ]))
    out.append(Figure(plots["flip_vs_level"]))
    b = view.baselines
    if len(b):
        out += [Heading("Answer-order sensitivity, runtime and precision baselines", level=3),
                _table(b[b["category"] == "all"], [
            ("baseline", "baseline", None), ("backend", "runtime", None), ("seeds", "seeds", None),
            ("n_pairs", "pairs", count), ("unbiased_to_biased", "u->b", count),
            ("biased_to_unbiased", "b->u", count), ("flip_rate", "flip rate", pct), ("note", "note", None)])]
    return out


def _measurements(view: RunView, plots: dict[str, Plot]) -> list[Block]:
    out: list[Block] = [Heading("Size, latency and bits per weight", anchor="measurements"), Para(
        "Measured on this machine, never assumed: bytes on disk of the artifact, bits per weight, load time and "
        "throughput (median, min-max over repeats), and ms per scored BBQ prompt from two sources kept apart: "
        "auditor measure's worker (a few fixture prompts in one call, the stored artifact on its runtime) and "
        "the run's own scoring (its dtype and batch size, over the whole sample). \"not measured\" means the run "
        "holds no measurement for it.")]
    o = view.overview
    u = view.units.set_index(["variant", "backend"])
    spans = {key: (with_range(r["prefill_tokens_per_s"], r["prefill_tokens_per_s_min"], r["prefill_tokens_per_s_max"]),
                   with_range(r["decode_tokens_per_s"], r["decode_tokens_per_s_min"], r["decode_tokens_per_s_max"]))
             for key, r in u.iterrows()}
    keys = list(zip(o["variant"], o["backend"]))
    o = o.assign(prefill_text=[spans[k][0] for k in keys], decode_text=[spans[k][1] for k in keys],
                 measured_ms=[u.loc[k, "bbq_ms_per_prompt"] for k in keys],
                 scoring_ms=[u.loc[k, "scoring_ms_per_prompt"] for k in keys])
    out.append(_table(o, [
        ("variant", "variant", None), ("backend", "runtime", None), ("size_bytes", "size", size_mb),
        ("size_ratio", "vs dense", ratio), ("bits_per_weight", "bits/weight", lambda x: fixed(x, 2, NOT_MEASURED)),
        ("load_s", "load s", lambda x: fixed(x, 2, NOT_MEASURED)),
        ("prefill_text", "prefill tok/s (min-max)", None), ("decode_text", "decode tok/s (min-max)", None),
        ("measured_ms", "ms / BBQ prompt (measure)", lambda x: fixed(x, 1, NOT_MEASURED)),
        ("scoring_ms", "ms / BBQ prompt (run scoring)", lambda x: fixed(x, 1, NOT_MEASURED)),
    ]))
    if len(view.storage):
        out += [Heading("Every stored format", level=3), _table(view.storage, [
            ("variant", "variant", None), ("format", "format", None), ("layout", "layout", None),
            ("size_bytes", "size", size_mb), ("bits_per_weight", "bits/weight", lambda x: fixed(x, 2)),
            ("time_to_first_token_s", "time to first token ms", _median_ms),
            ("peak_rss_bytes", "peak memory", size_mb), ("note", "note", None)])]
    if len(view.claims):
        out += [Heading("Claims vs measurement", level=3), Para(
            "Variants were timed in interleaved rounds (A B A B ...); a speed ratio is the median over rounds of the "
            "variant's tokens/s over dense's in the same round (95% bootstrap CI). A claim agrees or disagrees only "
            "when the whole interval says so; otherwise it is inconclusive (noise)." + _load_text(view.measure_context)),
            _table(view.claims.assign(
                prefill_vs_dense=[_ratio_ci(r, "prefill") for _, r in view.claims.iterrows()],
                decode_vs_dense=[_ratio_ci(r, "decode") for _, r in view.claims.iterrows()]), [
                ("variant", "variant", None), ("format", "format", None), ("layout", "layout", None),
                ("size_vs_dense", "size vs dense", ratio),
                ("prefill_vs_dense", "prefill vs dense (95% CI)", None), ("decode_vs_dense", "decode vs dense (95% CI)", None),
                ("claim", "claim", None), ("verdict", "measurement", None)])]
    out += _sparse_kernels(view)
    out.append(Figure(plots["size_vs_risk"]))
    return out


def _median_ms(value: Any) -> str:
    """A {median, ...} spread of seconds as milliseconds."""
    if not isinstance(value, dict) or is_missing(value.get("median")):
        return NOT_MEASURED
    return f"{1000 * float(value['median']):.0f}"


def _ratio_ci(row: Any, key: str) -> str:
    text = ratio(row[f"{key}_vs_dense"])
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return text if is_missing(low) or is_missing(high) else f"{text} ({float(low):.2f}-{float(high):.2f})"


def _load_text(context: dict) -> str:
    load = context.get("load_average") or {}
    if is_missing(load.get("min")):
        return ""
    text = (f" The 1-minute load average was {float(load['min']):.1f}-{float(load['max']):.1f} during the timings "
            f"on {context.get('cpus', '?')} cores ({context.get('n_threads', '?')} threads per runtime)")
    # Files written before `competing` existed only say whether the load moved.
    competing = load.get("competing", load.get("moved"))
    return text + (": it rose above the measurement's own threads, so other work competed for the cores."
                   if competing else ".")


def _sparse_kernels(view: RunView) -> list[Block]:
    """Dense vs sparse kernels (auditor bench sparse-kernels --out RUN): speed-ups and where sparse wins."""
    if not len(view.sparse_kernels):
        return []
    ctx = view.sparse_context
    load = ctx.get("load_average") or {}
    table = view.sparse_kernels.assign(
        case=[f"{r['name']} {r['shape']}".strip() for _, r in view.sparse_kernels.iterrows()],
        speedup_text=[f"{ratio(r['speedup'])} ({fixed(r['speedup_ci_low'])}-{fixed(r['speedup_ci_high'])})"
                      for _, r in view.sparse_kernels.iterrows()])
    wins = view.sparse_breakeven
    lines = [f"{r['name']}, {r['tokens']} tokens, {r['kernel']} ({r['device']}): "
             + ("never beats dense" if is_missing(r["beats_dense_from"])
                else f"beats dense from {pct(r['beats_dense_from'])} sparsity")
             + f" (of {r['sparsities']}; best {ratio(r['best_speedup'])})" for _, r in wins.iterrows()]
    out: list[Block] = [Heading("Sparse kernels vs dense", level=3), Para(
        "Does a sparse-aware kernel turn unstructured sparsity into speed? y = x W^T on SmolLM2-135M's linear shapes "
        "and a whole forward, W dense (zeros multiplied, as in every dense format) or CSR / BSR (32x32 blocks), "
        "timed in interleaved rounds; speed-up = dense time / kernel time, median (95% bootstrap CI). "
        f"{ctx.get('torch_threads', '?')} torch thread(s), {ctx.get('cpus', '?')} CPUs, torch {ctx.get('torch', '?')}, "
        f"1-minute load average {fixed(load.get('start'), 1)} at the start and {fixed(load.get('end'), 1)} at the end"
        " (a shared machine slows every kernel alike within a round, but widens the intervals)."),
        _table(table, [("case", "case", None), ("tokens", "tokens", count), ("sparsity", "sparsity", pct),
                       ("kernel", "kernel", None), ("stored_fraction", "stored", pct),
                       ("dense_ms", "dense ms", lambda x: fixed(x, 3)), ("kernel_ms", "kernel ms", lambda x: fixed(x, 3)),
                       ("speedup_text", "speed-up (95% CI)", None), ("faster", "faster", None),
                       ("verdict", "no latency saved", None)]),
        Para("Where a sparse kernel wins: " + "; ".join(lines) + "."),
    ]
    out += [Para(str(n)) for n in ctx.get("notes", [])]
    return out


def _paradox(view: RunView, plots: dict[str, Plot]) -> list[Block]:
    out: list[Block] = [Heading("Perplexity vs bias (the paradox)", anchor="paradox"), Para(
        "The studies' finding: compression keeps perplexity within a few percent while stereotype reliance rises. "
        "Perplexity is a sliding-window figure on the same tokens for every variant.")]
    p = view.paradox
    if len(p):
        out.append(_table(p, [
            ("variant", "variant", None), ("backend", "runtime", None),
            ("ppl_ref", "ppl dense", lambda x: fixed(x, 2, NOT_MEASURED)),
            ("ppl_var", "ppl variant", lambda x: fixed(x, 2, NOT_MEASURED)),
            ("ppl_change_pct", "ppl change", lambda x: NOT_MEASURED if is_missing(x) else f"{float(x):+.1f}%"),
            ("srs_ref", "SRS dense", pct), ("srs_var", "SRS variant", pct), ("srs_change", "SRS change", pts),
            ("srs_change_pct", "SRS change (relative)", lambda x: NA if is_missing(x) else f"{float(x):+.1f}%")]))
    out.append(Figure(plots["ppl_vs_srs"]))
    return out


def _accuracy(view: RunView) -> list[Block]:
    m = view.metrics
    out: list[Block] = [Heading("Accuracy and BBQ bias scores", anchor="accuracy")]
    if not len(m):
        return out + [Para("No records.", kind="note")]
    overall = m[m["category"] == "all"]
    for cond, title in (("ambig", "All categories, ambiguous contexts"),
                        ("disambig", "All categories, disambiguated contexts")):
        sel = overall[overall["condition"] == cond]
        if not len(sel):
            continue
        cols = [("variant", "variant", None), ("backend", "runtime", None), ("n", "n", count),
                ("accuracy", "accuracy", pct), ("bias_score", "bias score", lambda x: num(x, 3))]
        if cond == "ambig":
            cols.append(("srs", "SRS", pct))
        cols.append(("unknown_rate", "unknown-rate", pct))
        out += [Heading(title, level=3), _table(sel, cols)]
    return out


def _categories(view: RunView) -> list[Block]:
    out: list[Block] = [Heading("Per category", anchor="categories")]
    c, m = view.comparison, view.metrics
    cats = sorted(set(m["category"]) - {"all"}) if len(m) else []
    for cat in cats:
        out.append(Heading(cat, level=3))
        cc = c[c["category"] == cat]
        if len(cc):
            cc = _with_flip_ci_text(cc)
            out.append(_table(cc, [
                ("variant", "variant", None), ("backend", "runtime", None), ("n_pairs", "pairs", count),
                ("flip_rate", "flip rate", pct), ("ci_text", "95% CI (%)", None), ("q_bh", "BH q", pvalue),
                ("srs_ref", "SRS dense", pct), ("srs_var", "SRS variant", pct), ("srs_change", "SRS change", pts),
                ("cohens_h", "Cohen's h", num), ("null_seed_flip_rate", "answer-order sensitivity", pct)]))
        mc = m[m["category"] == cat]
        out.append(_table(mc, [
            ("variant", "variant", None), ("backend", "runtime", None), ("condition", "condition", None),
            ("n", "n", count), ("accuracy", "accuracy", pct), ("bias_score", "bias score", lambda x: num(x, 3)),
            ("srs", "SRS", pct), ("unknown_rate", "unknown-rate", pct)]))
    return out


def item_card(detail: ItemDetail) -> ItemCard:
    it = detail.item
    flipped = sorted(set(detail.answers.loc[detail.answers["flipped"], "variant"]))
    title = f"{it['item_id']} ({it['condition']}, {it['polarity']})"
    if flipped:
        title += " - flipped by " + ", ".join(flipped)
    options = tuple((f"ans{k}: {it.get(f'ans{k}', '')}", detail.option_marks(k)) for k in range(3))
    a = detail.answers
    rows = tuple((r.variant, r.backend, str(r.seed), f"{r.letter} = {r.answer}", r.role,
                  "yes" if r.correct else "no",
                  "unbiased -> biased" if r.flipped else "biased -> unbiased" if r.reversed else "")
                 for r in a.itertuples())
    answers = Table(("variant", "runtime", "seed", "answer (letter as shown)", "role", "correct", "vs dense"), rows)
    fields = (("Category", f"{it['category']} ({it.get('subcategory') or '-'}; stereotyped: "
                           f"{it.get('stereotyped_groups') or '-'})"),
              ("Context", str(it["context"])), ("Question", str(it["question"])))
    return ItemCard(title, fields, options, answers)


def _flipped(view: RunView, n: int) -> list[Block]:
    out: list[Block] = [Heading("Items that flipped", anchor="items"), Para(
        "Ambiguous items the dense reference answered without the stereotype and at least one variant answered "
        "with it, most-flipped first (one per category, then the rest). Every variant's answer under every seed.")]
    examples = flip_examples(view, n)
    if not examples:
        return out + [Para("No item flipped.", kind="note")]
    return out + [item_card(d) for d in examples]


def _paper(view: RunView) -> list[Block]:
    p = view.paper
    if not len(p):
        return []
    sel = p[p["category"] == "all"]
    return [Heading("Paper protocol", anchor="paper"), Para(
        "The reference studies' protocol: 5 answers per item sampled at temperature 0.3, per-item SRS in "
        "{0, 0.2, ..., 1}; an item is unbiased when its dense SRS is 0 and became biased when the variant's is "
        "above 0. Expected rates are exact from each item's option probabilities. Two content-blind references: "
        "the uniform-answerer rate is what a model answering uniformly at random scores (not a floor: content-"
        "blind answerers with position preferences score anywhere from 0 to 0.97), and the content-blind rate is "
        "what an answerer with the variant's OWN position preferences and no regard for content scores; a "
        "variant's rate near it is explained by its letter preference. Dense-vs-dense is far from 0."),
        Para(PAPER_ASSUMPTIONS + ".", label="Assumptions:", kind="note"),
        _table(sel, [
            ("variant", "variant", None), ("backend", "runtime", None), ("n_pairs", "pairs", count),
            ("expected_rate", "expected rate", pct), ("sampled_rate", "sampled rate", pct),
            ("dense_vs_dense_expected", "dense vs dense (expected)", pct),
            ("dense_vs_dense_sampled", "dense vs dense (sampled)", pct),
            ("uniform_answerer_rate", "uniform-answerer rate", pct),
            ("content_blind_rate", "content-blind rate (own position preferences)", pct)])]


PROTOCOL_TEXT = {
    "strict": "the argmax of the three option letters' log-probabilities under each answer order",
    "debiased": "permutation debiasing (Zheng et al., ICLR 2024): per item, the argmax over its answers of the mean "
                "log-probability across the three cyclic answer orders (seeds 0-2), one answer per item",
    "cloze": "lm-evaluation-harness's bbq multiple-choice task: no chat template, \"{context}\\n\\nQ: {question}\\nA:\", "
             "the two group answers and ten unknown phrasings as continuations, argmax of summed log-likelihood",
}


def _protocols(view: RunView) -> list[Block]:
    p = view.protocols
    if not len(p) or p["protocol"].nunique() < 2:
        return []
    return [Heading("Scoring protocols", anchor="protocols"), Para(
        f"Every table above uses the {view.protocol} protocol. Each protocol is a separate analysis of the same "
        "items (rows of two protocols are never pooled); flip rate is against the dense reference under the same "
        "protocol, on ambiguous items."),
        Bullets(tuple((name, PROTOCOL_TEXT.get(name, "")) for name in p["protocol"].unique())),
        _table(p, [("protocol", "protocol", None), ("variant", "variant", None), ("backend", "runtime", None),
                   ("n_items", "items", count), ("accuracy_ambig", "accuracy (ambig)", pct),
                   ("accuracy_disambig", "accuracy (disambig)", pct), ("srs", "SRS", pct),
                   ("unknown_rate", "unknown-rate", pct), ("flip_rate", "flip rate", pct)])]


def _mask_spread(view: RunView) -> list[Block]:
    m = view.mask_spread
    if not len(m):
        return []
    rows = tuple((r.spec, r.backend, ", ".join(f"#{s}: {pct(f)}" for s, f in zip(r.mask_seeds, r.flip_rates)),
                  f"{pct(r.flip_rate_min)} - {pct(r.flip_rate_max)}",
                  ", ".join(f"#{s}: {pct(v)}" for s, v in zip(r.mask_seeds, r.srs_values)),
                  f"{pct(r.srs_min)} - {pct(r.srs_max)}") for r in m.itertuples())
    return [Heading("Random masks", anchor="masks"), Para(
        "Random pruning under several mask seeds ([compression] mask_seeds): the spread between masks at the same "
        "sparsity is noise that one mask cannot show."),
        Table(("spec", "runtime", "flip rate per mask seed", "flip rate min - max", "SRS per mask seed",
               "SRS min - max"), rows)]


def _methodology(view: RunView) -> list[Block]:
    out: list[Block] = [Heading("Methodology", anchor="methodology"), Heading("Metrics", level=3),
                        Bullets(METRIC_NOTES), Heading("Statistics and protocol", level=3), Bullets(STATS_NOTES),
                        Para(f"Reference for every comparison: {DENSE} (same runtime when scored there, else "
                             "torch). Every number here is recomputed from records/*.parquet, variants/*.json, "
                             "ppl/*.json and measurements in this directory (auditor report RUN regenerates it).")]
    if view.scope:
        out += [Heading("What compression leaves untouched", level=3), Bullets(tuple(("", n) for n in view.scope))]
    if view.notes:
        out += [Heading("What is missing", level=3), Bullets(tuple(("", n) for n in view.notes))]
    return out


def build_document(view: RunView, plots: Sequence[Plot], n_examples: int = 5) -> Document:
    """The whole report for `view`; `plots` from auditor.report.plots.render_plots."""
    by_name = {p.name: p for p in plots}
    blocks: list[Block] = []
    if view.status is not None and not view.status.is_complete:  # first: nothing partial may look complete
        blocks.append(Para("the figures below cover the finished units only. Not scored: "
                           + ", ".join(f"{u.id} ({u.state})" for u in view.status.missing)
                           + ". Run the study again to finish it; `auditor gate` fails this run.",
                           label=view.status.incomplete_text(), kind="warning"))
    reference = _reference_block(view)
    if reference is not None and reference.kind == "warning":
        blocks.append(reference)  # an invalid reference is the first thing the report says
    if (view.manifest.get("data", {}) or {}).get("is_sample"):
        blocks.append(Para("these items are the project's fixture sample in BBQ's schema, not BBQ. The numbers "
                           "exercise the pipeline and say nothing about bias.", label="SAMPLE DATA:", kind="warning"))
    n_var = int((view.overview["kind"] == KIND_VARIANT).sum())
    n_base = int((view.overview["kind"] == KIND_BASELINE).sum())
    blocks.append(Para(f"{view.reference_precision}. {n_var} compressed variant(s), {n_base} null-baseline "
                       f"variant(s), {view.records['item_id'].nunique() if len(view.records) else 0} items, seeds "
                       f"{', '.join(map(str, sorted(view.records['seed'].unique()))) if len(view.records) else '-'}; "
                       f"scoring protocol {view.protocol} ({PROTOCOL_TEXT.get(view.protocol, '')}).",
                       label="Reference precision:"))
    if reference is not None and reference.kind != "warning":
        blocks.append(reference)
    blocks += _verdicts(view)
    blocks += _techniques(view, by_name)
    blocks += _measurements(view, by_name)
    blocks += _paradox(view, by_name)
    blocks += _accuracy(view)
    blocks += _categories(view)
    blocks += _positions(view)
    blocks += _protocols(view) + _mask_spread(view)
    blocks += _flipped(view, n_examples)
    blocks += _paper(view)
    blocks += _methodology(view)
    blocks += [Heading("Provenance", anchor="provenance"), Bullets(tuple(provenance_items(view.manifest)))]
    return Document(f"Compression risk audit: {view.name}", tuple(blocks))
