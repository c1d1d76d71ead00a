"""`auditor data fetch` against a hostile or broken loopback server (127.0.0.1 only, never the internet):
redirects, huge and non-BBQ files, HTTP errors, a bad Content-Length, a server that drips bytes, a full disk,
a bad --dest, and re-fetches that fail or come from another mirror. Each is one line (exit 2), nothing half
written, and an earlier complete copy keeps its manifest (issue 32, M16-M19, L10)."""
from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.core.files import TEMP_MARK
from auditor.data import fetch
from auditor.data.fetch import MANIFEST, FetchError, fetch_bbq, fetched_bbq
from tests.conftest import SAMPLE_BBQ
from tests.helpers_http import serve, served_sample

SAMPLE_FILES = sorted(p.name for p in SAMPLE_BBQ.glob("*.jsonl"))
UNPINNED = SAMPLE_FILES[-1]


def _send(request, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    request.send_response(status)
    for key, value in (headers or {}).items():
        request.send_header(key, value)
    request.end_headers()
    if body:
        request.wfile.write(body)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A served data/ folder of the fixture files; they are the pins (the last one unpinned), also for the CLI."""
    root, pins = served_sample(tmp_path, SAMPLE_BBQ)
    monkeypatch.setattr(fetch, "BBQ_FILES", pins)
    return root, pins


def _cli_fetch(capsys, dest: Path, url: str) -> tuple[int, str]:
    code = main(["data", "fetch", "bbq", "--dest", str(dest), "--url", url])
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("auditor: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def _temps(dest: Path) -> list[str]:
    return [p.name for p in dest.rglob("*") if TEMP_MARK in p.name] if dest.exists() else []


def test_a_redirect_is_followed_and_verified(mirror, tmp_path, capsys):
    root, _ = mirror
    routes = {f"/moved/{n}": (lambda r, n=n: _send(r, 302, headers={"Location": f"/data/{n}"})) for n in SAMPLE_FILES}
    dest = tmp_path / "bbq"
    with serve(root.parent, routes) as url:
        code = main(["data", "fetch", "bbq", "--dest", str(dest), "--url", f"{url}/moved"])
    assert code == 0, capsys.readouterr().err
    assert fetched_bbq(dest) == dest


def test_a_redirect_loop_and_an_http_error_are_one_line(mirror, tmp_path, capsys):
    root, _ = mirror
    routes = {"/loop/Age.jsonl": lambda r: _send(r, 302, headers={"Location": "/loop/Age.jsonl"}),
              "/err/Age.jsonl": lambda r: _send(r, 500, b"boom", {"Content-Length": "4"})}
    with serve(root.parent, routes) as url:
        _one_line(*_cli_fetch(capsys, tmp_path / "a", f"{url}/loop"), f"{url}/loop/Age.jsonl")
        _one_line(*_cli_fetch(capsys, tmp_path / "b", f"{url}/err"), "HTTP 500")
        _one_line(*_cli_fetch(capsys, tmp_path / "c", f"{url}/missing"), "HTTP 404")
    assert not _temps(tmp_path)


def test_a_bad_content_length_is_one_line(mirror, tmp_path, capsys):
    root, _ = mirror
    routes = {"/bad/Age.jsonl": lambda r: _send(r, 200, b"{}", {"Content-Length": "abc"})}
    with serve(root.parent, routes) as url:
        _one_line(*_cli_fetch(capsys, tmp_path / "bbq", f"{url}/bad"), "invalid Content-Length 'abc'")


def test_an_unpinned_file_is_bounded_in_size_and_must_be_bbq_jsonl(mirror, tmp_path):
    root, pins = mirror

    def endless(request):  # no Content-Length: only the bound stops it
        request.send_response(200)
        request.end_headers()
        for _ in range(64):
            request.wfile.write(b"x" * 65536)

    routes = {f"/huge/{UNPINNED}": endless,
              f"/told/{UNPINNED}": lambda r: _send(r, 200, headers={"Content-Length": str(10**12)}),
              f"/junk/{UNPINNED}": lambda r: _send(r, 200, b"x" * 1000, {"Content-Length": "1000"})}
    for prefix in ("huge", "told", "junk"):
        (root.parent / prefix).mkdir()
        for name in SAMPLE_FILES:
            (root.parent / prefix / name).write_bytes((root / name).read_bytes())
    dest = tmp_path / "bbq"
    with serve(root.parent, routes) as url:
        with pytest.raises(FetchError, match=r"more than the 1000000 bytes"):
            fetch_bbq(dest, base_url=f"{url}/huge", files=pins, max_bytes={UNPINNED: 1_000_000})
        with pytest.raises(FetchError, match=rf"{10**12} bytes announced, more than the {fetch.MAX_UNPINNED_BYTES}"):
            fetch_bbq(dest, base_url=f"{url}/told", files=pins)
        with pytest.raises(FetchError, match=rf"{UNPINNED}: not BBQ jsonl \({UNPINNED}:1: malformed JSON"):
            fetch_bbq(dest, base_url=f"{url}/junk", files=pins)
    assert fetched_bbq(dest) is None and not _temps(dest)
    assert not [p for p in dest.glob("*.jsonl")]  # nothing of a failed fetch is in place


def test_a_failed_refetch_keeps_the_complete_copy_and_its_manifest(mirror, tmp_path, capsys):
    root, pins = mirror
    dest = tmp_path / "bbq"
    with serve(root.parent) as url:
        fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with serve(root.parent) as url:
        pass  # gone
    (dest / SAMPLE_FILES[0]).unlink()  # something to download again, from a server that is gone
    code, err = _cli_fetch(capsys, dest, f"{url}/data")
    _one_line(code, err, "cannot download")
    assert (dest / MANIFEST).read_bytes() == before[MANIFEST]
    assert all((dest / n).read_bytes() == b for n, b in before.items() if n != SAMPLE_FILES[0])


def test_a_refetch_from_another_mirror_cannot_swap_an_unpinned_file(mirror, tmp_path):
    root, pins = mirror
    dest = tmp_path / "bbq"
    with serve(root.parent) as url:
        first = fetch_bbq(dest, base_url=f"{url}/data", files=pins)
    recorded = next(f.sha256 for f in first.files if f.name == UNPINNED)
    other = root.parent / "other"
    other.mkdir()
    for name in SAMPLE_FILES:
        (other / name).write_bytes((root / name).read_bytes())
    lines = (root / UNPINNED).read_text().splitlines()
    (other / UNPINNED).write_text("\n".join(lines[:-1]) + "\n")  # valid BBQ jsonl, other bytes
    with serve(root.parent) as url:
        again = fetch_bbq(dest, base_url=f"{url}/other", files=pins)  # the recorded copy is kept
        assert next(f for f in again.files if f.name == UNPINNED).matched_record
        (dest / UNPINNED).unlink()
        with pytest.raises(FetchError, match="recorded at the first fetch"):
            fetch_bbq(dest, base_url=f"{url}/other", files=pins)
    assert fetch.recorded_digests(dest)[UNPINNED] == recorded


def test_a_server_that_drips_bytes_meets_the_overall_deadline(mirror, tmp_path):
    root, pins = mirror

    def drip(request):
        request.send_response(200)
        request.end_headers()
        try:
            for _ in range(100):
                request.wfile.write(b"{")
                request.wfile.flush()
                time.sleep(0.05)
        except ConnectionError:  # the fetcher gave up at its deadline
            pass

    (root.parent / "drip").mkdir()
    dest = tmp_path / "bbq"
    with serve(root.parent, {"/drip/Age.jsonl": drip}) as url:
        started = time.monotonic()
        with pytest.raises(FetchError, match="longer than its deadline"):
            fetch_bbq(dest, base_url=f"{url}/drip", files=pins, deadline_s=0.5)
    assert time.monotonic() - started < 4 and not _temps(dest)


def test_a_full_disk_and_a_bad_dest_are_one_line(mirror, tmp_path, capsys, monkeypatch):
    root, _ = mirror
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with serve(root.parent) as url:
        _one_line(*_cli_fetch(capsys, not_a_folder / "sub", f"{url}/data"), str(not_a_folder / "sub"))
        _one_line(*_cli_fetch(capsys, not_a_folder, f"{url}/data"), "not a folder")
        dest = tmp_path / "bbq"
        assert _cli_fetch(capsys, dest, f"{url}/data")[0] == 0
        before = (dest / MANIFEST).read_bytes()
        (dest / SAMPLE_FILES[1]).unlink()
        real_open = open

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(fetch, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k))
                            if "w" in mode else real_open(path, mode, *a, **k), raising=False)
        _one_line(*_cli_fetch(capsys, dest, f"{url}/data"), "No space left on device", SAMPLE_FILES[1])
    assert (dest / MANIFEST).read_bytes() == before and not _temps(dest)
