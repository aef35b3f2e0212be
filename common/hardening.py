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
import sys

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
