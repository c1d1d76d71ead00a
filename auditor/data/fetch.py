"""Getting BBQ: the release's jsonl files from nyu-mll/BBQ at a pinned commit, verified, written whole.

`fetch_bbq` downloads `data/<Category>.jsonl` for the nine categories the project reads from
`raw.githubusercontent.com/nyu-mll/BBQ/<BBQ_COMMIT>/data/` into the user data directory
(platformdirs) or a folder of the caller's choice. Each file is streamed into a temp name
(`auditor.core.files.atomic_path`), its sha256 computed on the way, and renamed onto its
final name only when it is complete (as many bytes as the server announced) and, where the
project knows the file's digest, equal to it. Digests are pinned for the six categories whose
released files the project holds (they match the git blobs at BBQ_COMMIT); for the other three
the digest seen is recorded in the manifest. The manifest (`fetched.json`) is written last:
a folder without it is an incomplete download and `resolve_bbq` never uses it. A retry skips
the files already there with a pinned digest that matches.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import socket
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.core.files import atomic_path, write_json
from auditor.core.provenance import now_utc

log = logging.getLogger(__name__)

APP_NAME = "compression-risk-auditor"
BBQ_REPO = "nyu-mll/BBQ"
BBQ_COMMIT = "bea11bd97d79217245b5871acd247b9d6eb24598"  # master, 2022-07-06 (the release data unchanged since 2022-04-03)
BBQ_BASE_URL = f"https://raw.githubusercontent.com/{BBQ_REPO}/{BBQ_COMMIT}/data"
BBQ_TREE_URL = f"https://github.com/{BBQ_REPO}/tree/{BBQ_COMMIT}/data"
MANIFEST = "fetched.json"

#: file -> pinned sha256, or None where the project holds no copy of the released file (digest recorded).
BBQ_FILES: dict[str, str | None] = {
    "Age.jsonl": "46e805b3fc2d8cbd26eeb8e8430d98cf7b2dc9c83574ff3674e8ce4f0fca2a60",
    "Disability_status.jsonl": "375d40d9b71f056150264445ec189b13934998f3f49a1e311aa7578eb3b45e5f",
    "Gender_identity.jsonl": None,
    "Nationality.jsonl": "a583e74666aec0341ded8aa3983e7cad694eb24de72c254d28b2df3035720090",
    "Physical_appearance.jsonl": "e48d7e13508565f4801574e611043470c25c95a0a62af3699cb5ee7cb02608fb",
    "Race_ethnicity.jsonl": None,
    "Religion.jsonl": "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616",
    "SES.jsonl": None,
    "Sexual_orientation.jsonl": "2c71036b9e7584fe589c42aef32c1a42bc01b9a5e9b1b8704342630cdb08cefd",
}

_CHUNK = 1 << 16


class FetchError(AuditorError):
    """A download that could not be completed or verified; nothing partial is left behind."""


@dataclass(frozen=True)
class FetchedFile:
    name: str
    url: str
    size_bytes: int
    sha256: str
    pinned: bool  # True: equal to the project's pinned digest; False: digest recorded, not checked


@dataclass(frozen=True)
class FetchResult:
    folder: Path
    files: tuple[FetchedFile, ...]
    base_url: str


def user_bbq_dir() -> Path:
    """Where `auditor data fetch bbq` puts BBQ by default: <user data dir>/compression-risk-auditor/bbq."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "bbq"


def fetched_bbq(folder: Path | None = None) -> Path | None:
    """`folder` (default: user_bbq_dir()) when it holds a complete fetch: its manifest and every file."""
    folder = user_bbq_dir() if folder is None else folder
    try:
        listed = [f["name"] for f in json.loads((folder / MANIFEST).read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if listed and all((folder / name).is_file() for name in listed) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(dest: Path) -> str:
    return (f"to place the files by hand, download data/<Category>.jsonl from {BBQ_TREE_URL} into {dest} "
            f"and pass --bbq {dest} or set $AUDITOR_BBQ_DIR={dest}")


def _download(url: str, dest: Path, pinned: str | None, timeout_s: float) -> FetchedFile:
    """Stream `url` into `dest` whole: complete (Content-Length) and equal to `pinned`, or nothing written."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(dest) as tmp:
            expected = response.headers.get("Content-Length")
            with open(tmp, "wb") as fh:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
            if expected is not None and size != int(expected):
                raise FetchError(f"{url}: download truncated ({size} of {expected} bytes); nothing written to {dest}")
            if pinned is not None and digest.hexdigest() != pinned:
                raise FetchError(f"{url}: sha256 {digest.hexdigest()} does not match the pinned {pinned}; "
                                 f"nothing written to {dest}")
    except http.client.IncompleteRead as exc:
        raise FetchError(f"{url}: download truncated ({size + len(exc.partial)} bytes, then the connection "
                         f"closed); nothing written to {dest}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"cannot download {url} ({reason}); {_by_hand(dest.parent)}") from None
    return FetchedFile(dest.name, url, size, digest.hexdigest(), pinned is not None)


def fetch_bbq(dest: Path | None = None, *, base_url: str = BBQ_BASE_URL,
              files: dict[str, str | None] | None = None, timeout_s: float = 60.0) -> FetchResult:
    """Download the BBQ jsonl files into `dest` (default user_bbq_dir()) and write its manifest last.

    `base_url` + "/" + file name is each file's URL (a mirror or a test server may stand in).
    Files already in `dest` whose pinned digest matches are kept, not downloaded again.
    """
    dest = user_bbq_dir() if dest is None else Path(dest)
    files = BBQ_FILES if files is None else files
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{dest}: not a folder (--dest must name a folder for the BBQ files)")
    (dest / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until this fetch finishes
    got = []
    for name, pinned in files.items():
        url = f"{base_url.rstrip('/')}/{name}"
        path = dest / name
        if pinned is not None and path.is_file() and sha256_file(path) == pinned:
            log.info("%s: already present and verified", path)
            got.append(FetchedFile(name, url, path.stat().st_size, pinned, True))
            continue
        got.append(_download(url, path, pinned, timeout_s))
        log.info("%s: %d bytes, sha256 %s", path, got[-1].size_bytes, got[-1].sha256)
    result = FetchResult(dest, tuple(got), base_url)
    write_json({"source": f"{BBQ_REPO}@{BBQ_COMMIT}", "base_url": base_url, "fetched_utc": now_utc(),
                "files": [asdict(f) for f in got]}, dest / MANIFEST)
    return result
