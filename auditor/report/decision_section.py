"""The report's decision section: which variant to ship under the study's [decision] constraints.

It stands right after the Summary because it is what a team acts on: the
constraints, the recommendation (the best-ranked variant that meets them, or
the "nothing fits" line naming the nearest variant and what it misses), then
every variant with why it is in or out beside its grade, fidelity, size and
speed, and the Pareto front. The decision itself is
``auditor.view.decision.run_decision`` (the same one `auditor decide RUN`
prints); this module only lays it out as report blocks, which the Markdown and
HTML renderers draw.
"""
from __future__ import annotations

from auditor.core.errors import AuditorError
from auditor.report.document import Block, Heading, Para, Table
from auditor.view.decision import DISPLAY_COLUMNS, Decision, display_rows, front_text, reference_notes, run_decision
from auditor.view.run import RunView

NO_CONSTRAINTS = ("The study sets no [decision] constraints, so no variant is recommended: the table lists every "
                  "variant's figures. Add a [decision] table to the study (max_size, min_decode_tps, "
                  "max_peak_memory, max_grade, min_same_top, max_kl, min_accuracy; docs/study.md) and run "
                  "`auditor report RUN`, or try limits with `auditor decide RUN --max-size 300MB ...`.")
#: Rows that meet every constraint are tinted like a LOW grade (green) in HTML.
FITS_CLASS = "verdict-low"


def decision_section(view: RunView) -> list[Block]:
    """Heading, constraints, recommendation, the per-variant table and the Pareto front of ``view``."""
    out: list[Block] = [Heading("Which variant to ship", anchor="decision")]
    try:
        decision = run_decision(view)
    except AuditorError as exc:  # a damaged [decision] in the manifest must not cost the whole report
        return out + [Para(f"the study's [decision] constraints cannot be read: {exc}", label="Not decided:",
                           kind="warning")]
    if not len(decision.table):
        return out + [Para("No variant has records or measurements yet.", kind="note")]
    if decision.constraints.given():
        out += [Para(f"{decision.constraints.describe()} (the study's [decision] table; `auditor decide RUN` "
                     "prints the same decision, and its flags try other limits).", label="Constraints:"),
                Para(decision.headline(), label="Recommendation:")]
    else:
        out.append(Para(NO_CONSTRAINTS, kind="note"))
    out += [Para(note, label="Note:", kind="warning") for note in reference_notes(view)]
    out.append(decision_table(decision))
    out.append(Para(front_text(decision) + ".", label="Pareto front (smaller, faster, closer to dense, lower risk):"))
    return out


def decision_table(decision: Decision) -> Table:
    """Every row of ``decision`` (``display_rows``: the ones that fit first, best first)."""
    rows = display_rows(decision)
    return Table(tuple(header for _, header in DISPLAY_COLUMNS),
                 tuple(tuple(r[key] for key, _ in DISPLAY_COLUMNS) for r in rows),
                 tuple(FITS_CLASS if r["fits"] else "" for r in rows))
