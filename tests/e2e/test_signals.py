"""Bursts of SIGTERM/SIGINT (make, systemd, a double Ctrl-C) stop every process promptly.

A signal handler that takes a lock (``threading.Event.set``) deadlocks when a
second signal interrupts it inside that lock; the handlers only write to a
wake-up pipe, and these tests send bursts to `up`, a worker and a scheduler.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import (
    Processes,
    alive,
    children,
    clean_env,
    deadline,
    scheduler_registered,
    worker_id_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

BURST_S = 1.0  # signals for this long (or until the process exits), as fast as they go
ROUNDS = 3
STOP_WITHIN_S = 15.0
START_WITHIN_S = 60.0  # a loaded CI machine starts Python slowly; this is not what is tested


def _burst(process: subprocess.Popen[bytes]) -> int:
    """Alternate SIGTERM and SIGINT for BURST_S: many land while a handler runs."""
    sent, end = 0, time.monotonic() + BURST_S
    while time.monotonic() < end and process.poll() is None:
        os.kill(process.pid, signal.SIGTERM if sent % 2 == 0 else signal.SIGINT)
        sent += 1
    return sent


def _stops_promptly(process: subprocess.Popen[bytes], what: str) -> None:
    sent = _burst(process)
    try:
        process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} still running {STOP_WITHIN_S:g} s after a burst of {sent} signals")


@pytest.mark.timeout(300)
def test_worker_stops_on_a_burst_of_signals(procs: Processes, redis_client: redis.Redis) -> None:
    """An idle worker stops within seconds of a signal burst, every time."""
    for i in range(ROUNDS):
        worker = procs.worker("--grace", "2", name=f"worker-{i}")
        worker_id_of(redis_client, worker.pid, START_WITHIN_S)
        _stops_promptly(worker, f"worker (round {i + 1})")


@pytest.mark.timeout(300)
def test_scheduler_stops_on_a_burst_of_signals(procs: Processes, redis_client: redis.Redis) -> None:
    """A scheduler stops within seconds of a signal burst, every time."""
    for i in range(ROUNDS):
        redis_client.delete("gm:schedulers")
        process, _ = procs.start(f"scheduler-{i}", "scheduler")
        scheduler_registered(redis_client, START_WITHIN_S)
        _stops_promptly(process, f"scheduler (round {i + 1})")


@pytest.mark.timeout(300)
def test_up_stops_on_a_burst_of_signals(procs: Processes, redis_client: redis.Redis,
                                        tmp_path: Path) -> None:
    """`up` stops itself and its children within seconds of a signal burst, every time."""
    for i in range(ROUNDS):
        redis_client.delete("gm:workers", "gm:schedulers")
        env = clean_env(procs.redis_url, GRISTMILL_DATA_DIR=str(tmp_path / f"data-{i}"))
        process, lines = procs.start(
            f"up-{i}", "up", "--workers", "1", "--concurrency", "1", "--grace", "2",
            "--api-port", "0", env=env, read_stdout=True,
        )
        assert lines is not None
        lines.expect(r"fleet up", START_WITHIN_S)
        deadline(lambda: redis_client.zcard("gm:workers") and redis_client.zcard("gm:schedulers"),
                 START_WITHIN_S, "up's worker and scheduler to register")
        kids = children(process.pid)
        assert kids
        _stops_promptly(process, f"up (round {i + 1})")
        deadline(lambda kids=kids: not any(alive(pid) for pid in kids), 5, "up's children to exit")
