"""SIGTERM and SIGINT as stop requests, acted on outside the signal handler.

A Python signal handler runs in the main thread between two bytecodes, wherever
that thread is: inside ``threading.Event.set``, inside a logger, inside the
same handler interrupted by a second signal. A handler that takes a lock can
then wait forever for a lock its own thread holds; two SIGTERMs close together
hung `gristmill up`, a worker or a scheduler that way. So the handler here only
writes the signal number to a non-blocking pipe, and a thread reads the pipe
and calls the process's callback, where taking locks is safe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Calls ``on_signal(n)`` in a thread for the n-th stop signal received (n = 1, 2, ...)."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self._read_fd, self._write_fd = os.pipe()
        # A full pipe already holds more requests than anyone needs: drop, never block.
        os.set_blocking(self._write_fd, False)
        self._received = 0

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (call from the main thread)."""
        threading.Thread(target=self._dispatch, name="stop-signals", daemon=True).start()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Nothing but a write(2): no lock, no allocation worth the name, no logging.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, bytes((signum,)))

    def _dispatch(self) -> None:
        while True:
            received = os.read(self._read_fd, 512)
            if not received:
                return
            for _ in received:
                self._received += 1
                self._on_signal(self._received)
