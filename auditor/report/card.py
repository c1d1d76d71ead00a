"""The audit section of a Hugging Face model card for one compressed variant, from a run's files.

`model_card(view, variant, backend)` returns the card's text: YAML front matter
whose `model-index` holds the BBQ figures as evaluation results (written and
checked with huggingface_hub's own `ModelCardData` / `EvalResult`, the format the
Hub reads), then a Markdown section with the grade, its reason, the harm measures
with their intervals, fidelity, size and speed, the limitations and the
provenance. Every number comes from the run view; nothing is recomputed here.
"""
from __future__ import annotations

from typing import Any

from auditor.core.errors import AuditorError
from auditor.report.document import FIXED_LIMITS, provenance_items
from auditor.view.format import NOT_MEASURED, fixed, is_missing, pct, pts, size_mb
from auditor.view.run import KIND_VARIANT, RunView

#: The dataset the results are reported on, as the Hub names it.
BBQ_DATASET = "nyu-mll/BBQ"
#: (overview column, model-index metric type, label); rates are fractions.
CARD_METRICS = (
    ("accuracy", "accuracy", "BBQ accuracy (all items)"),
    ("accuracy_ambig", "accuracy", "BBQ accuracy (ambiguous items)"),
    ("accuracy_disambig", "accuracy", "BBQ accuracy (disambiguated items)"),
    ("bias_ambig", "bias_score", "BBQ bias score s_AMB"),
    ("bias_disambig", "bias_score", "BBQ bias score s_DIS"),
    ("srs", "stereotype_reliance", "stereotype reliance score (ambiguous)"),
    ("unknown_rate", "unknown_rate", "unknown-rate (all items)"),
    ("directed_shift", "directed_shift", "directed shift toward the stereotype vs the uncompressed model"),
    ("selective_abstention", "selective_abstention", "selective abstention vs the uncompressed model"),
    ("flip_rate", "flip_rate", "flip rate (unbiased -> biased) vs the uncompressed model"),
    ("same_top_share", "agreement", "same top option as the uncompressed model"),
)


def _row(view: RunView, variant: str, backend: str | None) -> dict[str, Any]:
    rows = view.overview[(view.overview["variant"] == variant) & (view.overview["kind"] == KIND_VARIANT)]
    if backend is not None:
        rows = rows[rows["backend"] == backend]
    if not len(rows):
        known = ", ".join(f"{v} [{b}]" for v, b in view.overview.loc[view.overview["kind"] == KIND_VARIANT,
                                                                       ["variant", "backend"]].itertuples(index=False))
        raise AuditorError(f"{view.run_dir}: no compressed variant {variant!r}"
                           + (f" on {backend}" if backend else "") + f"; the run has {known or 'none'}")
    if len(rows) > 1:
        raise AuditorError(f"{variant!r} was scored on {', '.join(rows['backend'])}: name one with --backend")
    return rows.iloc[0].to_dict()


def card_data(view: RunView, variant: str, backend: str | None = None):
    """huggingface_hub ModelCardData with one EvalResult per measured figure of ``CARD_METRICS``."""
    from huggingface_hub import EvalResult, ModelCardData

    row = _row(view, variant, backend)
    n_items = int(view.records["item_id"].nunique()) if len(view.records) else 0
    dataset = f"BBQ ({n_items} items, {view.protocol} protocol)"
    results = [EvalResult(task_type="multiple-choice", task_name="BBQ compression audit", dataset_type=BBQ_DATASET,
                          dataset_name=dataset, metric_type=kind, metric_name=label, metric_value=float(row[key]))
               for key, kind, label in CARD_METRICS if not is_missing(row.get(key))]
    if not results:
        raise AuditorError(f"{variant!r}: the run has no figure for it yet (no finished records)")
    model = (view.manifest.get("model") or {}).get("name", "model")
    return ModelCardData(model_name=f"{model} {variant}", eval_results=results,
                         tags=["compression-audit", "bbq", "bias"]), row


def model_card(view: RunView, variant: str, backend: str | None = None) -> str:
    """The card text: YAML front matter (``card_data``) and the audit section."""
    data, row = card_data(view, variant, backend)
    verdict = next(v for v in view.verdicts if (v.variant, v.backend) == (row["variant"], row["backend"]))
    ci = lambda k: f"{pts(row[k])} (95% CI {pts(row[k + '_ci_low'])} to {pts(row[k + '_ci_high'])})"  # noqa: E731
    lines = ["---", data.to_yaml(), "---", "", f"## Compression audit: {row['variant']} ({row['backend']})", "",
             f"**Grade: {verdict.level.upper()}** ({verdict.summary}). Grades claim what their 95% intervals show: "
             "LOW only when every harm measure's upper bound is below its margin (auditor docs/statistics.md).", "",
             "| measure | value |", "|---|---|",
             f"| directed shift toward the stereotype | {ci('directed_shift')} |",
             f"| selective abstention | {ci('selective_abstention')} |",
             f"| flip rate above the same-prompt null | {ci('flip_excess')} |",
             f"| unknown-rate drop | {ci('unknown_drop')} |",
             f"| same top option as the uncompressed model | {pct(row['same_top_share'])} |",
             f"| accuracy (all items) | {pct(row['accuracy'])} |",
             f"| size on disk | {size_mb(row['size_bytes'])} |",
             f"| bits per weight | {fixed(row['bits_per_weight'], 2, NOT_MEASURED)} |",
             f"| decode tokens/s (measured on its runtime) | {fixed(row['decode_tokens_per_s'], 1, NOT_MEASURED)} |",
             "", "### Limitations", ""]
    lines += [f"- **{label}**: {text}" for label, text in FIXED_LIMITS]
    if view.validity is not None and not view.validity.valid:
        lines.append(f"- **Reference not valid**: {view.validity.short}.")
    lines += ["", "### Provenance", ""] + [f"- **{label}**: {text}" for label, text in provenance_items(view.manifest)]
    return "\n".join(lines) + "\n"
