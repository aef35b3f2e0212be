"""A throw-away Gristmill fleet for the benchmark: its own Redis, one scheduler, W workers.

Everything runs on loopback in a temporary directory and is torn down on exit
(also on Ctrl-C or an exception): the Redis server is one this module started
on a free port (never 6379, never a server it did not start), and every
process is started in its own session so its whole process group can be
signalled. Use it as a context manager::

    with BenchFleet(workers=2, concurrency=4) as fleet:
        fleet.wait_ready(deadline)
        ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, TracebackType

import redis

from common.connection import connect
from common.keys import Keys
from common.settings import EMBEDDED_REDIS_PORT
from gristmill.embedded import EmbeddedRedis, free_port

GROUP = "default"
NAMESPACE = "gm"
STOP_GRACE_S = 10.0
READY_POLL_S = 0.02
FORBIDDEN_PORTS = frozenset({6379, EMBEDDED_REDIS_PORT})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class FleetError(RuntimeError):
    """The fleet could not be started (a process died, Redis did not come up, ...)."""


class Deadline:
    """An absolute monotonic deadline shared by every wait of one benchmark run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        """Raise TimeoutError naming ``what`` when the deadline has passed."""
        if self.remaining() <= 0:
            raise TimeoutError(f"benchmark timeout ({self.seconds:g} s) while {what}")


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C (KeyboardInterrupt), through every clean-up on the way:
    a bench stopped that way (``bench.scorecard`` past its time, an operator's kill) stops
    the processes and the Redis it started. Later SIGTERMs wait for that clean-up."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def clean_environment() -> dict[str, str]:
    """os.environ without GRISTMILL_* settings, except the server binary choice.

    A developer's GRISTMILL_NAMESPACE or GRISTMILL_DEFAULT_ROUTE would
    otherwise route the benchmark's jobs away from its workers.
    """
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith("GRISTMILL_") or k == "GRISTMILL_REDIS_SERVER"
    }


def _bench_port() -> int:
    """A free loopback port that is neither Redis's nor `gristmill up`'s default."""
    while True:
        port = free_port()
        if port not in FORBIDDEN_PORTS:
            return port


DEDICATED_SCRIPT = "u/bench/job"  # deployed by the bench in --mode dedicated


class BenchFleet:
    """Redis + 1 scheduler + ``workers`` workers of ``concurrency`` slots, as subprocesses."""

    def __init__(self, *, workers: int, concurrency: int, worker_grace_s: float = 5.0,
                 mode: str = "warm") -> None:
        self.workers = workers
        self.concurrency = concurrency
        self.worker_grace_s = worker_grace_s
        self.mode = mode
        self.keys = Keys(NAMESPACE)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.server: EmbeddedRedis | None = None
        self.server_version = ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._client: redis.Redis | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        assert self._tmp is not None, "fleet not started"
        return Path(self._tmp.name)

    @property
    def url(self) -> str:
        assert self.server is not None, "fleet not started"
        return self.server.url

    @property
    def client(self) -> redis.Redis:
        """The benchmark's own connection (not shared with any fleet process)."""
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    def __enter__(self) -> BenchFleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A second Ctrl-C must not cut the clean-up short (it is bounded by STOP_GRACE_S).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop()
        finally:
            signal.signal(signal.SIGINT, previous)

    def start(self) -> None:
        """Start Redis, then the scheduler and the workers (does not wait for them)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="gristmill-bench-")
        binary = os.environ.get("GRISTMILL_REDIS_SERVER") or None
        self.server = EmbeddedRedis(self.tmp_dir / "redis", port=_bench_port(), binary=binary)
        self.server_version = self.server.start()
        if self.server.adopted:  # the port was taken between free_port() and start()
            raise FleetError(f"port {self.server.port} was taken by another server")
        env = {**clean_environment(), "GRISTMILL_REDIS_URL": self.url,
               "GRISTMILL_LOG_LEVEL": "warning"}
        exe = [sys.executable, "-m", "gristmill"]
        self._spawn("scheduler", [*exe, "scheduler"], env)
        # Dedicated: the workers keep the bench's script imported (jobs run it by path).
        execution = ["--job-exec", "warm", "--dedicated", DEDICATED_SCRIPT] \
            if self.mode == "dedicated" else ["--job-exec", self.mode]
        for i in range(self.workers):
            self._spawn(f"worker-{i + 1}", [*exe, "worker", "--group", GROUP,
                                            "--concurrency", str(self.concurrency),
                                            "--grace", str(self.worker_grace_s), *execution], env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log_path = self.tmp_dir / f"{name}.log"
        with log_path.open("wb") as log_file:
            self.processes[name] = subprocess.Popen(
                argv, env=env, cwd=self.tmp_dir, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_ready(self, deadline: Deadline) -> float:
        """Wait until every worker and the scheduler have registered; return seconds waited.

        Polls the ``gm:workers`` and ``gm:schedulers`` zsets (a start-up
        condition, not a measurement) and fails fast if a process exits.
        """
        started = time.monotonic()
        while True:
            self.check_alive()
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.keys.workers)
            pipe.zcard(self.keys.schedulers)
            pipe.smembers(self.keys.groups)
            workers, schedulers, groups = pipe.execute()
            if workers >= self.workers and schedulers >= 1 and GROUP.encode() in groups:
                return time.monotonic() - started
            deadline.check(f"waiting for {self.workers} workers to register ({workers} so far)")
            time.sleep(READY_POLL_S)

    def cpu_times(self) -> dict[str, tuple[float, float]]:
        """CPU seconds per process: (its own user+system, that of all its descendants).

        Read from /proc. A worker's descendants are the jobs it ran: every live
        one (a warm worker's fork server and the forks it keeps between a job's
        session and its sandboxed process; a dedicated worker's long-lived job
        processes, which are the fork server's great-grandchildren) counts its
        own CPU and its reaped children's, and the worker's own reaped children
        count too. So the second figure is the jobs' CPU, dedicated or not.
        """
        pids = {name: proc.pid for name, proc in self.processes.items()}
        if self.server is not None and self.server.process is not None:
            pids["redis"] = self.server.process.pid
        parents = _parents()
        out = {}
        for name, pid in pids.items():
            times = _stat_times(pid)
            if times is None:
                continue
            own, children = times
            for descendant in descendants(pid, parents):
                descendant_times = _stat_times(descendant)
                if descendant_times is not None:
                    children += sum(descendant_times)
            out[name] = (own, children)
        return out

    def check_alive(self) -> None:
        """Raise FleetError with the end of its log when a fleet process has exited."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise FleetError(f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.tmp_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(True)[-lines:])

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after the grace; stop Redis."""
        for proc in self.processes.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.processes.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        if self._client is not None:
            with contextlib.suppress(redis.exceptions.RedisError):
                self._client.close()
            self._client = None
        if self.server is not None:
            if not self.server.adopted:
                self.server.stop()
            self.server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group led by ``proc`` (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stat_times(pid: int) -> tuple[float, float] | None:
    """(own user+system, reaped children's user+system) CPU seconds of ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(x) / CLOCK_TICKS for x in fields[11:15])
    return utime + stime, cutime + cstime


def _parents() -> dict[int, int]:
    """Every live process's parent pid, from one pass over /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue  # it ended while we looked
        parents[int(entry)] = int(ppid)
    return parents


def descendants(pid: int, parents: dict[int, int]) -> list[int]:
    """Pids of ``pid``'s live descendants at any depth, given each process's parent."""
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        if child in found or child == pid:
            continue  # a pid reused while /proc was read could make a loop
        found.append(child)
        todo.extend(children.get(child, ()))
    return found
