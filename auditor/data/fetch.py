"""Getting BBQ: the release's jsonl files from nyu-mll/BBQ at a pinned commit, verified, written whole.

`fetch_bbq` downloads `data/<Category>.jsonl` for the nine categories the project reads from
`raw.githubusercontent.com/nyu-mll/BBQ/<BBQ_COMMIT>/data/` into the user data directory
(platformdirs) or a folder of the caller's choice, as carefully as a package manager:

- every file is streamed into a temp name beside its final one, its sha256 computed on the
  way, and bounded in size: a pinned file by its release size, an unpinned one by
  MAX_UNPINNED_BYTES (a larger Content-Length is refused before the download starts);
- it must be complete (as many bytes as the server announced), and equal to its pinned digest
  (the six categories whose released files the project holds), or, for the other three, to the
  digest recorded when this folder was first fetched (a lock: a re-fetch from another mirror
  cannot swap them); a first fetch of an unpinned file must parse as BBQ jsonl;
- the folder's files are replaced only when every file of this fetch is complete and verified;
  the manifest (`fetched.json`) is then written last. A fetch that fails leaves the earlier
  complete copy, and its manifest, as they were; a folder without a manifest is never used by
  `resolve_bbq`. A retry skips the files already there whose digest matches;
- every network and disk error (a bad --dest, a full disk, an HTTP error, a redirect loop, a bad
  Content-Length, a timeout, the overall deadline) is one FetchError line naming the URL or file.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from auditor.core.errors import AuditorError, DataError
from auditor.core.files import TEMP_MARK, fsync_path, write_json
from auditor.core.provenance import now_utc
from auditor.data.bbq import read_jsonl

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

#: Sizes of the pinned release files (bytes): a download longer than its file's is refused on the way.
BBQ_SIZES: dict[str, int] = {
    "Age.jsonl": 3_091_834, "Disability_status.jsonl": 1_336_984, "Nationality.jsonl": 2_900_040,
    "Physical_appearance.jsonl": 1_347_476, "Religion.jsonl": 1_118_728, "Sexual_orientation.jsonl": 729_010,
}
#: Bound on an unpinned file (the largest release file is under 20 MB).
MAX_UNPINNED_BYTES = 64 * 1024 * 1024
#: Bound on a whole fetch, on top of the per-read timeout (a server that drips bytes never times out a read).
DEFAULT_DEADLINE_S = 1800.0

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
    matched_record: bool = False  # unpinned, and equal to the digest recorded by this folder's first fetch


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


def recorded_digests(folder: Path) -> dict[str, str]:
    """name -> sha256 as `folder`'s manifest recorded them ({} without a readable one)."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        return {str(f["name"]): str(f["sha256"]) for f in files}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(dest: Path) -> str:
    return (f"to place the files by hand, download data/<Category>.jsonl from {BBQ_TREE_URL} into {dest} "
            f"and pass --bbq {dest} or set $AUDITOR_BBQ_DIR={dest}")


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())


def _content_length(url: str, response) -> int | None:
    text = response.headers.get("Content-Length")
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise FetchError(f"{url}: the server sent an invalid Content-Length {text[:40]!r}; nothing written")
    return value


def _download(url: str, tmp: Path, final: Path, want: str | None, *, timeout_s: float, max_bytes: int,
              deadline: float, want_label: str = "pinned") -> FetchedFile:
    """Stream `url` into `tmp`: complete (Content-Length), at most `max_bytes`, before `deadline` (a
    time.monotonic() value) and equal to `want` when given; FetchError (and `tmp` removed) otherwise."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            expected = _content_length(url, response)
            if expected is not None and expected > max_bytes:
                raise FetchError(f"{url}: {expected} bytes announced, more than the {max_bytes} a BBQ file of "
                                 f"{final.name} may have; nothing written")
            read = getattr(response, "read1", response.read)  # what has arrived, so the deadline is checked
            with open(tmp, "wb") as fh:
                while chunk := read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{url}: more than the {max_bytes} bytes a BBQ file of {final.name} may "
                                         "have; nothing written")
                    if time.monotonic() > deadline:
                        raise FetchError(f"{url}: the fetch took longer than its deadline ({size} bytes so far); "
                                         "nothing written")
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if expected is not None and size != expected:
                raise FetchError(f"{url}: download truncated ({size} of {expected} bytes); nothing written to "
                                 f"{final}")
            if want is not None and digest.hexdigest() != want:
                raise FetchError(f"{url}: sha256 {digest.hexdigest()} does not match the {want_label} {want}; "
                                 f"nothing written to {final}")
    except FetchError:
        tmp.unlink(missing_ok=True)
        raise
    except http.client.IncompleteRead as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{url}: download truncated ({size + len(exc.partial)} bytes, then the connection "
                         f"closed); nothing written to {final}") from None
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"cannot download {url} (HTTP {exc.code} {_one_line(exc.reason)}); "
                         f"{_by_hand(final.parent)}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException, ValueError) as exc:
        tmp.unlink(missing_ok=True)  # ValueError: a URL urllib cannot open
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"cannot download {url} ({_one_line(reason)}); {_by_hand(final.parent)}") from None
    except OSError as exc:  # the disk: full, read-only, gone
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{final}: cannot write ({exc.strerror or exc}); nothing written") from None
    except BaseException:  # Ctrl-C, SIGTERM: no temp file stays
        tmp.unlink(missing_ok=True)
        raise
    return FetchedFile(final.name, url, size, digest.hexdigest(), False)


def _check_bbq_jsonl(tmp: Path, final: Path, url: str) -> None:
    """An unpinned file must be BBQ jsonl (every line an item with BBQ's fields) before it is accepted."""
    try:
        items = read_jsonl(tmp)
    except DataError as exc:
        raise FetchError(f"{url}: not BBQ jsonl ({str(exc).replace(str(tmp), final.name)}); nothing written") from None
    if not items:
        raise FetchError(f"{url}: not BBQ jsonl (no items); nothing written")


def _prepare(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{dest}: not a folder (--dest must name a folder for the BBQ files)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = dest / f".write-test{TEMP_MARK}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FetchError(f"{dest}: cannot write there ({exc.strerror or exc}); choose another --dest") from None


def fetch_bbq(dest: Path | None = None, *, base_url: str = BBQ_BASE_URL,
              files: dict[str, str | None] | None = None, timeout_s: float = 60.0,
              deadline_s: float = DEFAULT_DEADLINE_S, max_bytes: dict[str, int] | None = None) -> FetchResult:
    """Download the BBQ jsonl files into `dest` (default user_bbq_dir()) and write its manifest last.

    `base_url` + "/" + file name is each file's URL (a mirror or a test server may stand in). Files
    already in `dest` whose pinned (or first-fetch recorded) digest matches are kept, not downloaded
    again. `max_bytes` bounds a file's size (default: BBQ_SIZES for pinned files, MAX_UNPINNED_BYTES
    otherwise); `deadline_s` the whole fetch. Nothing in `dest` changes unless every file is fetched
    and verified.
    """
    dest = user_bbq_dir() if dest is None else Path(dest)
    files = BBQ_FILES if files is None else files
    _prepare(dest)
    recorded = recorded_digests(dest)
    deadline = time.monotonic() + deadline_s
    staged: list[tuple[Path, Path]] = []
    got = []
    try:
        for name, pinned in files.items():
            url = f"{base_url.rstrip('/')}/{name}"
            path = dest / name
            want = pinned or recorded.get(name)
            if want is not None and path.is_file() and sha256_file(path) == want:
                log.info("%s: already present and verified", path)
                got.append(FetchedFile(name, url, path.stat().st_size, want, pinned is not None,
                                       pinned is None))
                continue
            limit = (max_bytes or {}).get(name) or (BBQ_SIZES.get(name, MAX_UNPINNED_BYTES) if pinned
                                                    else MAX_UNPINNED_BYTES)
            tmp = path.with_name(f".{name}{TEMP_MARK}{os.getpid()}")
            staged.append((tmp, path))
            fetched = _download(url, tmp, path, want, timeout_s=timeout_s, max_bytes=limit, deadline=deadline,
                                want_label="pinned" if pinned else f"digest {MANIFEST} recorded at the first fetch "
                                "(delete the folder to fetch another copy)")
            if pinned is None:
                _check_bbq_jsonl(tmp, path, url)
            got.append(FetchedFile(name, url, fetched.size_bytes, fetched.sha256, pinned is not None,
                                   pinned is None and want is not None))
            log.info("%s: %d bytes, sha256 %s", path, fetched.size_bytes, fetched.sha256)
        # Every file is complete and verified: only now does the folder change.
        (dest / MANIFEST).unlink(missing_ok=True)  # between here and the new manifest the folder is incomplete
        for tmp, path in staged:
            os.replace(tmp, path)
        fsync_path(dest)
        result = FetchResult(dest, tuple(got), base_url)
        write_json({"source": f"{BBQ_REPO}@{BBQ_COMMIT}", "base_url": base_url, "fetched_utc": now_utc(),
                    "files": [asdict(f) for f in got]}, dest / MANIFEST)
    except OSError as exc:
        raise FetchError(f"{exc.filename or dest}: cannot write ({exc.strerror or exc}); {dest} is not a complete "
                         "fetch unless it still has its fetched.json") from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return result
