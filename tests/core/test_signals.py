"""held_signals: SIGINT/SIGTERM inside the block only ask to stop; the caller's handler runs after it."""
from __future__ import annotations

import signal
import threading

import pytest

from auditor.core.signals import held_signals


class Raised(Exception):
    pass


@pytest.fixture
def raising_handlers():
    """SIGINT and SIGTERM raise `Raised` naming the signal, as the CLI's handlers raise on theirs."""
    def handler(signum, frame):
        raise Raised(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    yield handler
    for s, h in previous.items():
        signal.signal(s, h)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_block_sets_stop_and_is_raised_once_the_block_ends(raising_handlers, signum):
    stop = threading.Event()
    reached_end = []
    with pytest.raises(Raised) as caught:
        with held_signals(stop):
            signal.raise_signal(signum)
            signal.raise_signal(signal.SIGTERM)  # a second one is held too, and not raised again
            assert stop.is_set()
            reached_end.append(True)
    assert reached_end and caught.value.args == (signum,)
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is raising_handlers


def test_without_a_signal_the_block_runs_and_the_handlers_come_back(raising_handlers):
    stop = threading.Event()
    with held_signals(stop):
        assert signal.getsignal(signal.SIGTERM) is not raising_handlers
    assert not stop.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is raising_handlers
    with pytest.raises(Raised):  # and they act again
        signal.raise_signal(signal.SIGTERM)


def test_an_error_in_the_block_restores_the_handlers(raising_handlers):
    with pytest.raises(ValueError):
        with held_signals(threading.Event()):
            raise ValueError("in the block")
    assert signal.getsignal(signal.SIGTERM) is raising_handlers


def test_outside_the_main_thread_nothing_is_changed(raising_handlers):
    seen = []

    def body():
        with held_signals(threading.Event()):
            seen.append(signal.getsignal(signal.SIGTERM))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [raising_handlers]
