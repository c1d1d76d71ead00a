"""Hold Ctrl-C and SIGTERM while worker threads run native code, and deliver them once the workers stop.

Python runs signal handlers in the main thread only, between bytecodes. When the main thread waits for
worker threads (llama.cpp lanes, each in llama_decode), the handler's exception (KeyboardInterrupt, or the
CLI's `Terminated`) leaves the wait while the workers still run; whoever catches it then frees what the
workers use. A study run stopped with SIGTERM during llama.cpp scoring went on scoring, and a second
SIGTERM crashed it with SIGSEGV. `held_signals` turns the signals into a request to stop that the workers
read between pieces of work, and raises the signal again once the block has ended, so the caller's
handler runs (and the CLI exits 130 or 143) with nothing left running.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def held_signals(stop: threading.Event) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set `stop` and are remembered; on leaving it (normally or by an
    exception) the first of them is raised again under the handler that was there before.

    Only the main thread can set handlers, and only it runs them; elsewhere, or where a handler was set
    outside Python (`signal.getsignal` gives None and cannot be restored), the block runs unchanged.
    """
    previous = {signum: signal.getsignal(signum) for signum in HELD}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    caught: list[int] = []

    def hold(signum, frame):
        caught.append(signum)
        stop.set()

    for signum in HELD:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            # The handler runs here, in this thread (SIG_DFL for SIGTERM ends the process, as it would have).
            signal.raise_signal(caught[0])
