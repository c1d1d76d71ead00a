"""Which variant to ship: constraints over measured figures, the variants that meet them, and the Pareto front.

Pure over a table of variant rows (``DECISION_COLUMNS``: one row per (variant,
backend) with size_bytes, bits_per_weight, decode_tokens_per_s, peak_rss_bytes,
verdict, same_top_share, kl, kld_mean and kld_same_top (the full-vocabulary KLD on the
perplexity windows, auditor.analysis.kld), accuracy, and the artifact the figures describe;
``decision_rows`` builds it from a run's overview, fidelity and measurements:
size and speed are those of each variant's deployable artifact, or "simulated"
for fake quantization, ``auditor.view.deployable``). ``decide(rows, constraints)`` returns a
``Decision``: every row with the constraints it meets, misses or cannot be
judged on, the rows that fit (ranked), the Pareto front, and, when nothing fits,
the nearest row and what it misses. ``run_decision(view)`` decides a loaded
run under its study's [decision] constraints (``study_constraints``: the table
`auditor run` keeps in the manifest), and ``display_rows`` lays a decision out
as the text the report's decision section and the TUI's decision screen show.

Rules:

- A figure that was not measured (NaN, None) never passes a constraint: the row
  does not fit and the check reads "not measured". A simulated variant (RTN:
  no file holds its quantized weights) has no size or speed: its size, decode
  and peak-memory checks read "simulated" and never pass.
- Risk grades rank low < not shown < elevated < high. "inconclusive" and "n/a"
  never satisfy a max-grade constraint (their risk is unknown). The dense
  reference and the null baselines (verdict "reference" / "baseline": the
  uncompressed weights, e.g. the dense GGUF F16) carry no compression risk and
  satisfy every max-grade constraint.
- Ranking of the rows that fit: lowest risk grade first, then highest same-top
  share, lowest KL, smallest size, fastest decode (missing figures last).
- Pareto front over size (smaller), decode tokens/s (higher), same-top share
  (higher) and risk (lower; inconclusive, n/a or ungraded count as the worst):
  a row is on it when no other row is at least as good on all four and better on
  one. Rows lacking size, decode speed or same-top share are left off the front
  (``pareto_note`` says why), never guessed.
- Nearest row when nothing fits: fewest constraints not met (misses plus "not
  measured"), then fewest "not measured", then the smallest sum of shortfalls:
  |value - limit| / limit for a numeric miss, the number of grade steps above
  the limit for a grade miss (one step weighs as a 100% shortfall; an unknown
  grade counts as one step above "high").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from auditor.analysis.verdicts import ELEVATED, HIGH, LOW, NOT_SHOWN
from auditor.core.errors import AuditorError
from auditor.view.deployable import FIGURES, SIMULATED, deployable, is_simulated
from auditor.view.format import NOT_MEASURED, fixed, is_missing, pct, size_mb
from auditor.view.run import KIND_VARIANT, RunView

DECISION_COLUMNS = ["variant", "backend", "kind", "size_bytes", "bits_per_weight", "decode_tokens_per_s",
                    "peak_rss_bytes", "verdict", "same_top_share", "kl", "kld_mean", "kld_same_top", "accuracy",
                    "artifact", "simulated"]
#: Columns ``decide`` does without: "" when absent (rows built by hand, older callers).
OPTIONAL_COLUMNS = ("kind", "artifact", "simulated")

#: Risk grades a max-grade constraint can name, in order of risk.
GRADE_ORDER = {LOW: 0, NOT_SHOWN: 1, ELEVATED: 2, HIGH: 3}
#: Grades whose risk is unknown: they never satisfy a max-grade constraint.
UNGRADED = ("inconclusive", "n/a")
#: Verdicts of the uncompressed rows (overview kinds): no compression risk, every max-grade constraint met.
UNCOMPRESSED = ("reference", "baseline")
_WORST = len(GRADE_ORDER)  # the Pareto front's rank for an unknown risk

PASS, MISS, UNMEASURED = "pass", "miss", NOT_MEASURED


@dataclass(frozen=True)
class Constraints:
    """Limits a shippable variant must meet; None = not constrained. Sizes in bytes, speed in tokens/s."""

    max_size_bytes: float | None = None
    min_decode_tokens_per_s: float | None = None
    max_peak_rss_bytes: float | None = None
    max_grade: str | None = None
    min_same_top: float | None = None
    max_kl: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.max_grade is not None and self.max_grade not in GRADE_ORDER:
            raise AuditorError(f"max grade {self.max_grade!r}: valid grades are {', '.join(GRADE_ORDER)}")
        for name in ("max_size_bytes", "min_decode_tokens_per_s", "max_peak_rss_bytes", "max_kl"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise AuditorError(f"{name}: must be a number >= 0, got {value}")
        for name in ("min_same_top", "min_accuracy"):
            value = getattr(self, name)
            if value is not None and not (0 <= value <= 1):
                raise AuditorError(f"{name}: must be a share between 0 and 1, got {value}")

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        """The constraints as one phrase ("size <= 300.0 MB, decode >= 20 tok/s"), or "none"."""
        parts = [_CHECKS[k].describe(v) for k, v in self.given().items()]
        return ", ".join(parts) if parts else "none"


@dataclass(frozen=True)
class _Check:
    """One constraint: the row column it reads, its direction and how its values read."""

    column: str
    label: str
    upper: bool  # True: value <= limit; False: value >= limit
    show: Any

    def describe(self, limit: Any) -> str:
        return f"{self.label} {'<=' if self.upper else '>='} {self.show(limit)}"


def _tps(x: Any) -> str:
    return NOT_MEASURED if is_missing(x) else f"{float(x):.1f} tok/s"


def _kl(x: Any) -> str:
    return NOT_MEASURED if is_missing(x) else f"{float(x):.4f}"


_CHECKS = {
    "max_size_bytes": _Check("size_bytes", "size", True, size_mb),
    "min_decode_tokens_per_s": _Check("decode_tokens_per_s", "decode", False, _tps),
    "max_peak_rss_bytes": _Check("peak_rss_bytes", "peak memory", True, size_mb),
    "max_grade": _Check("verdict", "grade", True, str),
    "min_same_top": _Check("same_top_share", "same-top", False, pct),
    "max_kl": _Check("kl", "KL", True, _kl),
    "min_accuracy": _Check("accuracy", "accuracy", False, pct),
}


def grade_rank(verdict: Any) -> int | None:
    """Risk rank of a verdict: -1 uncompressed, 0..3 low..high, None when unknown (inconclusive, n/a, missing)."""
    if isinstance(verdict, str) and verdict.lower() in UNCOMPRESSED:
        return -1
    return GRADE_ORDER.get(verdict.lower()) if isinstance(verdict, str) else None


def check(row: dict, key: str, limit: Any) -> tuple[str, str, float]:
    """(status, text, shortfall) of one constraint on one row; status pass, miss or not measured."""
    spec = _CHECKS[key]
    value = row.get(spec.column)
    if key == "max_grade":
        if is_missing(value) or str(value) == "":
            return UNMEASURED, "grade not measured", 0.0
        rank = grade_rank(value)
        if rank is None:
            return MISS, f"grade {value} (never meets a max-grade constraint)", float(_WORST - GRADE_ORDER[limit])
        if rank <= GRADE_ORDER[limit]:
            return PASS, f"grade {value}", 0.0
        return MISS, f"grade {value} > {limit}", float(rank - GRADE_ORDER[limit])
    if spec.column in FIGURES and is_simulated(row):
        return UNMEASURED, f"{spec.label} {SIMULATED} (no deployable file; nearest {row['simulated']})", 0.0
    if is_missing(value):
        return UNMEASURED, f"{spec.label} not measured", 0.0
    value = float(value)
    ok = value <= limit if spec.upper else value >= limit
    if ok:
        return PASS, f"{spec.label} {spec.show(value)}", 0.0
    shortfall = abs(value - limit) / abs(limit) if limit else math.inf
    return MISS, f"{spec.label} {spec.show(value)} {'>' if spec.upper else '<'} {spec.show(limit)}", shortfall


@dataclass(frozen=True)
class Decision:
    """The outcome of ``decide``. ``table``: every row plus fits, on_front, misses, not_measured;
    ``fits``: the rows that meet every constraint, ranked; ``pareto``: the Pareto front;
    ``nearest``: when nothing fits, the nearest row (a dict with its ``misses``), else None."""

    constraints: Constraints
    table: pd.DataFrame
    fits: pd.DataFrame
    pareto: pd.DataFrame
    nearest: dict | None
    pareto_note: tuple[str, ...] = field(default_factory=tuple)

    def headline(self) -> str:
        """The answer in one line: the variant to ship and its figures, or that nothing fits and the nearest."""
        if not len(self.table):
            return "no variant rows to decide on"
        if len(self.fits):
            best = self.fits.iloc[0].to_dict()
            others = len(self.fits) - 1
            return (f"ship {_name(best)}: {_short(best)}"
                    + (f" ({others} other variant(s) also fit)" if others else " (the only variant that fits)"))
        near = self.nearest or {}
        return (f"nothing fits {self.constraints.describe()}: the nearest is {_name(near)}, which misses: "
                + "; ".join(near.get("misses", [])))

    def lines(self) -> list[str]:
        """The decision as text: constraints, the ranked fits or the "nothing fits" line, the Pareto front."""
        out = [f"constraints: {self.constraints.describe()}"]
        if not len(self.table):
            return out + ["no variant rows to decide on"]
        if len(self.fits):
            out.append(f"{len(self.fits)} of {len(self.table)} variants fit, best first:")
            out += [f"  {i}. {describe_row(r)}" for i, r in enumerate(self.fits.to_dict(orient="records"), 1)]
        else:
            out.append(self.headline())
        unjudged: dict[str, list[str]] = {}  # rows that miss nothing measured, grouped by what was not measured
        for r in self.table[~self.table["fits"] & (self.table["n_missed"] == 0)].to_dict(orient="records"):
            unjudged.setdefault(", ".join(r["not_measured"]), []).append(_name(r))
        out += [f"not judged ({what}): {', '.join(names)}" for what, names in unjudged.items()]
        names = ", ".join(_name(r) for r in self.pareto.to_dict(orient="records")) or "none"
        out.append(f"Pareto front (size x decode x same-top x risk): {names}")
        out += [f"  {note}" for note in self.pareto_note]
        return out

    def to_dict(self) -> dict:
        """JSON-ready: constraints, every row with its checks, the ranked fits, the front, the nearest."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return [{k: (None if not isinstance(v, (list, str)) and is_missing(v) else v) for k, v in r.items()}
                    for r in frame.to_dict(orient="records")]
        nearest = None
        if self.nearest is not None:
            nearest = {"variant": self.nearest["variant"], "backend": self.nearest["backend"],
                       "misses": list(self.nearest["misses"])}
        return {"constraints": self.constraints.given(), "rows": records(self.table),
                "fits": [{"variant": r["variant"], "backend": r["backend"]} for r in records(self.fits)],
                "pareto": [{"variant": r["variant"], "backend": r["backend"]} for r in records(self.pareto)],
                "nearest": nearest, "lines": self.lines()}


def _name(row: dict) -> str:
    return f"{row.get('variant', '?')} [{row.get('backend', '?')}]"


def _short(row: dict) -> str:
    """The figures a team compares first: size, decode speed, grade, same-top share."""
    grade = row.get("verdict")
    risk = ("uncompressed, no compression risk" if grade_rank(grade) == -1 else
            f"grade {grade if not is_missing(grade) and grade != '' else NOT_MEASURED}")
    if is_simulated(row):
        return f"{SIMULATED} (nearest {row['simulated']}), {risk}, same-top {pct(row.get('same_top_share'), NOT_MEASURED)}"
    return (f"{size_mb(row.get('size_bytes'))}, decode {_tps(row.get('decode_tokens_per_s'))}, {risk}, "
            f"same-top {pct(row.get('same_top_share'), NOT_MEASURED)}")


def standing(row: dict, rank: int | None = None) -> str:
    """Why a judged row (a row of ``Decision.table``) is in or out, as one short phrase."""
    if row.get("fits"):
        return "fits" + (f" (#{rank})" if rank else "")
    missed = [m for m in row.get("misses", []) if m not in row.get("not_measured", [])]
    parts = ([f"misses: {'; '.join(missed)}"] if missed else []) + (
        [f"not judged: {', '.join(row['not_measured'])}"] if row.get("not_measured") else [])
    return "; ".join(parts)


def describe_row(row: dict) -> str:
    """One row's figures in one line ("not measured" where missing, "simulated" for a variant without a file)."""
    bits = row.get("bits_per_weight")
    if is_simulated(row):
        return (f"{_name(row)}: size and speed {SIMULATED} (no deployable file; nearest {row['simulated']}), "
                f"grade {row.get('verdict') if not is_missing(row.get('verdict')) else NOT_MEASURED}, "
                f"same-top {pct(row.get('same_top_share'), NOT_MEASURED)}, KL {_kl(row.get('kl'))}, "
                f"accuracy {pct(row.get('accuracy'), NOT_MEASURED)}")
    return (f"{_name(row)}: {size_mb(row.get('size_bytes'))}, "
            f"{NOT_MEASURED if is_missing(bits) else f'{float(bits):.2f}'} bits/weight, "
            f"decode {_tps(row.get('decode_tokens_per_s'))}, peak memory {size_mb(row.get('peak_rss_bytes'))}, "
            f"grade {row.get('verdict') if not is_missing(row.get('verdict')) else NOT_MEASURED}, "
            f"same-top {pct(row.get('same_top_share'), NOT_MEASURED)}, KL {_kl(row.get('kl'))}, "
            f"accuracy {pct(row.get('accuracy'), NOT_MEASURED)}")


def decide(rows: pd.DataFrame, constraints: Constraints) -> Decision:
    """Judge every row against ``constraints``: fits ranked, Pareto front, nearest (see the module docstring)."""
    missing = [c for c in DECISION_COLUMNS if c not in rows.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise ValueError(f"decision rows lack column(s) {', '.join(missing)}")
    rows = rows.assign(**{c: "" for c in OPTIONAL_COLUMNS[1:] if c not in rows.columns})
    given = constraints.given()
    judged = []
    for row in rows.to_dict(orient="records"):
        misses, unmeasured, shortfall = [], [], 0.0
        for key, limit in given.items():
            status, text, short = check(row, key, limit)
            if status == MISS:
                misses.append(text)
                shortfall += short
            elif status == UNMEASURED:
                unmeasured.append(text)
        row.update(fits=not misses and not unmeasured, misses=misses + unmeasured, not_measured=unmeasured,
                   n_missed=len(misses), shortfall=shortfall, risk_rank=grade_rank(row.get("verdict")))
        judged.append(row)
    table = pd.DataFrame(judged, columns=[*rows.columns, "fits", "misses", "not_measured", "n_missed",
                                          "shortfall", "risk_rank"])
    front, note = _pareto(table)
    table["on_front"] = table.index.isin(front)
    fits = _ranked(table[table["fits"].astype(bool)])  # astype: an empty object column would select columns
    nearest = None
    if len(table) and not len(fits):
        order = table.assign(_n=table["n_missed"] + table["not_measured"].map(len),
                             _u=table["not_measured"].map(len), _r=table["risk_rank"].fillna(_WORST))
        order = order.sort_values(["_n", "_u", "shortfall", "_r"], kind="stable")
        nearest = order.drop(columns=["_n", "_u", "_r"]).iloc[0].to_dict()
    return Decision(constraints, table, fits, table.loc[front], nearest, tuple(note))


def _ranked(fits: pd.DataFrame) -> pd.DataFrame:
    """Lowest risk, then highest same-top, lowest KL, smallest size, fastest decode; missing figures last."""
    keys = pd.DataFrame({"risk": fits["risk_rank"].astype(float).fillna(_WORST),
                         "same": -fits["same_top_share"].astype(float), "kl": fits["kl"].astype(float),
                         "size": fits["size_bytes"].astype(float), "speed": -fits["decode_tokens_per_s"].astype(float)},
                        index=fits.index)
    order = keys.sort_values(list(keys.columns), na_position="last", kind="stable").index
    return fits.loc[order]


_FRONT = (("size_bytes", 1.0, "size"), ("decode_tokens_per_s", -1.0, "decode tok/s"),
          ("same_top_share", -1.0, "same-top"))


def _pareto(table: pd.DataFrame) -> tuple[list, list[str]]:
    """Index labels of the rows on the Pareto front (all objectives minimised after sign), and notes."""
    left_off: dict[str, list[str]] = {}
    candidates = []
    for idx, row in table.iterrows():
        lacking = [label for col, _, label in _FRONT if is_missing(row[col])]
        if lacking and is_simulated(row.to_dict()):
            left_off.setdefault(f"{SIMULATED}: no deployable file", []).append(_name(row))
        elif lacking:
            left_off.setdefault(", ".join(lacking), []).append(_name(row))
        else:
            risk = row["risk_rank"]
            candidates.append((idx, [sign * float(row[col]) for col, sign, _ in _FRONT]
                               + [float(_WORST if is_missing(risk) else risk)]))
    front = [i for i, v in candidates
             if not any(all(a <= b for a, b in zip(w, v)) and any(a < b for a, b in zip(w, v))
                        for j, w in candidates if j != i)]
    notes = [f"not on the front ({what}{'' if what.startswith(SIMULATED) else ' not measured'}): {', '.join(rows)}"
             for what, rows in left_off.items()]
    return front, notes


def decision_rows(overview: pd.DataFrame, fidelity: pd.DataFrame, protocol: str | None = None,
                  units: pd.DataFrame | None = None, storage: pd.DataFrame | None = None) -> pd.DataFrame:
    """``DECISION_COLUMNS`` from a run's overview (``RunView.overview``) and fidelity table (``fidelity_table``).

    Size, bits/weight, decode speed and peak memory are those of each row's deployable artifact in
    ``storage`` (``RunView.storage``, the rows of measurements.json) where it holds one
    (``auditor.view.deployable``), else the overview's; a simulated variant's are NaN, whatever was measured.

    Fidelity is joined on (variant, backend), on ``protocol`` when given (the
    fidelity table may hold several); kl is the mean 3-letter KL. The dense
    reference is its own yardstick: same-top 1 and KL 0 by definition. A
    measured column the overview lacks (peak_rss_bytes) is taken from ``units``
    (``RunView.units``) when given; NaN otherwise.
    """
    fid = fidelity
    if protocol is not None and "protocol" in fid.columns:
        fid = fid[fid["protocol"] == protocol]
    fid = fid[["variant", "backend", "same_top_share", "kl_mean"]].rename(columns={"kl_mean": "kl"})
    if fid.duplicated(["variant", "backend"]).any():
        raise ValueError("fidelity table holds several protocols: pass protocol=")
    cols = [c for c in DECISION_COLUMNS if c in overview.columns and c not in ("same_top_share", "kl")]
    rows = overview[cols].merge(fid, on=["variant", "backend"], how="left")
    extra = [c for c in DECISION_COLUMNS if c not in rows.columns and units is not None and c in units.columns]
    if extra:
        rows = rows.merge(units[["variant", "backend", *extra]].drop_duplicates(["variant", "backend"]),
                          on=["variant", "backend"], how="left")
    if "kind" in rows.columns:
        ref = rows["kind"] == "reference"
        rows.loc[ref, "same_top_share"], rows.loc[ref, "kl"] = 1.0, 0.0
        if "kld_mean" in rows.columns:  # the full-vocabulary KLD's base is dense itself
            rows.loc[ref, "kld_mean"], rows.loc[ref, "kld_same_top"] = 0.0, 1.0
    for col in DECISION_COLUMNS:
        if col not in rows.columns:
            rows[col] = float("nan") if col not in ("verdict", *OPTIONAL_COLUMNS) else ""
    rows = deployable(rows.drop(columns=["artifact", "simulated"]), storage)
    return rows[DECISION_COLUMNS].reset_index(drop=True)


def study_constraints(manifest: dict, source: str = "manifest.json") -> Constraints:
    """The constraints of the study a run was made from: its [decision] table, kept in the manifest by
    Constraints field (``auditor.study.spec.Study.decision``); no table, no constraints.

    The study file was validated when it was read; a manifest whose table is not a mapping of known
    constraint fields is refused (AuditorError naming ``source``) rather than half-read.
    """
    study = manifest.get("study") if isinstance(manifest.get("study"), dict) else {}
    definition = study.get("definition") if isinstance(study.get("definition"), dict) else {}
    table = definition.get("decision") or {}
    known = {f for f in Constraints.__dataclass_fields__}
    if not isinstance(table, dict) or set(table) - known:
        unknown = sorted(set(table) - known) if isinstance(table, dict) else [type(table).__name__]
        raise AuditorError(f"{source}: study [decision] holds unknown constraint(s) {', '.join(map(str, unknown))}")
    try:
        return Constraints(**table)
    except (TypeError, ValueError, AuditorError) as exc:
        raise AuditorError(f"{source}: study [decision]: {exc}") from None


def run_decision(view: RunView, constraints: Constraints | None = None) -> Decision:
    """The decision on a loaded run under ``constraints`` (default: its study's [decision] table)."""
    if constraints is None:
        constraints = study_constraints(view.manifest, str(view.run_dir / "manifest.json"))
    rows = decision_rows(view.overview, view.fidelity, protocol=view.protocol, units=view.units,
                         storage=view.storage)
    return decide(rows, constraints)


def reference_notes(view: RunView) -> list[str]:
    """What a reader of the decision must know first: an invalid dense reference grades every variant
    INCONCLUSIVE (no max-grade constraint can be met), and speeds timed while other work took the cores."""
    out = []
    validity = view.validity
    if validity is not None and not validity.valid:
        out.append(f"every grade is INCONCLUSIVE because {validity.short or 'the dense reference is not valid'}; "
                   "size, speed and fidelity constraints still apply")
    load = view.measure_context.get("load_average") or {}
    if load.get("competing"):
        out.append(f"decode speeds and peak memory were timed while other work competed for the cores (1-minute "
                   f"load average {load.get('min', float('nan')):.1f}-{load.get('max', float('nan')):.1f} on "
                   f"{view.measure_context.get('cpus') or '?'} CPUs, {load.get('own_threads', '?')} threads per "
                   "runtime): a speed that meets or misses its limit is not settled; measure again on a quiet "
                   "machine (remove commits/measure__measurements.json and rerun `auditor run`)")
    return out


#: (key, header) of ``display_rows``: what the report's decision table and the TUI's decision screen show.
#: Short headers keep the report's first screen (Summary and this table) on one printed A4 page; every
#: fidelity figure is "from dense" (the report's fidelity section says so in full).
DISPLAY_COLUMNS = (("variant", "variant"), ("backend", "runtime"), ("standing", "meets the constraints"),
                   ("grade", "grade"), ("same_top", "same top letter"),
                   ("kl", "letter KL (nats)"),
                   ("kld", "full-vocab KLD (nats); same top"),
                   ("artifact", "ships as"), ("size", "size"),
                   ("bits", "bits/weight"),
                   ("decode", "decode tok/s"), ("peak", "peak memory"), ("accuracy", "accuracy"),
                   ("front", "Pareto front"))


def display_rows(decision: Decision) -> list[dict]:
    """Every row of ``decision`` as display text by ``DISPLAY_COLUMNS`` key (plus ``fits``: bool): the rows that
    fit first, best first, then the rest in the run's order. Without constraints "standing" says so."""
    table, constrained = decision.table, bool(decision.constraints.given())
    ranks = {idx: i for i, idx in enumerate(decision.fits.index, 1)}
    out = []
    for idx in list(decision.fits.index) + [i for i in table.index if i not in ranks]:
        r = table.loc[idx].to_dict()
        grade = r.get("verdict")
        sim = is_simulated(r)
        out.append({
            "variant": str(r["variant"]), "backend": str(r["backend"]),
            "standing": standing(r, ranks.get(idx)) if constrained else "no constraints",
            "grade": NOT_MEASURED if is_missing(grade) or grade == "" else (
                str(grade).upper() if r.get("kind") == KIND_VARIANT else str(grade)),
            "same_top": pct(r["same_top_share"], NOT_MEASURED), "kl": fixed(r["kl"], 4, NOT_MEASURED),
            "kld": NOT_MEASURED if is_missing(r.get("kld_mean")) else
            f"{fixed(r['kld_mean'], 4)}; {pct(r.get('kld_same_top'), NOT_MEASURED)}",
            "artifact": str(r.get("artifact") or "-"),
            "size": SIMULATED if sim else size_mb(r["size_bytes"]),
            "bits": SIMULATED if sim else fixed(r["bits_per_weight"], 2, NOT_MEASURED),
            "decode": SIMULATED if sim else fixed(r["decode_tokens_per_s"], 1, NOT_MEASURED),
            "peak": SIMULATED if sim else size_mb(r["peak_rss_bytes"]),
            "accuracy": pct(r["accuracy"], NOT_MEASURED), "front": "yes" if r.get("on_front") else "",
            "fits": constrained and bool(r.get("fits")), "verdict": "" if is_missing(grade) else str(grade)})
    return out


def front_text(decision: Decision) -> str:
    """The Pareto front's rows by name, then why the rows left off it are (figures not measured)."""
    names = ", ".join(_name(r) for r in decision.pareto.to_dict(orient="records")) or "none"
    return names + "".join(f"; {note}" for note in decision.pareto_note)
