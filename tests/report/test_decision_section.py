"""The report's decision section: right after the Summary, the recommendation under the study's [decision]
constraints, every variant with why it is in or out, in report.md and report.html."""
from __future__ import annotations

import json
import re

from auditor.report.markdown import write_report
from tests.helpers_decision import with_decision
from auditor.view.deployable import nearest_format
from tests.helpers_runs import MEASURED, build_run

# (bytes, variant) of the smallest real file: rtn@4's planted size is simulated (RTN writes float32 weights)
SMALLEST = min((v["size_bytes"], k) for k, v in MEASURED.items() if nearest_format(k) is None)


def section(text: str) -> str:
    start = text.index("## Which variant to ship")
    return text[start:text.index("\n## ", start + 1)]


def test_recommendation_under_the_study_constraints(tmp_path):
    run = with_decision(build_run(tmp_path), {"max_size_bytes": SMALLEST[0] * 1.25})
    md = write_report(run).read_text()
    # near the top: after the Summary, before the Verdicts
    assert md.index("## Summary") < md.index("## Which variant to ship") < md.index("## Verdicts")
    part = section(md)
    assert f"**Recommendation:** ship {SMALLEST[1]} \\[torch\\]" in part and "the only variant that fits" in part
    assert f"**Constraints:** size &lt;= {SMALLEST[0] * 1.25 / 1e6:.1f} MB" in part  # "<" made inert
    rows = [line for line in part.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith(f"| {SMALLEST[1]} | torch | fits (#1) |")  # the choice first
    too_big = next(r for r in rows if r.startswith("| magnitude@0.5 |"))
    assert re.search(r"\| misses: size [\d.]+ MB > [\d.]+ MB \|", too_big)
    unmeasured = next(r for r in rows if r.startswith("| magnitude@0.3 |"))
    assert "| not judged: size not measured |" in unmeasured
    html = (run / "report.html").read_text()
    assert '<a href="#decision">Which variant to ship</a>' in html
    assert f'<tr class="verdict-low"><td>{SMALLEST[1]}</td>' in html  # the row that fits is tinted
    assert html.count('<tr class="verdict-low"><td>') >= 1
    decision = json.loads((run / "summary.json").read_text())["decision"]  # the same decision, as data
    assert decision["fits"] == [{"variant": SMALLEST[1], "backend": "torch"}]
    assert decision["constraints"] == {"max_size_bytes": SMALLEST[0] * 1.25}
    assert len(decision["rows"]) == n_rows(run) and decision["nearest"] is None


def test_nothing_fits_names_the_nearest(tmp_path):
    run = with_decision(build_run(tmp_path), {"max_size_bytes": SMALLEST[0] / 2})
    part = section(write_report(run).read_text())
    nearest = f"nothing fits size &lt;= {SMALLEST[0] / 2e6:.1f} MB: the nearest is {SMALLEST[1]}"
    assert f"**Recommendation:** {nearest}" in part
    assert "fits (#" not in part
    decision = json.loads((run / "summary.json").read_text())["decision"]
    assert decision["fits"] == [] and decision["nearest"]["variant"] == SMALLEST[1]
    assert any(line.startswith("nothing fits") for line in decision["lines"])


def test_no_constraints_no_recommendation(tmp_path):
    run = build_run(tmp_path)
    part = section(write_report(run).read_text())
    assert "The study sets no \\[decision\\] constraints, so no variant is recommended" in part
    assert "Recommendation" not in part
    assert part.count("| no constraints |") == n_rows(run)  # every variant still listed with its figures


def test_unreadable_constraints_are_said_not_fatal(tmp_path):
    run = with_decision(build_run(tmp_path), {"max_budget": 1})
    part = section(write_report(run).read_text())
    assert "**Not decided:**" in part and "max\\_budget" not in part and "max_budget" in part
    assert "max_budget" in json.loads((run / "summary.json").read_text())["decision"]["error"]


def n_rows(run) -> int:
    return len(json.loads((run / "summary.json").read_text())["overview"])


def _table(part: str, key: str, *columns: str) -> dict[str, tuple[str, ...]]:
    """{variant: the named columns' cells} of the first Markdown table in ``part`` whose header has ``key``."""
    lines = [line for line in part.splitlines() if line.startswith("| ")]
    header = next(i for i, line in enumerate(lines) if key in line)
    names = [c.strip() for c in lines[header].strip("|").split("|")]
    at = [names.index(c) for c in columns]
    out = {}
    for line in lines[header + 1:]:
        if "---" in line:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(names):
            break
        out[cells[0]] = tuple(cells[i] for i in at)
    return out


def test_summary_shows_what_each_variant_ships_as_like_the_decision_table(tmp_path):
    md = write_report(build_run(tmp_path)).read_text()
    summary = _table(md[md.index("## Summary"):md.index("## Which variant to ship")], "size as shipped",
                     "size as shipped", "decode tokens/s as shipped")
    decision = _table(section(md), "ships as", "size", "decode tok/s")
    assert summary and set(summary) <= set(decision)
    for variant, figures in summary.items():
        assert figures == decision[variant], variant
    assert summary["rtn@4"] == ("simulated", "simulated")  # RTN writes float32 weights: no file to measure
