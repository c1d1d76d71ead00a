"""The report's figures as PNG bytes (matplotlib's object API with the Agg canvas; no pyplot state).

Each function takes the variants overview of `auditor.view.run.RunView` and
returns a `Plot`; when the run lacks what a figure needs (no levels, no
perplexity, no sizes) the plot is None and `reason` says what is missing.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pandas as pd

from auditor.view.run import KIND_REFERENCE, KIND_VARIANT, RunView

VERDICT_COLORS = {"low": "#2e7d32", "elevated": "#ef6c00", "high": "#c62828", "inconclusive": "#424242",
                  "n/a": "#757575"}
NULL_COLOR = "#9e9e9e"


@dataclass(frozen=True)
class Plot:
    """A figure: file stem, title, PNG bytes (None when it cannot be drawn) and why not."""

    name: str
    title: str
    png: bytes | None
    reason: str = ""


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _null_band(ax, variants: pd.DataFrame) -> None:
    """Shade 0..max null flip rate: flips in that band are indistinguishable from no compression."""
    nulls = {"answer-order sensitivity": variants["null_seed_flip_rate"].dropna(),
             "runtime (llama.cpp)": variants["null_runtime_flip_rate"].dropna()}
    top = max((float(s.max()) for s in nulls.values() if len(s)), default=math.nan)
    if math.isnan(top):
        return
    ax.axhspan(0, top, color=NULL_COLOR, alpha=0.25, lw=0, label="sensitivity band")
    for (label, s), style in zip(nulls.items(), ("--", ":")):
        if len(s):
            ax.axhline(float(s.max()), color=NULL_COLOR, ls=style, lw=1, label=label)


def _top(frame: pd.DataFrame) -> float:
    """A shared y-axis top: 10% above the highest flip rate, CI or null baseline, at least 0.1."""
    cols = ["flip_rate", "flip_rate_ci_high", "null_seed_flip_rate", "null_runtime_flip_rate"]
    highest = frame[cols].max().max()
    return max(0.1, 1.1 * float(highest)) if pd.notna(highest) else 1.0


def _errors(frame: pd.DataFrame) -> list[list[float]] | None:
    low = (frame["flip_rate"] - frame["flip_rate_ci_low"]).clip(lower=0)
    high = (frame["flip_rate_ci_high"] - frame["flip_rate"]).clip(lower=0)
    if low.isna().all() and high.isna().all():
        return None
    return [low.fillna(0).tolist(), high.fillna(0).tolist()]


def flip_vs_level(overview: pd.DataFrame) -> Plot:
    """Flip rate (with bootstrap CI) against level, one line per method; pruning by sparsity, quantization by bits."""
    name, title = "flip_vs_level", "Flip rate (unbiased -> biased) vs compression level"
    v = overview[(overview["kind"] == KIND_VARIANT) & overview["flip_rate"].notna()]
    panels = [(fam, v[(v["family"] == fam) & v["level"].notna()]) for fam in ("prune", "quantize")]
    panels = [(fam, f) for fam, f in panels if len(f)]
    if not panels:
        return Plot(name, title, None, "no compressed variant with a numeric level and a flip rate")
    fig = _figure(5.2 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    top = _top(v)
    for ax, (fam, frame) in zip(axes, panels):
        _null_band(ax, v)
        for method, f in frame.sort_values("level").groupby("method", sort=True):
            ax.errorbar(f["level"], f["flip_rate"], yerr=_errors(f), marker="o", capsize=3, label=method)
        ax.set_xlabel("sparsity" if fam == "prune" else "bits")
        ax.set_ylabel("flip rate")
        ax.set_ylim(0, top)
        ax.set_title("pruning" if fam == "prune" else "quantization")
        ax.legend(fontsize=7, loc="best")
    skipped = v[~v.index.isin(pd.concat([f for _, f in panels]).index)]
    reason = ("not on a level axis: " + ", ".join(skipped["variant"])) if len(skipped) else ""
    return Plot(name, title, _png(fig), reason)


def ppl_vs_srs(overview: pd.DataFrame) -> Plot:
    """Perplexity change % (x) against SRS change in points (y): the studies' paradox, one point per variant."""
    name, title = "ppl_vs_srs", "Perplexity change vs stereotype-reliance change"
    v = overview[(overview["kind"] == KIND_VARIANT) & overview["ppl_change_pct"].notna() & overview["srs_change"].notna()]
    if not len(v):
        return Plot(name, title, None, "perplexity not measured for the dense model and a variant")
    fig = _figure(5.5, 4.0)
    ax = fig.subplots()
    colors = [VERDICT_COLORS.get(x, VERDICT_COLORS["n/a"]) for x in v["verdict"]]
    ax.scatter(v["ppl_change_pct"], 100 * v["srs_change"], c=colors, zorder=3)
    for _, r in v.iterrows():
        ax.annotate(r["variant"], (r["ppl_change_pct"], 100 * r["srs_change"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.6)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("perplexity change vs dense (%)")
    ax.set_ylabel("SRS change vs dense (points)")
    return Plot(name, title, _png(fig))


def size_vs_risk(overview: pd.DataFrame) -> Plot:
    """Size on disk (MB) against flip rate, coloured by verdict, with the null band and dense's size."""
    name, title = "size_vs_risk", "Size on disk vs flip rate"
    v = overview[(overview["kind"] == KIND_VARIANT) & overview["size_bytes"].notna() & overview["flip_rate"].notna()]
    if not len(v):
        return Plot(name, title, None, "no variant with both a measured size and a flip rate")
    fig = _figure(5.5, 4.0)
    ax = fig.subplots()
    _null_band(ax, overview[overview["kind"] == KIND_VARIANT])
    ref = overview[(overview["kind"] == KIND_REFERENCE) & overview["size_bytes"].notna()]
    for _, r in ref.iterrows():
        ax.axvline(r["size_bytes"] / 1e6, color="black", ls=":", lw=1, label=f"dense ({r['backend']})")
    colors = [VERDICT_COLORS.get(x, VERDICT_COLORS["n/a"]) for x in v["verdict"]]
    ax.scatter(v["size_bytes"] / 1e6, v["flip_rate"], c=colors, zorder=3)
    for _, r in v.iterrows():
        ax.annotate(r["variant"], (r["size_bytes"] / 1e6, r["flip_rate"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("flip rate")
    ax.set_ylim(0, _top(v))
    ax.legend(fontsize=7, loc="best")
    return Plot(name, title, _png(fig))


def render_plots(view: RunView) -> tuple[Plot, ...]:
    return (flip_vs_level(view.overview), ppl_vs_srs(view.overview), size_vs_risk(view.overview))
