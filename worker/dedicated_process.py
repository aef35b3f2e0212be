"""One dedicated process, worker side: the sandboxed program, its socket, its jobs.

``worker/dedicated.py`` says what dedicated workers are and keeps the pool;
this module is one process of it: started through the job sandbox
(``ProcessRun`` with a ``channel``), framed JSON both ways
(``worker/executors/dedicated.py`` is the other end), each job's reply read
by the thread that waits for it.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from worker.executors.command import Prepared, ProcessResult
from worker.executors.dedicated import frame, unframe
from worker.executors.outcome import Outcome, exit_status, failure
from worker.jobprocess import LogLine, LogSink, ProcessRun, _Batcher
from worker.sandbox.policy import Limits, Sandbox

FOREVER_S = 10 * 365 * 86400.0  # the process's own timeout: it lives until stopped
START_TIMEOUT_S = 60.0
MAIN_FILE = "main.py"


def dedicated_prepared(code: str, threads: int = 1) -> Prepared:
    """The dedicated program with the script as its main.py (the socket's fd is appended)."""
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
        """Block until the script is imported; raise Unavailable when it could not be."""
        self._await(self._ready, timeout_s)
        if self.fatal is not None:
            raise Unavailable(Outcome(ok=False, error=self.fatal))
        if self.end is not None or not self._ready.is_set():
            raise Unavailable(failure(
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
        data = frame(message)
        with self._send_lock:
            self._sock.sendall(data)

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
            bodies, self._buffer, too_large = unframe(self._buffer + chunk)
            for body in bodies:
                try:
                    message = json.loads(body)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    too_large = True  # not our protocol: the process cannot be trusted
                    break
                self._dispatch(message)
            if too_large:  # a protocol violation: the script's process cannot be trusted
                self.stop()
                with self._news:
                    self._eof = True
                return

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


class Unavailable(Exception):
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
