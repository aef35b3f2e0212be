"""Run one prepared job command: stream its output lines, enforce its timeout, kill its group.

One ``ProcessRun`` per job, called from a worker thread. The child is the
sandbox launcher (``worker/sandbox/launch.py``) in a session of its own (so
its whole process group can be signalled): forked by the worker's fork server
(warm, ``worker/sandbox/forkserver.py``) or started for this job alone (cold).
It gets the job's request on a pipe which stays open for as long as the job
may run: when this process dies, the launcher sees end-of-file and the job
dies with it. The job
gets exactly the environment it is given, /dev/null as stdin, and separate
stdout/stderr pipes that one reader thread splits into lines. Lines go to the ``sink`` in batches
from a single flusher thread, every ``flush_interval_s`` or ``max_batch`` lines,
so a job that prints for a minute shows its lines during that minute.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

from worker.executors.command import Prepared, ProcessResult
from worker.sandbox.policy import Limits, Sandbox
from worker.sandbox.warm import FORK_SERVER_DIED, RESULT_FD, ForkServer, ForkServerError, WarmJob

TAIL_LINES = 100
MAX_BUFFERED_LINES = 20_000  # past this the reader waits for the sink: memory stays bounded
TRUNCATED = " …[truncated]"
_READ_SIZE = 65536
_ABANDON_READS = 16  # a process outside the group may keep writing: stop after 1 MiB

class LogLine(NamedTuple):
    """One output line: wall-clock milliseconds, "stdout" or "stderr", text without newline."""

    ts_ms: int
    stream: str
    line: str


LogSink = Callable[[list[LogLine]], None]


class ProcessRun:
    """Run one prepared command to completion; ``cancel`` may be called from any thread."""

    def __init__(
        self, prepared: Prepared, *, sandbox: Sandbox, env: dict[str, str], timeout_s: float,
        sink: LogSink, limits: Limits | None = None, flush_interval_s: float = 0.05,
        max_batch: int = 200, max_line_bytes: int = 65536, kill_grace_s: float = 2.0,
        channel: int | None = None,
    ) -> None:
        """``channel``: a descriptor given to the child as its result descriptor instead of a
        new pipe, read by the caller, not here (a dedicated process's socket)."""
        self.prepared, self.sandbox, self.env, self.timeout_s = prepared, sandbox, env, timeout_s
        self.channel = channel
        self.limits = limits or sandbox.limits
        self.kill_grace_s = kill_grace_s
        self._sink, self._flush_interval_s, self._max_batch = sink, flush_interval_s, max_batch
        self._max_line_bytes = max_line_bytes
        self._cancel = threading.Event()
        self._wake = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop: SIGTERM to the process group, SIGKILL after the grace period."""
        self._cancel.set()
        self._wake.set()

    def run(self) -> ProcessResult:
        """Spawn, stream, wait; return how it ended. Blocks until the whole group is gone."""
        batcher = _Batcher(self._sink, self._flush_interval_s, self._max_batch)
        if self._cancel.is_set():
            batcher.close()
            return self._result(batcher, None, None, canceled=True, timed_out=False)
        argv, read_fd, write_fd = list(self.prepared.argv), None, None
        if self.channel is not None:
            write_fd = fcntl.fcntl(self.channel, fcntl.F_DUPFD_CLOEXEC, 3)
        elif self.prepared.result_fd:
            read_fd, write_fd = _result_pipe()
        # The job gets the pipe under this number (cold: the same; warm: the fork server puts
        # it on RESULT_FD): it is told which.
        job_fd = None if write_fd is None else (RESULT_FD if self.sandbox.server else write_fd)
        if job_fd is not None:
            argv = [*argv, str(job_fd)]
        request = self.sandbox.request(argv, {**self.prepared.env, **self.env},
                                       self.prepared.files, job_fd, self.limits,
                                       inprocess=self.prepared.inprocess)
        started = time.monotonic()
        try:
            child = _WarmChild.spawn(self.sandbox.server, write_fd) if self.sandbox.server \
                else _ColdChild.spawn(self.sandbox.command(), write_fd)
        except (OSError, ForkServerError) as exc:
            if read_fd is not None:
                os.close(read_fd)
            batcher.tails["stderr"].append(f"cannot start the job's sandbox: {exc}")
            batcher.close()
            return self._result(batcher, 127, None, canceled=False, timed_out=False)
        finally:
            if write_fd is not None:
                os.close(write_fd)  # the job holds the only write end now: EOF when it exits
        # The request pipe stays open until the end: its EOF tells the launcher we are gone.
        child.send_request(request)
        reader = _Reader(child.streams, read_fd, batcher, self._max_line_bytes)
        reader.start()
        try:
            timed_out, canceled = self._supervise(child)
        finally:
            returncode = child.reap()
        duration_ms = int((time.monotonic() - started) * 1000)
        # Processes that left the group may still hold the pipes: stop waiting for them.
        reader.finish(self.kill_grace_s)
        batcher.close()
        child.close()
        payload = bytes(reader.payload) if reader.payload else None
        if returncode is None:  # the fork server died: the job's processes died with it
            batcher.tails["stderr"].append(FORK_SERVER_DIED)
            return self._result(batcher, None, None, canceled=canceled, timed_out=timed_out,
                                duration_ms=duration_ms, sandbox_error=FORK_SERVER_DIED)
        exit_code, sig = (None, -returncode) if returncode < 0 else (returncode, None)
        return self._result(batcher, exit_code, sig, canceled=canceled, timed_out=timed_out,
                            payload=payload, duration_ms=duration_ms)

    def _supervise(self, child: _Child) -> tuple[bool, bool]:
        """Wait for the main child to exit, terminating it on timeout or cancel."""
        exited = threading.Event()
        threading.Thread(target=self._await_exit, args=(child, exited), daemon=True,
                         name="gristmill-wait").start()
        deadline = time.monotonic() + self.timeout_s
        reason: str | None = None
        kill_at: float | None = None
        while not exited.is_set():
            now = time.monotonic()
            if reason is None and (self._cancel.is_set() or now >= deadline):
                reason = "cancel" if self._cancel.is_set() else "timeout"
                child.signal_group(signal.SIGTERM)
                kill_at = now + self.kill_grace_s
            elif kill_at is not None and now >= kill_at:
                child.signal_group(signal.SIGKILL)
                kill_at = None
            wait_until = deadline if reason is None else kill_at
            self._wake.wait(None if wait_until is None else max(0.0, wait_until - now))
            self._wake.clear()  # every flag is re-checked at the top, so no wake-up is lost
        return reason == "timeout", reason == "cancel"

    def _await_exit(self, child: _Child, exited: threading.Event) -> None:
        child.wait_exit()
        exited.set()
        self._wake.set()

    def _result(self, batcher: _Batcher, exit_code: int | None, sig: int | None, *,
                canceled: bool, timed_out: bool, payload: bytes | None = None,
                duration_ms: int = 0, sandbox_error: str | None = None) -> ProcessResult:
        tails = batcher.tails
        return ProcessResult(
            exit_code=exit_code, signal=sig, timed_out=timed_out, canceled=canceled,
            payload=payload, stderr_tail=list(tails["stderr"]), stdout_tail=list(tails["stdout"]),
            duration_ms=duration_ms, timeout_s=self.timeout_s,
            memory_limit_mb=self.limits.memory_mb, sink_error=batcher.error,
            sandbox_error=sandbox_error,
        )


class _Batcher:
    """Collects lines from the reader and hands them to the sink from one flusher thread."""

    def __init__(self, sink: LogSink, interval_s: float, max_batch: int) -> None:
        self._sink, self._interval_s, self._max_batch = sink, interval_s, max(1, max_batch)
        self._lines: deque[LogLine] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self.tails = {s: deque[str](maxlen=TAIL_LINES) for s in ("stdout", "stderr")}
        self._thread = threading.Thread(target=self._flush_loop, daemon=True, name="gristmill-logs")
        self._thread.start()

    def put(self, line: LogLine) -> None:
        self.tails[line.stream].append(line.line)
        with self._cond:
            self._cond.wait_for(lambda: len(self._lines) < MAX_BUFFERED_LINES or self.error)
            if self.error is None:  # after a sink failure lines are dropped, pipes still drained
                self._lines.append(line)
                if len(self._lines) in (1, self._max_batch):
                    self._cond.notify_all()

    def close(self) -> None:
        """Flush what is left and stop the flusher."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._lines or self._closed)
                if not self._lines:
                    return
                self._cond.wait_for(
                    lambda: len(self._lines) >= self._max_batch or self._closed,
                    timeout=self._interval_s,
                )
                count = min(len(self._lines), self._max_batch)
                batch = [self._lines.popleft() for _ in range(count)]
                self._cond.notify_all()  # room for a reader waiting on a full buffer
            try:
                self._sink(batch)
            except BaseException as exc:  # stored for the caller; the job itself goes on
                with self._cond:
                    self.error = exc
                    self._lines.clear()
                    self._cond.notify_all()
                return


class _Reader(threading.Thread):
    """Reads stdout, stderr and the result pipe with one selector until EOF on all of them."""

    def __init__(self, streams: dict[int, str], result_fd: int | None, batcher: _Batcher,
                 max_line_bytes: int) -> None:
        super().__init__(daemon=True, name="gristmill-reader")
        self._splitters = {fd: _LineSplitter(name, max_line_bytes, batcher.put)
                           for fd, name in streams.items()}
        self._result_fd = result_fd
        self.payload = bytearray()
        self._stop_r, self._stop_w = os.pipe()
        self._abandon = False

    def finish(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for EOF, then take what is buffered and stop."""
        self.join(grace_s)
        if self.is_alive():
            self._abandon = True
            os.write(self._stop_w, b"x")
            self.join()
        os.close(self._stop_r)
        os.close(self._stop_w)
        if self._result_fd is not None:
            os.close(self._result_fd)

    def run(self) -> None:
        fds = [*self._splitters, *([self._result_fd] if self._result_fd is not None else [])]
        with selectors.DefaultSelector() as sel:
            for fd in [*fds, self._stop_r]:
                sel.register(fd, selectors.EVENT_READ)
            open_fds = set(fds)
            while open_fds and not self._abandon:
                for key, _ in sel.select():
                    if key.fd != self._stop_r and not self._read(key.fd):
                        sel.unregister(key.fd)
                        open_fds.discard(key.fd)
            for fd in open_fds:  # abandoned: take what is already in the pipes, boundedly
                os.set_blocking(fd, False)
                for _ in range(_ABANDON_READS):
                    if not self._read_nonblocking(fd):
                        break
        for splitter in self._splitters.values():
            splitter.close()

    def _read(self, fd: int) -> bool:
        data = os.read(fd, _READ_SIZE)
        if fd == self._result_fd:
            self.payload += data
        elif data:
            self._splitters[fd].feed(data)
        return bool(data)

    def _read_nonblocking(self, fd: int) -> bool:
        try:
            return self._read(fd)
        except BlockingIOError:
            return False


class _LineSplitter:
    """Splits a byte stream into lines, cutting overlong ones at ``max_bytes``."""

    def __init__(self, stream: str, max_bytes: int, emit: Callable[[LogLine], None]) -> None:
        self._stream, self._max, self._emit = stream, max_bytes, emit
        self._buf = bytearray()
        self._skipping = False  # inside an overlong line already emitted truncated

    def feed(self, data: bytes) -> None:
        self._buf += data
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._skipping:
                self._skipping = False
            else:
                self._send(line)
        if len(self._buf) > self._max and not self._skipping:
            self._send(bytes(self._buf))
            self._skipping = True
        if self._skipping:
            self._buf.clear()

    def close(self) -> None:
        if self._buf and not self._skipping:
            self._send(bytes(self._buf))
        self._buf.clear()

    def _send(self, raw: bytes) -> None:
        if len(raw) > self._max:
            text = raw[: self._max].decode("utf-8", errors="replace") + TRUNCATED
        else:
            text = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
        self._emit(LogLine(time.time_ns() // 1_000_000, self._stream, text))


def _result_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    # Numbered 3 or above, so it cannot clash with the child's 0-2 even if the
    # worker runs with one of its standard streams closed.
    moved = fcntl.fcntl(write_fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(write_fd)
    return read_fd, moved


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pgid, sig)


class _Child(Protocol):
    """The job's launcher process, however it was started."""

    streams: dict[int, str]  # read ends of the job's stdout and stderr -> stream name

    def send_request(self, request: bytes) -> None: ...
    def signal_group(self, sig: signal.Signals) -> None: ...
    def wait_exit(self) -> None: ...
    def reap(self) -> int | None: ...
    def close(self) -> None: ...


class _ColdChild:
    """A launcher interpreter started for this job alone (``python -I -S launch.py``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc, self.stdin, self.stdout, self.stderr = proc, proc.stdin, proc.stdout, proc.stderr
        self.streams = {self.stdout.fileno(): "stdout", self.stderr.fileno(): "stderr"}

    @classmethod
    def spawn(cls, command: list[str], write_fd: int | None) -> _ColdChild:
        # Its own session, so that its whole process group can be signalled.
        return cls(subprocess.Popen(
            command, cwd="/", env={}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=() if write_fd is None else (write_fd,),
        ))

    def send_request(self, request: bytes) -> None:
        with contextlib.suppress(BrokenPipeError):  # the launcher died: its exit status says so
            self.stdin.write(request)
            self.stdin.flush()

    def signal_group(self, sig: signal.Signals) -> None:
        _killpg(self.proc.pid, sig)

    def wait_exit(self) -> None:
        # WNOWAIT leaves the child a zombie, so its pid (the group id) cannot be
        # reused before reap() has killed the rest of the group.
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)

    def reap(self) -> int | None:
        _killpg(self.proc.pid, signal.SIGKILL)  # whatever the job left behind in its group
        return self.proc.wait()

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()


class _WarmChild:
    """A launcher forked by the worker's fork server, which signals and reaps it for us."""

    def __init__(self, job: WarmJob, request_w: int, stdout_r: int, stderr_r: int) -> None:
        self.job, self.request_w = job, request_w
        self.streams = {stdout_r: "stdout", stderr_r: "stderr"}

    @classmethod
    def spawn(cls, server: ForkServer, write_fd: int | None) -> _WarmChild:
        request_r, request_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        theirs = [request_r, stdout_w, stderr_w, *([] if write_fd is None else [write_fd])]
        try:
            job = server.spawn(theirs)
        except BaseException:
            for fd in (request_w, stdout_r, stderr_r):
                os.close(fd)
            raise
        finally:
            for fd in theirs[:3]:  # the launcher has its own copies now
                os.close(fd)
        return cls(job, request_w, stdout_r, stderr_r)

    def send_request(self, request: bytes) -> None:
        view = memoryview(request)
        with contextlib.suppress(BrokenPipeError):  # the launcher died: its exit status says so
            while view:
                view = view[os.write(self.request_w, view):]

    def signal_group(self, sig: signal.Signals) -> None:
        self.job.signal(sig)

    def wait_exit(self) -> None:
        self.job.wait()

    def reap(self) -> int | None:
        self.job.signal(signal.SIGKILL)  # a no-op once it has ended: the server killed the group
        self.job.wait()
        # The launcher is done, or its server died: then EOF here makes it kill the job.
        os.close(self.request_w)
        self.request_w = -1
        return self.job.returncode()

    def close(self) -> None:
        for fd in self.streams:
            os.close(fd)
        if self.request_w >= 0:
            os.close(self.request_w)
