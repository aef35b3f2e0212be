"""bench.fleet's CPU accounting walks a worker's whole live process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.fleet import _parents, descendants

# worker 10 -> fork server 11 -> per-job session 12 -> pid-namespace fork 13 -> dedicated 14,
# as `ps --forest` shows a dedicated worker; 20 is another worker, 1 is init.
TREE = {10: 1, 11: 10, 12: 11, 13: 12, 14: 13, 15: 11, 16: 15, 20: 1, 21: 20}


@pytest.mark.parametrize(("pid", "expected"), [
    (10, {11, 12, 13, 14, 15, 16}),
    (13, {14}),
    (14, set()),
    (20, {21}),
    (99, set()),
])
def test_descendants_at_any_depth(pid: int, expected: set[int]) -> None:
    """Every live descendant is found, however deep, and nothing outside the subtree."""
    found = descendants(pid, TREE)
    assert set(found) == expected
    assert len(found) == len(expected)


def test_a_loop_from_reused_pids_ends() -> None:
    """A parent map with a cycle (pids reused mid-read) still gives each pid once."""
    assert sorted(descendants(1, {2: 1, 3: 2, 2000: 3, 1: 2000})) == [2, 3, 2000]


def test_parents_sees_a_real_grandchild() -> None:
    """On this machine's /proc: a child's child is this process's descendant."""
    code = ("import subprocess, sys; "
            "subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])")
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:  # wait for the grandchild to exist
            tree = _parents()
            grandchildren = [p for p in descendants(os.getpid(), tree) if tree[p] == child.pid]
            if grandchildren or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(grandchildren) == 1
        assert child.pid in descendants(os.getpid(), tree)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
