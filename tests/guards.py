"""Test helpers shared by the fuzz and bomb tests (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def hang_guard(seconds: float):
    """Fail instead of hanging when the block never returns (SIGALRM, main thread, POSIX).

    A guard against hangs, not a timing assertion: the limit is far above the normal duration,
    so a loaded machine does not fail the test; elsewhere it is a no-op.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
