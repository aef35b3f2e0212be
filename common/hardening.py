"""Keeping job code away from a Gristmill process's secrets.

Job processes run as the worker's user. Linux lets a process read the
environment and memory of any other process of the same user
(``/proc/<pid>/environ``), which would hand job code the Redis URL and the
secret key. A process marked non-dumpable (``PR_SET_DUMPABLE`` 0) has those
files owned by root instead, so same-user job code cannot read them. Root can
read everything: run workers as an unprivileged user (the image does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def forbid_inspection() -> bool:
    """Mark this process non-dumpable; False where that is not possible (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0


def is_dumpable() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) != 0


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``sig`` when this process dies (Linux).

    So a supervisor killed with SIGKILL (or by the OOM killer) leaves no orphans:
    the kernel signals its children itself. None where that is not possible.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: act on it now
            os.kill(os.getpid(), sig)

    return preexec
