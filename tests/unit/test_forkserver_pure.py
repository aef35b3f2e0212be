"""The fork server's pure parts: how a PID-1 job's exit is reported."""

from __future__ import annotations

import signal

import pytest

from worker.sandbox.forkserver import pid1_status

TERM, KILL = int(signal.SIGTERM), int(signal.SIGKILL)


@pytest.mark.parametrize("status, sent, reported", [
    (0, set(), 0),                        # exited 0
    (3 << 8, {TERM}, 3 << 8),             # exited 3: not a signal's code
    ((128 + TERM) << 8, {TERM}, TERM),    # exited 143 after the worker's SIGTERM: killed by it
    ((128 + TERM) << 8, set(), (128 + TERM) << 8),  # 143 on its own: an exit code
    ((128 + TERM) << 8, {KILL}, (128 + TERM) << 8),  # another signal was sent
    (KILL, {TERM, KILL}, KILL),           # really killed: as it is
    (128 << 8, {0}, 128 << 8),            # signal 0 kills nothing
])
def test_pid1_status(status: int, sent: set[int], reported: int) -> None:
    assert pid1_status(status, sent) == reported
