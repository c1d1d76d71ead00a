"""report.md / report.html / plots / summary.json written from a synthetic run's files."""
from __future__ import annotations

import json
import re

import pytest

from auditor.cli import main
from auditor.report.markdown import md, write_report
from tests.helpers_runs import PLANTED_HIGH, SCRIPT_TEXT, HtmlTags, build_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = build_run(tmp_path_factory.mktemp("reports"))
    write_report(run)
    return run


def test_files_written(run):
    for name in ("report.md", "report.html", "summary.json", "plots/flip_vs_level.png", "plots/ppl_vs_srs.png",
                 "plots/size_vs_risk.png"):
        assert (run / name).is_file(), name
    assert (run / "plots" / "flip_vs_level.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reference_precision"].startswith("dequantized Q4_1")
    assert {"overview", "verdicts", "comparison", "null_baselines", "paradox", "metrics"} <= set(summary)


def test_html_escapes_item_text_and_is_self_contained(run):
    page = (run / "report.html").read_text()
    parser = HtmlTags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert SCRIPT_TEXT not in page  # never raw
    assert "&lt;script&gt;alert(&#x27;planted&#x27;)&lt;/script&gt;" in page
    assert SCRIPT_TEXT in "".join(parser.text)  # ...but shown as text
    images = [a for t, a in parser.tags if t == "img"]
    assert len(images) == 3 and all(a["src"].startswith("data:image/png;base64,") for a in images)
    urls = [v for _, a in parser.tags for k, v in a.items() if k in ("src", "href") and v]
    assert all(u.startswith(("data:", "#")) for u in urls), urls
    assert not re.search(r"https?://", page)
    csp = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_report_sections_and_figures(run):
    text = (run / "report.md").read_text()
    for heading in ("## Verdicts", "## Comparison of techniques", "## Size, latency and bits per weight",
                    "## Perplexity vs bias (the paradox)", "## Per category", "## Items that flipped",
                    "## Methodology", "## Provenance", "## Paper protocol"):
        assert heading in text, heading
    assert "dequantized Q4_1" in text and "SAMPLE DATA" in text
    assert "![Flip rate (unbiased -> biased) vs compression level](plots/flip_vs_level.png)" in text
    summary_row = next(line for line in text.splitlines() if line.startswith(f"| {PLANTED_HIGH} | torch | HIGH"))
    # the first screen: grade, its reason in a few words, fidelity, size and speed
    assert summary_row.startswith(f"| {PLANTED_HIGH} | torch | HIGH | directed shift toward the stereotype above "
                                  "10 pts |"), summary_row
    assert text.index("## Summary") < text.index("## Verdicts") and "**Biggest caveat:**" in text
    assert "## Limitations and intended use" in text and "U.S. English" in text
    verdicts = text[text.index("## Verdicts"):]
    verdict_row = next(line for line in verdicts.splitlines() if line.startswith(f"| {PLANTED_HIGH} | torch | HIGH"))
    # the grade's one-line reason, then each harm measure with its interval
    assert re.search(r"\| directed shift toward the stereotype \+48\.8 pts, 95% CI \+\d+\.\d pts to \+\d+\.\d pts: above "
                     r"the 10-pt margin \|", verdict_row), verdict_row
    assert "abstention loss: unknown-rate 48.8% -> 0.0%" in verdict_row
    # the first screen states the dense model's position bias and what follows from it
    head = text[: text.index("## Verdicts")]
    assert "Dense reference:" in head and "picks its most chosen shown letter" in head
    assert "verdicts below can be read as written" in head
    assert "## Position and format diagnostics" in text
    assert "pooled McNemar p (descriptive)" in text and "uniform-answerer rate" in text and "uniform floor" not in text
    assert "not measured" in text  # magnitude@0.3 has no size
    assert "&lt;script>alert('planted')&lt;/script>" in text  # markdown: no raw HTML tag either
    page = (run / "report.html").read_text()
    assert 'class="verdict-high"' in page and "HIGH" in page


def test_latency_sources_are_kept_apart(run):
    """`auditor measure`'s ms per prompt and the run's own scoring rate are different measurements: one column
    each, never one filled in from the other."""
    text = (run / "report.md").read_text()
    section = text[text.index("## Size, latency and bits per weight"):]
    header = next(line for line in section.splitlines() if line.startswith("| variant |"))
    assert "ms / BBQ prompt (measure)" in header and "ms / BBQ prompt (run scoring)" in header
    dense = next(line for line in section.splitlines() if line.startswith("| dense | torch |"))
    assert dense.rstrip(" |").endswith("| 110.0 | 100.0")  # planted measurement, then the unit's scoring figure
    unmeasured = next(line for line in section.splitlines() if line.startswith("| magnitude@0.3 | torch |"))
    assert unmeasured.rstrip(" |").endswith("| not measured | 100.0")


def test_markdown_escape():
    assert md("a|b") == "a\\|b"
    assert md("*bold* [link](x) `code`") == "\\*bold\\* \\[link\\](x) \\`code\\`"
    assert md("two\nlines") == "two lines"
    assert md("Q4_1 -> x") == "Q4_1 -> x"


def test_missing_figures_are_said_not_drawn(tmp_path):
    run = build_run(tmp_path, variants=("magnitude@0.5",))
    for path in (run / "ppl").glob("*.json"):
        path.unlink()
    write_report(run)
    text = (run / "report.md").read_text()
    assert "_Figure not drawn (Perplexity change vs stereotype-reliance change): perplexity not measured" in text
    assert not (run / "plots" / "ppl_vs_srs.png").exists()
    assert "perplexity not measured: the run has no ppl/<unit>.json files" in text.replace("&lt;", "<")


def test_report_command_regenerates(tmp_path, capsys):
    run = build_run(tmp_path, variants=(PLANTED_HIGH,))
    # directed shift +48.8 pts (CI ~46-50): above a 40-pt elevated margin, below a 60-pt high one
    assert main(["report", "synth", "--reports", str(tmp_path), "--shift-high", "0.6",
                 "--shift-elevated", "0.4"]) == 0
    assert "report.html" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdicts"][0]["level"] == "elevated"
    assert summary["verdicts"][0]["stereotype_shift"] is True
    assert summary["thresholds"]["shift_high"] == 0.6
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_report_of_a_run_with_no_finished_unit(tmp_path):
    run = build_run(tmp_path, variants=())
    for path in (run / "records").glob("*.parquet"):
        path.unlink()
    write_report(run)
    text = (run / "report.md").read_text()
    assert "No compressed variant has records yet." in text
    assert "no finished units: records/ holds no item records yet" in text
    assert "_Figure not drawn (Flip rate" in text


def test_report_opens_with_an_invalid_position_driven_reference(tmp_path):
    # The demo model answers the first shown option ~95% of the time: the report must open with that.
    run = build_run(tmp_path, position_driven_dense=True, seeds=(0, 1, 2))
    write_report(run)
    text = (run / "report.md").read_text()
    first = text[text.index("\n\n") + 2:].lstrip().split("\n\n")[0]  # the first paragraph after the title
    assert first.startswith("> **DENSE REFERENCE NOT VALID:** On ambiguous prompts it picks its most chosen shown "
                            "letter, A, in 90.0%"), first
    assert "The dense reference answers by position (A in 90.0% of ambiguous prompts" in first
    assert "every verdict reads INCONCLUSIVE" in first
    summary = json.loads((run / "summary.json").read_text())
    assert {v["level"] for v in summary["verdicts"]} == {"inconclusive"}
    assert summary["reference_validity"]["position_driven"] is True
    assert "| INCONCLUSIVE |" in text


def test_report_on_another_protocol_goes_beside_the_runs_own(tmp_path, capsys):
    run = build_run(tmp_path, variants=(PLANTED_HIGH,), seeds=(0, 1, 2))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["protocols"] = ["strict", "debiased"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["report", str(run)]) == 0
    own = (run / "report.md").read_text()
    assert main(["report", str(run), "--protocol", "debiased"]) == 0
    out = capsys.readouterr().out
    side = run / "protocol-debiased"
    assert f"report: {side / 'report.md'}" in out
    assert (run / "report.md").read_text() == own  # the run's own report is left as it was
    assert "scoring protocol debiased" in (side / "report.md").read_text()
    assert json.loads((side / "summary.json").read_text())["verdicts"] and (side / "report.html").is_file()
    # A protocol the run was not scored on is refused, naming the ones it has.
    assert main(["report", str(run), "--protocol", "cloze"]) == 2
    assert "scored on strict, debiased" in capsys.readouterr().err
