"""Dedicated workers: a script kept imported in a long-lived sandboxed process, ``main`` per job.

``gristmill worker --dedicated u/alice/fast`` hands every job of that script
(by path; any version) to a :class:`DedicatedProcess`: the program
``worker/executors/dedicated.py`` started through the very sandbox a job gets
(``ProcessRun``: its own uid, namespaces, private root, limits; no Redis
credentials, no secret of the worker), with the version's code as its
``main.py``. It imports the script once and then runs each job it is sent on
a socket, so module state persists between the jobs of that script, and of
that script only. Jobs of other scripts run the ordinary way.

* **Processes.** A sync ``main`` runs one job at a time in a process, so a
  version gets a process per job running at once, up to
  ``--dedicated-processes`` (default: the worker's ``--concurrency``), each
  its own interpreter and module state, started when a job finds every
  process busy, and stopped (all but the first) after ``IDLE_S`` unused. An
  ``async def main`` gets one process whose event loop runs every job it is
  sent. Where the next job goes: ``worker/dedicated_plan.py``.
* **Versions.** A process runs one version (hash). A job of a newer version
  starts a process for it; the older ones are *draining*: they take no new
  job and are stopped when their last job ends.
* **Threads.** With ``--dedicated-threads N`` a process runs up to N jobs of
  a sync ``main`` at once on as many threads.
* **Timeouts and cancels.** An ``async def main`` job is canceled inside the
  process (``CancelledError``). A sync job cannot be interrupted there: the
  process is killed (SIGTERM, then SIGKILL) and restarted for the next job,
  and any other job it held fails with ``SandboxLost``. A job over its timeout
  kills the process the same way.
* **The process dies** (its own crash, out of memory, killed): its jobs fail
  with ``SandboxLost`` naming the exit and the last stderr lines; the next
  job starts a new one.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import log
from worker.dedicated_plan import START, is_async_main, place, surplus
from worker.executors.command import Prepared, ProcessResult
from worker.executors.outcome import Outcome, exit_status, failure
from worker.jobprocess import LogLine, LogSink, ProcessRun, _Batcher
from worker.sandbox.policy import Limits, Sandbox

HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024
FOREVER_S = 10 * 365 * 86400.0  # the process's own timeout: it lives until stopped
START_TIMEOUT_S = 60.0
IDLE_S = 300.0  # a version's processes beyond its first are stopped after this long unused
TIDY_EVERY_S = 30.0
MAIN_FILE = "main.py"


def dedicated_prepared(code: str, threads: int = 1) -> Prepared:
    """The dedicated program with the script as its main.py (the socket's fd is appended)."""
    import sys

    argv = [sys.executable, "-u", "-P", "-m", "worker.executors.dedicated", MAIN_FILE,
            str(threads)]
    return Prepared(argv=argv, files={MAIN_FILE: code}, env={}, result_fd=True)


@dataclass
class _Pending:
    """One job in the process: its log sink, and its report once done."""

    sink: LogSink
    batcher: _Batcher | None = None  # made at its first line: a silent job costs no thread
    done: threading.Event = field(default_factory=threading.Event)
    report: dict[str, Any] | None = None
    lost: str | None = None

    def put(self, line: LogLine) -> None:
        if self.batcher is None:
            self.batcher = _Batcher(self.sink, 0.05, 200)
        self.batcher.put(line)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


class DedicatedProcess:
    """One sandboxed process running one version of one script."""

    def __init__(self, *, path: str, script_hash: str, code: str, sandbox: Sandbox,
                 limits: Limits, env: dict[str, str], on_output: LogSink,
                 threads: int = 1) -> None:
        self.path = path
        self.script_hash = script_hash
        self.draining = False
        self.load = 0  # jobs placed here and not finished (the pool's lock guards it)
        self.idle_since = time.monotonic()  # when its load last fell to 0 (the same lock)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._exited = threading.Event()
        self.is_async = False
        self.fatal: dict[str, Any] | None = None
        self.end: str | None = None  # how the process ended, once it has
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = ours
        self._send_lock = threading.Lock()  # also guards _released and closing the socket
        self._released = False
        # No reader thread: a thread waiting for news of the process reads the socket itself
        # while no other does (its turn: _reading), so a reply needs no hand-over between
        # threads; whatever it reads for others, it hands them through their events.
        self._news = threading.Condition()  # guards _reading and _eof; notified on any news
        self._reading = False
        self._eof = False
        self._buffer = b""
        self._poll = select.poll()
        self._poll.register(ours, select.POLLIN)
        self.threads = threads
        self._run = ProcessRun(dedicated_prepared(code, threads), sandbox=sandbox, env=env,
                               timeout_s=FOREVER_S, sink=on_output, limits=limits,
                               channel=theirs.fileno())
        self._theirs = theirs
        threading.Thread(target=self._live, daemon=True, name="gristmill-dedicated").start()

    # -- lifecycle --------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the script is imported; raise _Unavailable when it could not be."""
        self._await(self._ready, timeout_s)
        if self.fatal is not None:
            raise _Unavailable(Outcome(ok=False, error=self.fatal))
        if self.end is not None or not self._ready.is_set():
            raise _Unavailable(failure(
                "SandboxLost", f"the dedicated process did not start: {self.end or 'timed out'}"))

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    def stop(self) -> None:
        """Kill the process (its jobs fail with SandboxLost)."""
        self._run.cancel()

    def release(self) -> None:
        """The pool let go of it with no job placed: close the socket once the process ends.

        Not before: a thread still sending or reading on a closed descriptor could meet
        another process's socket under the same number.
        """
        with self._send_lock:
            self._released = True
            if self._exited.is_set():
                self._sock.close()

    def _live(self) -> None:
        result: ProcessResult | None = None
        try:
            result = self._run.run()
        finally:
            self._theirs.close()
            self.end = _describe_end(result)
            self._exited.set()
            self._signal(self._ready)
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._fail_all(f"the dedicated process ended ({self.end})")
            with self._send_lock:
                if self._released:
                    self._sock.close()

    # -- jobs -------------------------------------------------------------------------------

    def run(self, job_id: str, args: dict[str, Any], env: dict[str, str], timeout_s: float,
            sink: LogSink, cancel: threading.Event) -> Outcome:
        """Run one job in the process; its log lines go to ``sink``; ``cancel`` set stops it."""
        pending = _Pending(sink)
        with self._lock:
            self._pending[job_id] = pending
        try:
            self._send({"t": "run", "j": job_id, "args": args, "env": env})
        except OSError:
            pending.lost = f"the dedicated process ended ({self.end or 'socket closed'})"
            self._signal(pending.done)
        reason = self._wait(pending, job_id, timeout_s, cancel)
        pending.close()
        with self._lock:
            self._pending.pop(job_id, None)
        if reason == "timeout":
            return failure("Timeout", f"job exceeded its timeout of {timeout_s:g} s")
        if pending.report is not None:
            report = pending.report
            if report.get("ok") is True:
                return Outcome(ok=True, result=report.get("result"))
            return Outcome(ok=False, error=report.get("error"))
        if reason == "cancel":
            return failure("Canceled", "job was canceled")
        return failure("SandboxLost", pending.lost or "the dedicated process ended")

    def _wait(self, pending: _Pending, job_id: str, timeout_s: float,
              cancel: threading.Event) -> str | None:
        deadline = time.monotonic() + timeout_s
        while not self._await(pending.done, min(0.05, max(0.0, deadline - time.monotonic()))):
            if cancel.is_set() or time.monotonic() >= deadline:
                reason = "cancel" if cancel.is_set() else "timeout"
                if reason == "cancel" and self.is_async:  # else: threads cannot be stopped
                    with contextlib.suppress(OSError):
                        self._send({"t": "cancel", "j": job_id})
                    if self._await(pending.done, self._run.kill_grace_s):
                        return reason
                self.stop()  # a sync main cannot be interrupted: the process goes
                self._await(pending.done, FOREVER_S)  # the process's end fails it, at the latest
                return reason
        return None

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        with self._send_lock:
            self._sock.sendall(HEADER.pack(len(data)) + data)

    def _signal(self, event: threading.Event) -> None:
        with self._news:
            event.set()
            self._news.notify_all()

    def _await(self, event: threading.Event, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``event``, reading the socket when no one else does."""
        end = time.monotonic() + timeout_s
        while True:
            with self._news:
                while True:
                    if event.is_set():
                        return True
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        return False
                    if not self._reading and not self._eof:
                        self._reading = True
                        break
                    self._news.wait(remaining)  # the reader, or the process's end, wakes us
            try:
                self._read_until(event, end)
            finally:
                with self._news:
                    self._reading = False
                    self._news.notify_all()  # another waiter takes the turn

    def _read_until(self, event: threading.Event, end: float) -> None:
        """Read and dispatch messages until ``event`` is set, the socket ends, or ``end``."""
        while not event.is_set():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            if not self._poll.poll(min(1000, max(1, int(remaining * 1000)))):
                continue  # at most a second at a time: poll's bound, and ``end`` rechecked
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._news:
                    self._eof = True  # the process's end (_live) fails what is left
                return
            self._buffer += chunk
            while len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                if size > MAX_MESSAGE:
                    self.stop()  # a protocol violation: the script's process cannot be trusted
                    with self._news:
                        self._eof = True
                    return
                if len(self._buffer) < HEADER.size + size:
                    break
                body = self._buffer[HEADER.size:HEADER.size + size]
                self._buffer = self._buffer[HEADER.size + size:]
                try:
                    message = json.loads(body)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    self.stop()  # not our protocol: the process cannot be trusted either
                    with self._news:
                        self._eof = True
                    return
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "ready":
            self.is_async = bool(message.get("async"))
            self._signal(self._ready)
        elif kind == "fatal":
            self.fatal = {k: str(message.get("error", {}).get(k, "")) for k in
                          ("name", "message", "traceback")}
            self._signal(self._ready)
        elif kind in ("log", "done"):
            with self._lock:
                pending = self._pending.get(str(message.get("j")))
            if pending is None:
                return
            if kind == "log":
                stream = "stderr" if message.get("s") == "stderr" else "stdout"
                pending.put(LogLine(time.time_ns() // 1_000_000, stream,
                                    str(message.get("l", ""))))
            else:
                pending.report = message
                self._signal(pending.done)

    def _fail_all(self, why: str) -> None:
        with self._lock:
            pendings = list(self._pending.values())
        for pending in pendings:
            pending.lost = why
            self._signal(pending.done)


class Cancel:
    """What the runner cancels a dedicated job through (as it cancels a ProcessRun)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def cancel(self) -> None:
        self.event.set()


class _Unavailable(Exception):
    """The process could not take the job: its outcome says why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(str(outcome.error))
        self.outcome = outcome


def _describe_end(result: ProcessResult | None) -> str:
    if result is None:
        return "the worker could not run it"
    if result.sandbox_error:
        return result.sandbox_error
    tail = "; last stderr lines:\n" + "\n".join(result.stderr_tail[-20:]) \
        if result.stderr_tail else ""
    return exit_status(result) + tail


class DedicatedPool:
    """The dedicated processes of one worker: up to ``processes`` per script version in use.

    A sync ``main`` gets a process per job running at once (up to ``processes``,
    the worker's concurrency by default), each its own interpreter with its own
    module state, as in a prefork pool; with ``threads`` > 1 a process takes that
    many jobs at once. An ``async def main`` gets one process: its event loop
    takes every job. Processes start when a job finds none with room
    (``worker/dedicated_plan.py``), and stay until the worker stops, a newer
    version drains them, they die, or (all but a version's first) they go unused
    for ``idle_s``.
    """

    def __init__(self, paths: tuple[str, ...], sandbox: Sandbox, env: dict[str, str],
                 tags: tuple[str, ...] = (), threads: int = 1, processes: int = 1,
                 idle_s: float = IDLE_S) -> None:
        self.threads = threads  # a sync main's jobs at once in one process
        self.processes = max(1, processes)  # processes per script version at most
        self.paths = frozenset(paths)
        self.tags = frozenset(tags)
        self.sandbox = sandbox
        self.env = env
        self._processes: dict[str, list[DedicatedProcess]] = {}  # hash -> processes, by age
        self._lock = threading.Lock()
        self.log = log.get(process="worker")
        self.idle_s = idle_s
        self._closed = threading.Event()
        threading.Thread(target=self._tidy, daemon=True, name="gristmill-dedicated-tidy").start()

    def handles(self, script_path: str | None, tag: str) -> bool:
        """Whether a script job of this path and tag runs dedicated here."""
        return script_path is not None and (script_path in self.paths or tag in self.tags)

    def run(self, *, script_path: str, script_hash: str, code: Callable[[], tuple[str, Limits]],
            job_id: str, args: dict[str, Any], env: dict[str, str], timeout_s: float,
            sink: LogSink, cancel: threading.Event) -> Outcome:
        """Run one job of a dedicated script in a process of its version (started if need be)."""
        process = self._take(script_path, script_hash, code)
        try:
            process.wait_ready()
            return process.run(job_id, args, env, timeout_s, sink, cancel)
        except _Unavailable as exc:
            return exc.outcome
        finally:
            with self._lock:
                process.load -= 1
                if process.load == 0:
                    process.idle_since = time.monotonic()
                dropped = process.load == 0 and \
                    process not in self._processes.get(script_hash, ())
            if dropped:  # it died, or the worker closed the pool, while this job was in it
                process.release()
            self._retire()

    def _take(self, path: str, digest: str,
              code: Callable[[], tuple[str, Limits]]) -> DedicatedProcess:
        """A process of this version for one more job, its place counted in its load."""
        with self._lock:
            process = self._placed(digest)
            if process is not None:
                return process
        source, limits = code()  # outside the lock: it may read Redis
        with self._lock:
            process = self._placed(digest)  # another job may have started one meanwhile
            if process is not None:
                return process
            for other_hash, others in self._processes.items():
                if other_hash != digest:
                    for other in others:
                        if other.path == path:
                            other.draining = True  # a newer version is here: let it drain
            process = self._start(path, digest, source, limits)
            process.load += 1
            return process

    def _placed(self, digest: str) -> DedicatedProcess | None:
        """The live process of ``digest`` that takes the next job, its load counted; None
        when a new one should start. Called with the lock held."""
        live = [p for p in self._processes.get(digest, ()) if p.alive]
        if not live:
            return None
        room = None if live[0].is_async else self.threads
        index = place([p.load for p in live], room, self.processes)
        if index == START:
            return None
        live[index].load += 1
        return live[index]

    def _start(self, path: str, digest: str, source: str, limits: Limits) -> DedicatedProcess:
        plog = self.log.bind(script_path=path, script_hash=digest)

        def on_output(lines: list[LogLine]) -> None:
            for line in lines:
                plog.info("dedicated process output", stream=line.stream, line=line.line)

        process = DedicatedProcess(path=path, script_hash=digest, code=source,
                                   sandbox=self.sandbox, limits=limits, env=self.env,
                                   on_output=on_output, threads=self.threads)
        process.is_async = is_async_main(source)
        siblings = [p for p in self._processes.get(digest, ()) if p.alive]
        self._processes[digest] = [*siblings, process]
        plog.info("dedicated process started", processes=len(siblings) + 1)
        return process

    def _tidy(self) -> None:
        """Stop the surplus processes a burst started, once unused for ``idle_s``."""
        while not self._closed.wait(min(TIDY_EVERY_S, self.idle_s)):
            self._retire()

    def _retire(self) -> None:
        """Stop the processes that are dead, drained (an old version with no job left), or
        surplus (not a version's first, unused for ``idle_s``)."""
        now = time.monotonic()
        with self._lock:
            retired: list[DedicatedProcess] = []
            for digest, processes in list(self._processes.items()):
                live = [p for p in processes if p.alive]
                idle = set(surplus([p.load for p in live], [now - p.idle_since for p in live],
                                   self.idle_s))
                kept = [p for i, p in enumerate(live)
                        if i not in idle and not (p.draining and p.load == 0)]
                retired += [p for p in processes if p not in kept]
                if kept:
                    self._processes[digest] = kept
                else:
                    del self._processes[digest]
        for process in retired:
            if process.alive:
                self.log.info("dedicated process drained; stopped" if process.draining else
                              "dedicated process unused; stopped",
                              script_hash=process.script_hash)
                process.stop()
            if process.load == 0:  # else the last of its jobs releases it
                process.release()

    def close(self) -> None:
        """Stop every process (the worker is stopping)."""
        self._closed.set()
        with self._lock:
            processes = [p for group in self._processes.values() for p in group]
            self._processes.clear()
        for process in processes:
            process.stop()
            if process.load == 0:  # else the last of its jobs releases it
                process.release()
