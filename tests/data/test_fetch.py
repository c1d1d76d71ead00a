"""The BBQ fetcher against a loopback HTTP server serving files the test writes (never the internet)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.core.files import TEMP_MARK
from auditor.data import fetch, sources
from auditor.data.fetch import MANIFEST, FetchError, fetch_bbq, fetched_bbq
from tests.conftest import SAMPLE_BBQ
from tests.helpers_http import serve, served_sample

SAMPLE_FILES = sorted(p.name for p in SAMPLE_BBQ.glob("*.jsonl"))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def truncated(request) -> None:
    """Announce the file's full length but send only half, then close the connection."""
    body = Path(request.directory, request.path.lstrip("/")).read_bytes()
    request.send_response(200)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body[: len(body) // 2])
    request.wfile.flush()
    request.close_connection = True


@pytest.fixture
def mirror(tmp_path):
    """A served folder holding the fixture jsonl files; the pins: their digests, one left unpinned."""
    return served_sample(tmp_path, SAMPLE_BBQ)


def _left_behind(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob("*")) if dest.exists() else []


def test_fetch_writes_verified_files_and_manifest_last(mirror, tmp_path):
    root, pins = mirror
    dest = tmp_path / "bbq"
    with serve(root.parent) as url:
        result = fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    assert sorted(p.name for p in dest.glob("*.jsonl")) == SAMPLE_FILES
    for f in result.files:
        assert (dest / f.name).read_bytes() == (root / f.name).read_bytes()
        assert f.sha256 == _digest((root / f.name).read_bytes())
        assert f.pinned is (pins[f.name] is not None)
    manifest = json.loads((dest / MANIFEST).read_text())
    assert [f["name"] for f in manifest["files"]] == list(pins)
    assert manifest["files"][-1]["sha256"] == _digest((root / SAMPLE_FILES[-1]).read_bytes())
    assert not [n for n in _left_behind(dest) if TEMP_MARK in n]
    assert fetched_bbq(dest) == dest


def test_checksum_mismatch_writes_nothing(mirror, tmp_path):
    root, pins = mirror
    first = SAMPLE_FILES[0]
    (root / first).write_bytes((root / first).read_bytes().replace(b"a", b"b", 1))  # not the pinned bytes
    dest = tmp_path / "bbq"
    with serve(root.parent) as url, pytest.raises(FetchError, match=f"{first}: sha256 .* does not match the pinned"):
        fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    assert _left_behind(dest) == []
    assert fetched_bbq(dest) is None


def test_truncated_download_writes_nothing(mirror, tmp_path):
    root, pins = mirror
    last = SAMPLE_FILES[-1]  # unpinned: only the length can tell that it is cut short
    dest = tmp_path / "bbq"
    with serve(root.parent, {"/" + last: truncated}) as url, pytest.raises(FetchError, match=f"{last}: download truncated"):
        fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    assert last not in _left_behind(dest) and MANIFEST not in _left_behind(dest)
    assert not [n for n in _left_behind(dest) if TEMP_MARK in n]
    assert fetched_bbq(dest) is None


def test_server_gone_fails_with_one_line_naming_url_and_manual_step(mirror, tmp_path, capsys):
    root, pins = mirror
    with serve(root.parent) as url:
        pass  # the server is shut down: nothing listens on that port any more
    dest = tmp_path / "bbq"
    code = main(["data", "fetch", "bbq", "--dest", str(dest), "--url", f"{url}/data"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{url}/data/Age.jsonl" in err and "by hand" in err and fetch.BBQ_TREE_URL in err
    assert _left_behind(dest) == []


def test_refetch_keeps_verified_files(mirror, tmp_path):
    root, pins = mirror
    dest = tmp_path / "bbq"
    with serve(root.parent) as url:
        fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    pinned = next(n for n, d in pins.items() if d)
    (root / pinned).unlink()  # the server lost it; the verified copy is kept without a download
    with serve(root.parent) as url:
        result = fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    assert next(f for f in result.files if f.name == pinned).pinned


def test_pins_are_the_official_files_beside_the_checkout(shared_bbq):
    """The pinned digests are those of the released files the project holds (the README's "official release")."""
    official = [n for n in fetch.BBQ_FILES if n.removesuffix(".jsonl") not in sources.regenerated_categories(shared_bbq)]
    assert sorted(official) == sorted(n for n, d in fetch.BBQ_FILES.items() if d)
    for name in official:
        assert fetch.sha256_file(shared_bbq / name) == fetch.BBQ_FILES[name], name


def test_resolution_order(tmp_path, monkeypatch):
    """--bbq, $AUDITOR_BBQ_DIR, the fetched copy, ../shared/bbq beside the checkout, then the sample."""
    fetched, shared, env, explicit = (tmp_path / n for n in ("fetched", "shared", "env", "explicit"))
    for folder in (fetched, shared, env, explicit):
        folder.mkdir()
        (folder / "Age.jsonl").write_bytes((SAMPLE_BBQ / SAMPLE_FILES[0]).read_bytes())
    (fetched / MANIFEST).write_text(json.dumps({"files": [{"name": "Age.jsonl"}]}))
    monkeypatch.setattr(fetch, "user_bbq_dir", lambda: fetched)
    monkeypatch.setattr(sources, "SHARED_BBQ", shared)
    monkeypatch.setenv(sources.BBQ_ENV, str(env))
    assert sources.resolve_bbq(explicit).path == explicit
    assert sources.resolve_bbq(None).path == env
    monkeypatch.delenv(sources.BBQ_ENV)
    got = sources.resolve_bbq(None)
    assert got.path == fetched and "fetched" in got.origin and not got.is_sample
    (fetched / MANIFEST).unlink()  # an incomplete fetch is never used
    got = sources.resolve_bbq(None)
    assert got.path == shared and "beside the checkout" in got.origin and not got.is_sample
    monkeypatch.setattr(sources, "SHARED_BBQ", tmp_path / "absent")
    got = sources.resolve_bbq(None)
    assert got.is_sample and "NOT BBQ" in got.origin
