"""End-to-end helpers: real `gristmill` processes on the session's Redis server.

Every process is started as ``[sys.executable, "-m", "gristmill", ...]`` in its
own session (so its process group can be killed), with an environment that
holds no ``GRISTMILL_*`` variable of the test run except the ones given here,
and is killed at teardown together with every process it started (`up`'s
children live in sessions of their own, so they are found through /proc).

Tests wait on conditions, never on time: on a job (``Gristmill.wait``), on a
stream (``XREAD BLOCK`` in :func:`xwait`), on a line of output
(:class:`LineReader`, a queue fed by a thread). :func:`deadline` polls, and is
only for conditions that have no blocking primitive (a worker registering in
``gm:workers``, a process disappearing).

The key names below are spelled out on purpose rather than built with
``common.keys``: these tests check the public contract of DESIGN.md §4.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import pytest
import redis

from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from tests.conftest import make_share

T = TypeVar("T")

GROUP = "gm:{wg:default}"
HEARTBEAT_S = "0.2"
LEASE_S = "2"
CLI_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def deadline(condition: Callable[[], T], timeout_s: float, what: str,
             interval_s: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``.

    Only for conditions no blocking primitive can wait on.
    """
    end = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def xwait(client: redis.Redis, key: str, match: Callable[[dict[str, str]], bool],
          timeout_s: float, after: str = "0-0") -> dict[str, str]:
    """Block (XREAD BLOCK) until an entry of stream ``key`` matches; return its fields."""
    end = time.monotonic() + timeout_s
    while True:
        left_ms = int((end - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise AssertionError(f"no matching entry in {key} within {timeout_s:g} s")
        answer = client.xread({key: after}, count=100, block=left_ms)
        for _, entries in answer or []:
            for entry_id, raw in entries:
                after = entry_id.decode()
                fields = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
                if match(fields):
                    return fields


def clean_env(redis_url: str | None, **overrides: str) -> dict[str, str]:
    """The test run's environment without GRISTMILL_*, plus the URL, fast leases, overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    if redis_url is not None:
        env["GRISTMILL_REDIS_URL"] = redis_url
    env.update(GRISTMILL_HEARTBEAT_S=HEARTBEAT_S, GRISTMILL_WORKER_LEASE_S=LEASE_S,
               GRISTMILL_LOG_FORMAT="json")
    env.update(overrides)
    return env


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    out: list[int] = []
    for child in children(pid):
        out.append(child)
        out.extend(descendants(child))
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class LineReader:
    """Reads a process's stdout in a thread, so tests block on a queue with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True, name="line-reader")
        self.thread.start()

    def _read(self) -> None:
        for raw in iter(self.stream.readline, b""):
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> str | None:
        """The next line (None at EOF); AssertionError if none comes within ``timeout_s``."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(
                f"no output line within {timeout_s:g} s; so far: {self.seen}") from None
        if line is not None:
            self.seen.append(line)
        return line

    def expect(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """Skip lines until one matches ``pattern``; fail at EOF or after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while True:
            line = self.next_line(max(0.0, end - time.monotonic()))
            if line is None:
                raise AssertionError(f"EOF before a line matching {pattern!r}: {self.seen}")
            match = re.search(pattern, line)
            if match:
                return match

    def close(self) -> None:
        self.thread.join(STOP_TIMEOUT_S)
        self.stream.close()


class Processes:
    """Starts `gristmill` processes for one test and kills them all at teardown."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.share = make_share(tmp_path)  # jobs of every worker started here may write there
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.readers: list[LineReader] = []
        self.adopted: list[tuple[int, str]] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None, read_stdout: bool = False,
              ) -> tuple[subprocess.Popen[bytes], LineReader | None]:
        """Start ``gristmill <args>``; its output goes to ``<name>.log`` (stdout: a reader)."""
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gristmill", *args],
                env=env if env is not None else clean_env(self.redis_url),
                cwd=cwd or self.tmp_path, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if read_stdout else log, stderr=log,
                start_new_session=True,
            )
        self.started.append((name, process, log_path))
        reader = None
        if read_stdout:
            assert process.stdout is not None
            reader = LineReader(process.stdout)
            self.readers.append(reader)
        return process, reader

    def worker(self, *args: str, name: str = "worker", **env: str) -> subprocess.Popen[bytes]:
        """A `gristmill worker` of group default (unless ``args`` say otherwise)."""
        process, _ = self.start(name, "worker", "--job-shared-dir", str(self.share), *args,
                                env=clean_env(self.redis_url, **env))
        return process

    def scheduler(self, **env: str) -> subprocess.Popen[bytes]:
        """A `gristmill scheduler`."""
        process, _ = self.start("scheduler", "scheduler", env=clean_env(self.redis_url, **env))
        return process

    def cli(self, *args: str, timeout_s: float = CLI_TIMEOUT_S, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run one `gristmill` command to its end (killed after ``timeout_s``)."""
        return subprocess.run(
            [sys.executable, "-m", "gristmill", *args],
            env=env if env is not None else clean_env(self.redis_url),
            cwd=cwd or self.tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout_s, start_new_session=True, check=False,
        )

    def adopt(self, pid: int, marker: str) -> None:
        """Kill ``pid`` at teardown too, if its command line still contains ``marker``."""
        self.adopted.append((pid, marker))

    def stop_all(self) -> None:
        """SIGKILL every started process, its whole group and all its descendants."""
        for _, process, _ in reversed(self.started):
            # Once reaped, a process's children are re-parented: only the living are searched.
            below = descendants(process.pid) if process.poll() is None else []
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            for pid in below:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
        for pid, marker in self.adopted:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for reader in self.readers:
            reader.close()

    def report(self) -> str:
        """The tail of every process's log, for a failing test's output."""
        parts = []
        for name, process, log_path in self.started:
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            tail = "\n".join(text.splitlines()[-30:])
            parts.append(f"--- {name} (pid {process.pid}, exit {process.returncode})\n{tail}")
        return "\n".join(parts)


@pytest.fixture
def procs(redis_client: redis.Redis, redis_server: EmbeddedRedis,
          tmp_path: Path) -> Iterator[Processes]:
    """Process launcher on a flushed database; everything it started is killed after."""
    processes = Processes(tmp_path, redis_server.url)
    yield processes
    processes.stop_all()
    print(processes.report())  # shown by pytest only when the test failed


@pytest.fixture
def gm(redis_client: redis.Redis, redis_server: EmbeddedRedis) -> Iterator[Gristmill]:
    """A producer client on the test server (the database is flushed for the test)."""
    client = Gristmill(redis_server.url)
    yield client
    client.redis.close()


def worker_id_of(client: redis.Redis, pid: int, timeout_s: float = 30.0) -> str:
    """The id under which the worker process ``pid`` registered in ``gm:workers``."""

    def registered() -> str | None:
        for raw in client.zrange("gm:workers", 0, -1):
            worker_id = raw.decode()
            if client.hget(f"gm:worker:{worker_id}", "pid") == str(pid).encode():
                return worker_id
        return None

    return deadline(registered, timeout_s, f"worker pid {pid} to register in gm:workers")


def scheduler_registered(client: redis.Redis, timeout_s: float = 10.0) -> None:
    """Wait until a scheduler holds a lease in ``gm:schedulers``."""
    deadline(lambda: client.zcard("gm:schedulers") > 0, timeout_s, "a scheduler to register")


@dataclass(frozen=True)
class RunningFleet:
    """What ``fleet_up`` started: the launcher, and the worker with its registered id."""

    procs: Processes
    worker: subprocess.Popen[bytes]
    worker_id: str


@pytest.fixture
def fleet_up(procs: Processes, redis_client: redis.Redis) -> RunningFleet:
    """One scheduler and one worker of group default, both registered."""
    procs.scheduler()
    worker = procs.worker()
    worker_id = worker_id_of(redis_client, worker.pid)
    scheduler_registered(redis_client)
    return RunningFleet(procs, worker, worker_id)
