"""report.html renders in headless Chromium (Debian's `chromium` package) with no console errors.

Skipped when no Chromium is installed (`apt-get install chromium`). Chromium logs
every console message, CSP violation included, as a `:CONSOLE` line on stderr with
--enable-logging=stderr; a page that breaks the rules is checked first so the
detector is known to work.
"""
from __future__ import annotations

import base64
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from auditor.report.html import CSP
from auditor.report.markdown import write_report
from tests.helpers_runs import SCRIPT_TEXT, HtmlTags, build_run

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]




def test_report_renders_without_errors(tmp_path):
    # control: a page with a script and a remote image under the same policy must log console errors
    bad = tmp_path / "bad.html"
    bad.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
                   '</head><body><script>1</script><img src="http://example.invalid/x.png"></body></html>')
    control = chromium(["--dump-dom", bad.as_uri()], tmp_path / "profile")
    assert len(console_lines(control.stderr)) >= 2, control.stderr[-2000:]

    run = build_run(tmp_path / "reports")
    write_report(run)
    url = (run / "report.html").as_uri()
    result = chromium(["--dump-dom", url], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_lines(result.stderr) == []
    dom = HtmlTags()
    dom.feed(result.stdout)
    tags = [t for t, _ in dom.tags]
    assert "script" not in tags  # the planted <script> stayed text after parsing
    assert SCRIPT_TEXT in "".join(dom.text)
    assert tags.count("table") >= 10 and tags.count("img") == 3

    from PIL import Image  # matplotlib's dependency: decode what the browser decodes

    for _, attrs in (t for t in dom.tags if t[0] == "img"):
        data = base64.b64decode(attrs["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as img:
            img.verify()

    shot = tmp_path / "shot.png"
    result = chromium([f"--screenshot={shot}", "--window-size=1280,1600", url], tmp_path / "profile")
    assert result.returncode == 0 and console_lines(result.stderr) == []
    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
        colours = img.convert("L").getextrema()
        assert colours[0] < 100 < colours[1]  # text and background: the page painted
