"""Fixtures of the chaos test: its own Redis (fsync always) and a fleet it may kill.

Nothing here touches a server or a process the test did not start: Redis runs
on a free port in the test's own directory, and every `gristmill` process is
started in a session of its own and SIGKILLed with its process group at
teardown, whether the test passed or not (a SIGSTOPped one is continued first,
so it can die).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gristmill.embedded import EmbeddedRedis, free_port
from gristmill.embedded_cluster import EmbeddedCluster
from tests.conftest import RedisUnderTest, cluster_runs, make_share

LEASE_S = 3.0
HEARTBEAT_S = 0.5
MAX_RESTARTS = 20
CONCURRENCY = 4
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 25


def fleet_env(redis_url: str, job_tmp: Path) -> dict[str, str]:
    """The environment of every fleet process: no GRISTMILL_* of the test run, fast leases.

    ``TMPDIR`` points into the test's directory, so whatever a killed process cannot
    clean up (job directories of the shared sandbox mode) stays there rather than in /tmp.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    env.update(
        GRISTMILL_REDIS_URL=redis_url,
        GRISTMILL_WORKER_LEASE_S=str(LEASE_S),
        GRISTMILL_HEARTBEAT_S=str(HEARTBEAT_S),
        GRISTMILL_MAX_RESTARTS=str(MAX_RESTARTS),
        GRISTMILL_LOG_LEVEL="warning",
        GRISTMILL_LOG_FORMAT="json",
        TMPDIR=str(job_tmp),
    )
    return env


@dataclass
class Proc:
    """One `gristmill` process the fleet started: a name, its Popen, its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id (also its process group and session id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True until the process has exited."""
        return self.popen.poll() is None


class ChaosFleet:
    """Starts the scheduler and the workers of the chaos test; kills them all at teardown."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path = tmp_path
        job_tmp = tmp_path / "jobtmp"
        job_tmp.mkdir(exist_ok=True)
        self.env = fleet_env(redis_url, job_tmp)
        self.share = make_share(tmp_path)  # the runs file lives here, written by every job
        self.procs: list[Proc] = []

    def start(self, name: str, *args: str) -> Proc:
        """Start ``python -m gristmill <args>``; stdout and stderr go to ``<name>.log``."""
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "gristmill", *args],
                env=self.env, cwd=self.tmp_path, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def scheduler(self) -> Proc:
        """Start one more `gristmill scheduler` (several run at once, as in production)."""
        count = sum(1 for proc in self.procs if proc.name.startswith("scheduler-"))
        return self.start(f"scheduler-{count + 1}", "scheduler")

    def worker(self) -> Proc:
        """Start one more `gristmill worker` of group default, ``CONCURRENCY`` jobs at once."""
        count = sum(1 for proc in self.procs if proc.name.startswith("worker-"))
        return self.start(f"worker-{count + 1}", "worker", "--concurrency", str(CONCURRENCY),
                          "--job-shared-dir", str(self.share))

    def live_workers(self) -> list[Proc]:
        """The worker processes that have not exited."""
        return [p for p in self.procs if p.name.startswith("worker-") and p.alive()]

    def started_pids(self) -> set[int]:
        """Every pid this fleet ever started."""
        return {proc.pid for proc in self.procs}

    def kill_all(self) -> None:
        """SIGCONT then SIGKILL every process group still there, and reap every process."""
        for proc in self.procs:
            if proc.alive():
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
            proc.popen.wait(STOP_TIMEOUT_S)

    def report(self) -> str:
        """The tail of every process's log, for the output of a failed test."""
        parts = []
        for proc in self.procs:
            text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
            tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
            parts.append(f"--- {proc.name} (pid {proc.pid}, exit {proc.popen.returncode})\n{tail}")
        return "\n".join(parts)


@pytest.fixture(params=["single", "cluster"])
def chaos_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisUnderTest]:
    """A Redis this test started on a free port, fsyncing every write (appendfsync always);
    ``[cluster]``: a 3-primary cluster of such nodes (see tests/conftest.py)."""
    binary = os.environ.get("GRISTMILL_TEST_REDIS_SERVER")
    password = secrets.token_urlsafe(16)
    server: RedisUnderTest
    if request.param == "cluster":
        if cluster_runs() == "0":
            pytest.skip("GRISTMILL_TEST_CLUSTER=0")
        server = EmbeddedCluster(tmp_path / "cluster", primaries=3, binary=binary,
                                 password=password, appendfsync="always")
    else:
        if cluster_runs() in ("only", "every"):
            pytest.skip(f"GRISTMILL_TEST_CLUSTER={cluster_runs()}")
        server = EmbeddedRedis(tmp_path / "redis", port=free_port(), appendfsync="always",
                               binary=binary, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if isinstance(server, EmbeddedRedis):
            server.kill()


@pytest.fixture
def chaos_fleet(chaos_redis: RedisUnderTest, tmp_path: Path) -> Iterator[ChaosFleet]:
    """The fleet launcher; everything it started is killed after the test, even a failed one."""
    fleet = ChaosFleet(tmp_path, chaos_redis.url)
    try:
        yield fleet
    finally:
        fleet.kill_all()
        print(fleet.report())  # pytest shows it only when the test failed
