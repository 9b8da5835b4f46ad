"""Stopping a run: SIGINT (Ctrl-C) and SIGTERM become ``Interrupted`` once, in the main thread.

    with stop_signals() as disarm: ...        Interrupted(signum) raised at the first signal;
                                              later ones ignored until the block ends (so the
                                              cleanup after the first is not cut short);
                                              ``disarm()``: from then on every one is ignored
    interruption(exc) -> (signal, error text)  what an interrupted point's record says

Outside the main thread signals cannot be caught: the block changes nothing there. kill -9
still works: workers die with the runner (``harness.measure.lifeline``).
"""
from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a run; a KeyboardInterrupt, so Ctrl-C paths handle both."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum)


@contextlib.contextmanager
def stop_signals():
    armed = [threading.current_thread() is threading.main_thread()]

    def disarm() -> None:
        armed[0] = False

    if not armed[0]:
        yield disarm
        return

    def handler(signum, frame):
        if armed[0]:
            disarm()
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield disarm
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def signal_of(exc: KeyboardInterrupt) -> signal.Signals:
    return exc.signal if isinstance(exc, Interrupted) else signal.SIGINT


def interruption(exc: KeyboardInterrupt) -> tuple[signal.Signals, str]:
    """The signal behind ``exc`` and the error text of the point it stopped."""
    sig = signal_of(exc)
    if sig == signal.SIGINT:
        return sig, "interrupted by the user (Ctrl-C, SIGINT)"
    return sig, f"interrupted by {sig.name} (tbench was asked to stop)"
