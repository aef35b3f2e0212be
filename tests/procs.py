"""Finding processes from outside, by a marker in their command line.

A sandboxed job lives in its own PID namespace: the pids it can print mean
nothing on the host. Tests give such a process a unique argument instead
(``sleep 1000.123456``) and look for it in every ``/proc/*/cmdline``.
"""

from __future__ import annotations

import os
import secrets
import time

GONE_TIMEOUT_S = 5.0


def unique_sleep() -> str:
    """An argument for ``sleep`` that is long and unique to this call."""
    return f"{1000 + secrets.randbelow(10**6) / 10**6:.6f}"


def processes_with(marker: str) -> list[int]:
    """Host pids of live processes whose command line contains ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if needle in cmdline.read():
                    found.append(int(entry))
        except OSError:  # exited meanwhile
            continue
    return found


def assert_no_process_running(marker: str, timeout_s: float = GONE_TIMEOUT_S) -> None:
    """Wait until no process carries ``marker``; fail after ``timeout_s``.

    Polls: the kernel offers nothing to wait on for processes we do not parent.
    """
    end = time.monotonic() + timeout_s
    while pids := processes_with(marker):
        if time.monotonic() >= end:
            raise AssertionError(f"processes {pids} with {marker!r} still run after {timeout_s} s")
        time.sleep(0.02)
