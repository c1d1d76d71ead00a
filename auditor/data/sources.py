"""Where BBQ items and text corpora come from: explicit path, environment, then project fixtures."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from auditor.core.errors import DataError
from auditor.data.fetch import BBQ_COMMIT, BBQ_REPO, fetched_bbq

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_ROOT / "fixtures"
SAMPLE_BBQ = FIXTURES / "bbq_sample"
SHARED_BBQ = PROJECT_ROOT.parent / "shared" / "bbq"
BBQ_ENV = "AUDITOR_BBQ_DIR"
CORPUS_ENV = "AUDITOR_CORPUS_DIR"
SAMPLE_ORIGIN = ("project SAMPLE in BBQ's schema (fixtures/bbq_sample) - NOT BBQ; "
                 "numbers on it say nothing about bias")


@dataclass(frozen=True)
class DataSource:
    path: Path
    origin: str  # a sentence for provenance: what this data is and where it came from
    is_sample: bool


def regenerated_categories(folder: Path) -> list[str]:
    """Categories a data folder's README marks as regenerated from templates (not the release).

    The shared BBQ copy documents this in a table row such as
    `| SES.jsonl | 6864 | regenerated from the official templates |`; reports must say so.
    For a single file, only that file's category counts.
    """
    readme = folder / "README.md" if folder.is_dir() else folder.parent / "README.md"
    if not readme.is_file():
        return []
    found = []
    for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].endswith(".jsonl") and "regenerated" in cells[-1].lower():
            found.append(cells[0].removesuffix(".jsonl"))
    if not folder.is_dir():
        found = [c for c in found if c == folder.stem]
    return found


def _origin(path: Path, how: str) -> str:
    regen = regenerated_categories(path)
    note = (f" ({', '.join(regen)} regenerated from the official templates, not the released files: "
            "treat their numbers as BBQ-template results)" if regen else "")
    return f"BBQ from {how}{note}"


#: What every item of the fixture sample carries (additional_metadata.source): a file holding it holds
#: sample items, however it was copied, renamed, re-saved (CRLF) or re-formatted.
SAMPLE_MARK = b"auditor fixture (not BBQ)"


def is_sample(path: Path) -> bool:
    """Whether `path` is, or holds any of, the project's fixture sample, however it is named: relative,
    through a symlink, one of its files, a copy (same bytes), or any file with a sample item in it (a
    re-saved, re-formatted, cut or renamed copy, or a mix with real BBQ files): the report's SAMPLE DATA
    banner must not depend on the bytes."""
    try:
        resolved, sample = Path(path).resolve(), SAMPLE_BBQ.resolve()
    except OSError:
        return False
    if resolved == sample or sample in resolved.parents:
        return True
    files = sorted(resolved.glob("*.jsonl")) if resolved.is_dir() else [resolved]
    return any(_holds_sample_items(f) for f in files)


def _holds_sample_items(path: Path) -> bool:
    """Whether a file carries the sample's mark (read in blocks; an unreadable file holds none)."""
    tail = b""
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                if SAMPLE_MARK in tail + block:
                    return True
                tail = block[-len(SAMPLE_MARK):]
    except OSError:
        return False
    return False


def resolve_bbq(explicit: str | Path | None) -> DataSource:
    """--bbq PATH, then $AUDITOR_BBQ_DIR, then the copy `auditor data fetch bbq` made, then
    ../shared/bbq beside the checkout, then the project's sample (which is not BBQ, and says so
    however it is given)."""
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise DataError(path, "no such file or directory (the BBQ data given)")
        how = f"--bbq {path}"
    elif os.environ.get(BBQ_ENV):
        path = Path(os.environ[BBQ_ENV])
        if not path.exists():
            raise DataError(path, f"${BBQ_ENV}: no such file or directory")
        how = f"${BBQ_ENV}={path}"
    else:
        fetched = fetched_bbq()
        if fetched is not None:
            return DataSource(fetched, f"BBQ release {BBQ_REPO}@{BBQ_COMMIT[:7]}, fetched to {fetched}", False)
        if SHARED_BBQ.is_dir() and any(SHARED_BBQ.glob("*.jsonl")):
            return DataSource(SHARED_BBQ, _origin(SHARED_BBQ, f"{SHARED_BBQ} (beside the checkout)"), False)
        return DataSource(SAMPLE_BBQ, SAMPLE_ORIGIN, True)
    if is_sample(path):
        return DataSource(path, f"{SAMPLE_ORIGIN} (given as {how})", True)
    return DataSource(path, _origin(path, how), False)


def resolve_corpus(explicit: str | Path | None, split: str) -> DataSource:
    """Text for calibration (split "valid") or perplexity (split "test").

    --corpus/--calib FILE, then $AUDITOR_CORPUS_DIR/<split>.txt, then
    ../shared/corpus/wikitext-2/<split>.txt beside the checkout, then the fixture text.
    """
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DataError(path, "no such text file")
        return DataSource(path, f"text file {path}", False)
    candidates = []
    if os.environ.get(CORPUS_ENV):
        candidates.append(Path(os.environ[CORPUS_ENV]) / f"{split}.txt")
    candidates.append(PROJECT_ROOT.parent / "shared" / "corpus" / "wikitext-2" / f"{split}.txt")
    for path in candidates:
        if path.is_file():
            return DataSource(path, f"WikiText-2 {split} ({path})", False)
    fixture = FIXTURES / f"corpus_{split}.txt"
    return DataSource(fixture, f"project fixture text {fixture.name} (not WikiText-2)", True)
