"""Run against run: the same variants in two runs (a new model release, a new compressor setting, another
machine), with the change of every grade, key metric and measurement, and whether each change is beyond noise.

Pure over two per-(variant, backend) tables (``diff_rows``: a run's overview
with its fidelity figures joined). Variants are matched by variant spec and
backend; the ones present in only one run are listed, not compared.

"Exceeds its interval": a change exceeds when both runs carry a 95% interval for
the metric (its ``*_ci_low`` / ``*_ci_high`` columns) and the two intervals do not
overlap. That rule is conservative: two intervals can overlap while the
difference of the two estimates is still significant, so "within" means "not
shown to differ", never "equal". Metrics without an interval in either run
(accuracy, SRS, unknown-rate, size, decode speed) read "no interval" (None).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from auditor.view.format import is_missing, pct, pts, size_mb

#: (column, label, CI column prefix or None, how it reads: a share, a change in points, bytes, a speed, a KL).
METRICS = (
    ("accuracy", "accuracy", None, "share"),
    ("srs", "SRS", None, "share"),
    ("srs_change", "SRS change vs dense", "srs_change", "points"),
    ("unknown_rate", "unknown-rate", None, "share"),
    ("unknown_change", "unknown-rate change vs dense", "unknown_change", "points"),
    ("flip_rate", "flip rate", "flip_rate", "share"),
    ("same_top_share", "same-top", "same_top", "share"),
    ("kl_mean", "3-letter KL", "kl", "kl"),
    ("size_bytes", "size", None, "bytes"),
    ("decode_tokens_per_s", "decode tok/s", None, "speed"),
)
#: Overview and fidelity columns a diff row carries.
DIFF_INPUT_COLUMNS = ["variant", "backend", "verdict", *dict.fromkeys(
    c for m, _, ci, _ in METRICS for c in (m, *((f"{ci}_ci_low", f"{ci}_ci_high") if ci else ())))]
CHANGE_COLUMNS = ["variant", "backend", "metric", "label", "a", "b", "change", "a_ci_low", "a_ci_high",
                  "b_ci_low", "b_ci_high", "exceeds"]
GRADE_COLUMNS = ["variant", "backend", "grade_a", "grade_b", "changed"]


def diff_rows(overview: pd.DataFrame, fidelity: pd.DataFrame, protocol: str | None = None) -> pd.DataFrame:
    """``DIFF_INPUT_COLUMNS`` per (variant, backend): the overview with its fidelity figures (NaN where none)."""
    fid = fidelity if protocol is None or "protocol" not in fidelity.columns else fidelity[
        fidelity["protocol"] == protocol]
    keep = [c for c in ("variant", "backend", "same_top_share", "same_top_ci_low", "same_top_ci_high", "kl_mean",
                        "kl_ci_low", "kl_ci_high") if c in fid.columns]
    base = overview.drop(columns=[c for c in keep[2:] if c in overview.columns])  # the fidelity table's win
    rows = base.merge(fid[keep], on=["variant", "backend"], how="left") if len(keep) > 2 else overview.copy()
    for col in DIFF_INPUT_COLUMNS:
        if col not in rows.columns:
            rows[col] = float("nan") if col != "verdict" else ""
    return rows[DIFF_INPUT_COLUMNS].reset_index(drop=True)


def exceeds(a_low, a_high, b_low, b_high) -> bool | None:
    """True when the intervals [a_low, a_high] and [b_low, b_high] do not overlap; None when either is missing."""
    if any(is_missing(x) for x in (a_low, a_high, b_low, b_high)):
        return None
    return bool(float(a_high) < float(b_low) or float(b_high) < float(a_low))


@dataclass(frozen=True)
class RunDiff:
    """Run A against run B: grades and metric changes of the shared variants, and the variants in one run only."""

    name_a: str
    name_b: str
    grades: pd.DataFrame  # GRADE_COLUMNS
    changes: pd.DataFrame  # CHANGE_COLUMNS, one row per (shared variant, metric measured in either run)
    only_a: tuple[tuple[str, str], ...]
    only_b: tuple[tuple[str, str], ...]
    item_note: str = ""  # whether the two runs scored the same items (``items_line``)

    def lines(self) -> list[str]:
        """The diff as text: one block per shared variant, then the variants in one run only."""
        out = [f"A = {self.name_a}, B = {self.name_b}: {len(self.grades)} variant(s) in both"]
        if self.item_note:
            out.append(self.item_note)
        for g in self.grades.to_dict(orient="records"):
            grade = (f"grade {g['grade_a']} -> {g['grade_b']}" if g["changed"] else f"grade {g['grade_a']} (same)")
            out.append(f"{g['variant']} [{g['backend']}]: {grade}")
            sel = self.changes[(self.changes["variant"] == g["variant"]) & (self.changes["backend"] == g["backend"])]
            for c in sel.to_dict(orient="records"):
                verdict = {True: "exceeds both intervals", False: "within the intervals", None: "no interval"}[
                    c["exceeds"]]
                out.append(f"    {c['label']}: {_value(c['metric'], c['a'])} -> {_value(c['metric'], c['b'])} "
                           f"({_change(c['metric'], c['change'])}, {verdict})")
        out.append(f"only in A ({self.name_a}): " + (", ".join(f"{v} [{b}]" for v, b in self.only_a) or "none"))
        out.append(f"only in B ({self.name_b}): " + (", ".join(f"{v} [{b}]" for v, b in self.only_b) or "none"))
        return out

    def to_dict(self) -> dict:
        """JSON-ready (missing figures as None)."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return [{k: (None if not isinstance(v, (bool, str)) and v is not None and is_missing(v) else v)
                     for k, v in r.items()} for r in frame.to_dict(orient="records")]
        return {"a": self.name_a, "b": self.name_b, "items": self.item_note, "grades": records(self.grades),
                "changes": records(self.changes),
                "only_a": [{"variant": v, "backend": b} for v, b in self.only_a],
                "only_b": [{"variant": v, "backend": b} for v, b in self.only_b]}


_KIND = {m: kind for m, _, _, kind in METRICS}


def _value(metric: str, x) -> str:
    kind = _KIND[metric]
    if kind == "share":
        return pct(x, "not measured")
    if kind == "points":
        return pts(x, "not measured")
    if kind == "bytes":
        return size_mb(x)
    if is_missing(x):
        return "not measured"
    return f"{float(x):.4f}" if kind == "kl" else f"{float(x):.1f}"


def _change(metric: str, x) -> str:
    kind = _KIND[metric]
    if is_missing(x):
        return "no change computable"
    if kind in ("share", "points"):
        return pts(x)
    if kind == "bytes":
        return f"{float(x) / 1e6:+.1f} MB"
    return f"{float(x):+.4f}" if kind == "kl" else f"{float(x):+.1f}"


def items_line(items_a, items_b) -> str:
    """Whether two runs scored the same items: a change between runs on other items mixes in the sample."""
    a, b = set(items_a), set(items_b)
    if a == b:
        return f"items: the same {len(a)} items in both runs"
    return (f"items differ: {len(a)} in A, {len(b)} in B, {len(a & b)} in both; changes mix the model's change "
            "with the change of sample")


def run_diff(a: pd.DataFrame, b: pd.DataFrame, name_a: str = "A", name_b: str = "B", *,
             items_a=None, items_b=None) -> RunDiff:
    """Compare two ``diff_rows`` tables; change = B - A for every metric measured in either run.

    ``items_a`` / ``items_b`` (the runs' item ids), when both given, add a line
    saying whether the runs scored the same items.
    """
    keys_a = list(dict.fromkeys(zip(a["variant"], a["backend"])))
    keys_b = list(dict.fromkeys(zip(b["variant"], b["backend"])))
    shared = [k for k in keys_a if k in set(keys_b)]
    by_a = {k: r for k, r in zip(zip(a["variant"], a["backend"]), a.to_dict(orient="records"))}
    by_b = {k: r for k, r in zip(zip(b["variant"], b["backend"]), b.to_dict(orient="records"))}
    grades, changes = [], []
    for key in shared:
        ra, rb = by_a[key], by_b[key]
        grades.append({"variant": key[0], "backend": key[1], "grade_a": ra.get("verdict", ""),
                       "grade_b": rb.get("verdict", ""), "changed": ra.get("verdict") != rb.get("verdict")})
        for metric, label, ci, _ in METRICS:
            va, vb = ra.get(metric), rb.get(metric)
            if is_missing(va) and is_missing(vb):
                continue
            bounds = [r.get(f"{ci}_ci_{s}") if ci else None for r in (ra, rb) for s in ("low", "high")]
            change = float("nan") if is_missing(va) or is_missing(vb) else float(vb) - float(va)
            changes.append({"variant": key[0], "backend": key[1], "metric": metric, "label": label, "a": va,
                            "b": vb, "change": change, "a_ci_low": bounds[0], "a_ci_high": bounds[1],
                            "b_ci_low": bounds[2], "b_ci_high": bounds[3],
                            "exceeds": exceeds(*bounds) if ci else None})
    return RunDiff(name_a, name_b, pd.DataFrame(grades, columns=GRADE_COLUMNS),
                   pd.DataFrame(changes, columns=CHANGE_COLUMNS),
                   tuple(k for k in keys_a if k not in set(keys_b)), tuple(k for k in keys_b if k not in set(keys_a)),
                   items_line(items_a, items_b) if items_a is not None and items_b is not None else "")
