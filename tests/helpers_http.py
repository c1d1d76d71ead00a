"""A loopback HTTP server for download tests (127.0.0.1 only, never the internet)."""
from __future__ import annotations

import hashlib
import http.server
import threading
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serve(folder: Path, routes: dict | None = None):
    """http://127.0.0.1:PORT serving `folder`; `routes` maps a path to a handler(request) that answers it."""
    routes = routes or {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            for suffix, answer in routes.items():
                if self.path.endswith(suffix):
                    return answer(self)
            return super().do_GET()

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # a client that hung up (the fetcher gave up): fine
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def served_sample(tmp_path: Path, source: Path) -> tuple[Path, dict[str, str | None]]:
    """(tmp_path/served/data holding `source`'s jsonl files, their pins: sha256 each, the last one unpinned)."""
    root = tmp_path / "served" / "data"
    root.mkdir(parents=True)
    pins: dict[str, str | None] = {}
    for path in sorted(source.glob("*.jsonl")):
        data = path.read_bytes()
        (root / path.name).write_bytes(data)
        pins[path.name] = hashlib.sha256(data).hexdigest()
    pins[sorted(pins)[-1]] = None  # recorded, not checked
    return root, pins
