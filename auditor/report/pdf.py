"""report.pdf: the HTML report printed by a headless Chromium (the page's own print CSS lays it out on A4).

A browser prints the same page a reviewer opens, so the PDF cannot drift from report.html,
and no PDF library becomes a dependency. Where no Chromium is found, `html_to_pdf` raises one
AuditorError naming the programs it looked for.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from auditor.core.errors import AuditorError

log = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 300  # the Qwen report (21 variants, 3 figures) prints in well under a minute on 2 cores
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def find_browser() -> str | None:
    """The first of BROWSERS on PATH, as a full path; None when there is none."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def require_browser() -> str:
    """`find_browser()`, or one AuditorError naming every program looked for."""
    exe = find_browser()
    if exe is None:
        raise AuditorError(f"--pdf: no headless browser found (looked for {', '.join(BROWSERS)} on PATH); "
                           "install Chromium (apt-get install chromium) or print report.html from a browser")
    return exe


def html_to_pdf(html: Path, pdf: Path, *, browser: str | None = None, timeout_s: float = TIMEOUT_S) -> Path:
    """Print `html` to `pdf` with headless Chromium; return `pdf`.

    --no-sandbox: Chromium refuses to start its sandbox as root (containers, CI); the page has a CSP
    that forbids scripts and remote loads, so nothing it prints can run. A throwaway profile keeps
    the user's own browser profile untouched. Written under a temporary name and renamed, so a
    failed print never leaves a truncated report.pdf.
    """
    exe = browser or require_browser()
    tmp = pdf.with_name(f".{pdf.name}.tmp")
    with tempfile.TemporaryDirectory(prefix="auditor-pdf-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--no-pdf-header-footer", "--print-to-pdf-no-header",
               f"--print-to-pdf={tmp}", html.resolve().as_uri()]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise AuditorError(f"{pdf}: {exe} did not print {html} within {timeout_s:.0f} s") from None
        except OSError as exc:
            raise AuditorError(f"{pdf}: cannot start {exe} ({exc.strerror or exc})") from None
    if res.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        last = (res.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise AuditorError(f"{pdf}: {exe} failed to print {html} (exit {res.returncode}: {last})")
    tmp.replace(pdf)
    log.info("PDF written to %s (%d pages)", pdf, count_pages(pdf))
    return pdf


def count_pages(pdf: Path) -> int:
    """The number of page objects in a PDF (`/Type /Page`, not `/Pages`).

    Enough for the PDFs Chromium (Skia) writes, which keep page objects uncompressed; not a general PDF parser.
    """
    return len(_PAGE.findall(pdf.read_bytes()))
