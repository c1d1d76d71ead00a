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
    verdict_row = next(line for line in text.splitlines() if line.startswith(f"| {PLANTED_HIGH} | torch | HIGH"))
    assert "| 100.0% | 5.0% |" in verdict_row  # flip rate and its null baseline side by side
    assert "not measured" in text  # magnitude@0.3 has no size
    assert "&lt;script>alert('planted')&lt;/script>" in text  # markdown: no raw HTML tag either
    page = (run / "report.html").read_text()
    assert 'class="verdict-high"' in page and "HIGH" in page


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
    assert main(["report", "synth", "--reports", str(tmp_path), "--flip-rate-high", "1.0",
                 "--flip-rate-elevated", "0.9", "--srs-increase-high", "0.9", "--srs-increase-elevated", "0.8"]) == 0
    assert "report.html" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    # flip excess 95 pts < 0.9? no: 0.95 >= 0.9 elevated; SRS excess below 0.8; significant -> elevated
    assert summary["verdicts"][0]["level"] == "elevated"
    assert summary["thresholds"]["flip_rate_high"] == 1.0
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
