"""Run one prepared job command: stream its output lines, enforce its timeout, kill its group.

One ``ProcessRun`` per job, run by the job's slot thread and by no other thread:
one selector loop (``_pump``) reads its stdout, stderr and result pipes, splits
lines, sends them in batches and enforces its timeout and cancel. The child is the
sandbox launcher (``worker/sandbox/launch.py``) in a session of its own (so
its whole process group can be signalled): forked by the worker's fork server
(warm, ``worker/sandbox/forkserver.py``) or started for this job alone (cold).
It gets the job's request on a pipe which stays open for as long as the job
may run: when this process dies, the launcher sees end-of-file and the job
dies with it. The job
gets exactly the environment it is given, /dev/null as stdin, and separate
stdout/stderr pipes. Lines go to the ``sink`` in batches, ``flush_interval_s``
after the first line of a batch or at ``max_batch`` lines, so a job that prints
for a minute shows its lines during that minute; the lines left at its end go to
``last_sink`` (the runner sends them with the outcome, in the completion's call).
A sink call blocks the loop: a slow Redis delays that job's reading and timers
(not other jobs'), and a job writing faster than the sink takes waits on its
full pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
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
_EXIT_POLL_S = 0.25  # a job's loop checks this often whether it exited with its pipes held

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
        channel: int | None = None, last_sink: LogSink | None = None,
    ) -> None:
        """``channel``: a descriptor given to the child as its result descriptor instead of a
        new pipe, read by the caller, not here (a dedicated process's socket). ``last_sink``:
        receives the lines left when the job has ended (default: ``sink``)."""
        self.prepared, self.sandbox, self.env, self.timeout_s = prepared, sandbox, env, timeout_s
        self.channel = channel
        self.limits = limits or sandbox.limits
        self.kill_grace_s = kill_grace_s
        self._sink, self._flush_interval_s, self._max_batch = sink, flush_interval_s, max_batch
        self._max_line_bytes = max_line_bytes
        self._last_sink = last_sink
        self._cancel = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_w: int | None = None  # wakes the job's loop (a cancel), while it runs
        self._reaped = False  # the loop has reaped the child (never twice: its pid is free then)

    def cancel(self) -> None:
        """Ask the run to stop: SIGTERM to the process group, SIGKILL after the grace period."""
        self._cancel.set()
        with self._wake_lock:
            if self._wake_w is not None:
                with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
                    os.write(self._wake_w, b"x")

    def run(self) -> ProcessResult:
        """Spawn, stream, wait; return how it ended. Blocks until the whole group is gone."""
        out = _Output(self._sink, self._last_sink, self._flush_interval_s, self._max_batch)
        if self._cancel.is_set():
            return self._result(out, None, None, canceled=True, timed_out=False)
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
            child = _WarmChild.spawn(self.sandbox.server, write_fd,
                                     self.sandbox.uses_template()) if self.sandbox.server \
                else _ColdChild.spawn(self.sandbox.command(), write_fd)
        except (OSError, ForkServerError) as exc:
            if read_fd is not None:
                os.close(read_fd)
            out.tails["stderr"].append(f"cannot start the job's sandbox: {exc}")
            out.close()
            return self._result(out, 127, None, canceled=False, timed_out=False)
        finally:
            if write_fd is not None:
                os.close(write_fd)  # the job holds the only write end now: EOF when it exits
        # The request pipe stays open until the end: its EOF tells the launcher we are gone.
        child.send_request(request)
        streams = _Streams(child.streams, read_fd, out, self._max_line_bytes)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        with self._wake_lock:
            self._wake_w = wake_w
        self._reaped = False
        try:
            timed_out, canceled, returncode = self._pump(child, streams, wake_r, started)
        finally:
            if not self._reaped:  # the loop failed (a bug of ours): the job must not outlive it
                child.reap()
            with self._wake_lock:
                self._wake_w = None
            os.close(wake_r)
            os.close(wake_w)
            streams.close()
            child.close()
        duration_ms = int((time.monotonic() - started) * 1000)
        out.close()
        payload = bytes(streams.payload) if streams.payload else None
        if returncode is None:  # the fork server died: the job's processes died with it
            out.tails["stderr"].append(FORK_SERVER_DIED)
            return self._result(out, None, None, canceled=canceled, timed_out=timed_out,
                                duration_ms=duration_ms, sandbox_error=FORK_SERVER_DIED)
        exit_code, sig = (None, -returncode) if returncode < 0 else (returncode, None)
        return self._result(out, exit_code, sig, canceled=canceled, timed_out=timed_out,
                            payload=payload, duration_ms=duration_ms)

    def _pump(self, child: _Child, streams: _Streams, wake_r: int,
              started: float) -> tuple[bool, bool, int | None]:
        """This thread's one loop for the job: read its pipes, flush its lines, enforce its
        timeout and cancel (SIGTERM, SIGKILL after the grace), notice its exit.

        Ends once the job has exited and its pipes are at EOF, or ``kill_grace_s`` after its
        exit when a process outside its group still holds them (what is buffered is taken).
        Returns (timed out, canceled, return code as ``_Child.reap``).
        """
        deadline = started + self.timeout_s
        reason: str | None = None
        kill_at: float | None = None
        give_up_at: float | None = None
        exited, returncode = False, None
        with selectors.DefaultSelector() as sel:
            for fd in streams.fds:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if not exited and reason is None and (self._cancel.is_set() or now >= deadline):
                    reason = "cancel" if self._cancel.is_set() else "timeout"
                    child.signal_group(signal.SIGTERM)
                    kill_at = now + self.kill_grace_s
                elif not exited and kill_at is not None and now >= kill_at:
                    child.signal_group(signal.SIGKILL)
                    kill_at = None
                streams.out.flush_due(now)
                if not exited and child.wait_exit(0 if streams.open else
                                                  _wait_s(now, deadline, reason, kill_at)):
                    exited, returncode = True, child.reap()
                    self._reaped = True
                    give_up_at = time.monotonic() + self.kill_grace_s
                if exited and (not streams.open or time.monotonic() >= (give_up_at or 0)):
                    break
                if not streams.open:
                    continue  # its pipes are closed, it still runs: wait for its exit above
                timers = [t for t in (deadline if reason is None else None, kill_at, give_up_at,
                                      streams.out.flush_at) if t is not None]
                wait = min([*timers, now + _EXIT_POLL_S]) - time.monotonic()
                for key, _ in sel.select(max(0.0, wait)):
                    if key.fd == wake_r:
                        os.read(wake_r, 64)
                    elif not streams.read(key.fd):
                        sel.unregister(key.fd)
        streams.drain()  # a process outside the group may still hold them: boundedly
        return reason == "timeout", reason == "cancel", returncode

    def _result(self, out: _Output, exit_code: int | None, sig: int | None, *,
                canceled: bool, timed_out: bool, payload: bytes | None = None,
                duration_ms: int = 0, sandbox_error: str | None = None) -> ProcessResult:
        tails = out.tails
        return ProcessResult(
            exit_code=exit_code, signal=sig, timed_out=timed_out, canceled=canceled,
            payload=payload, stderr_tail=list(tails["stderr"]), stdout_tail=list(tails["stdout"]),
            duration_ms=duration_ms, timeout_s=self.timeout_s,
            memory_limit_mb=self.limits.memory_mb, sink_error=out.error,
            sandbox_error=sandbox_error,
        )


def _wait_s(now: float, deadline: float, reason: str | None, kill_at: float | None) -> float:
    """How long to wait for the exit of a job whose pipes are closed: until its next timer,
    at most _EXIT_POLL_S (a cancel is checked that often then)."""
    until = [t for t in (deadline if reason is None else None, kill_at) if t is not None]
    return max(0.0, min([*until, now + _EXIT_POLL_S]) - now)


class _Output:
    """A job's lines on their way to the sink: batched by the job's own thread, each batch
    sent ``interval_s`` after its first line or at ``max_batch`` lines; the last batch goes
    to ``last`` (the runner sends it with the outcome)."""

    def __init__(self, sink: LogSink, last: LogSink | None, interval_s: float,
                 max_batch: int) -> None:
        self._sink, self._last = sink, last or sink
        self._interval_s, self._max_batch = interval_s, max(1, max_batch)
        self._lines: list[LogLine] = []
        self.flush_at: float | None = None  # when the pending batch is due
        self.error: BaseException | None = None
        self.tails = {s: deque[str](maxlen=TAIL_LINES) for s in ("stdout", "stderr")}

    def put(self, line: LogLine) -> None:
        self.tails[line.stream].append(line.line)
        if self.error is not None:  # after a sink failure lines are dropped, pipes still drained
            return
        self._lines.append(line)
        if self.flush_at is None:
            self.flush_at = time.monotonic() + self._interval_s
        if len(self._lines) >= self._max_batch:
            self.flush_at = 0.0

    def flush_due(self, now: float) -> None:
        if self.flush_at is not None and now >= self.flush_at:
            self._send(self._sink)

    def close(self) -> None:
        """The job is over: what is left is the last batch."""
        if self._lines:
            self._send(self._last)

    def _send(self, sink: LogSink) -> None:
        for start in range(0, len(self._lines), self._max_batch):
            try:
                sink(self._lines[start:start + self._max_batch])
            except BaseException as exc:  # stored for the caller; the job itself goes on
                self.error = exc
                break
        self._lines = []
        self.flush_at = None


class _Streams:
    """A job's stdout, stderr (split into lines for ``out``) and result pipe (its payload)."""

    def __init__(self, streams: dict[int, str], result_fd: int | None, out: _Output,
                 max_line_bytes: int) -> None:
        self.out = out
        self._splitters = {fd: _LineSplitter(name, max_line_bytes, out.put)
                           for fd, name in streams.items()}
        self._result_fd = result_fd
        self.fds = [*self._splitters, *([result_fd] if result_fd is not None else [])]
        self._open = set(self.fds)
        self.payload = bytearray()

    @property
    def open(self) -> bool:
        return bool(self._open)

    def read(self, fd: int) -> bool:
        """One read; False at EOF (the fd is then closed for reading)."""
        data = os.read(fd, _READ_SIZE)
        if fd == self._result_fd:
            self.payload += data
        elif data:
            self._splitters[fd].feed(data)
        if not data:
            self._open.discard(fd)
        return bool(data)

    def drain(self) -> None:
        """Take what is already buffered in pipes still open, boundedly; end the last lines."""
        for fd in list(self._open):
            os.set_blocking(fd, False)
            for _ in range(_ABANDON_READS):
                try:
                    if not self.read(fd):
                        break
                except BlockingIOError:
                    break
        for splitter in self._splitters.values():
            splitter.close()

    def close(self) -> None:
        if self._result_fd is not None:
            os.close(self._result_fd)


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
    def wait_exit(self, timeout: float) -> bool: ...
    def reap(self) -> int | None: ...
    def close(self) -> None: ...


class _ColdChild:
    """A launcher interpreter started for this job alone (``python -I -S launch.py``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc, self.stdin, self.stdout, self.stderr = proc, proc.stdin, proc.stdout, proc.stderr
        self.streams = {self.stdout.fileno(): "stdout", self.stderr.fileno(): "stderr"}
        self._pidfd: int | None = None  # readable once the launcher has exited
        with contextlib.suppress(OSError, AttributeError):  # a kernel before 5.3: polled
            self._pidfd = os.pidfd_open(proc.pid)

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

    def wait_exit(self, timeout: float) -> bool:
        """True once the launcher has exited (waiting up to ``timeout``); it is not reaped.

        WNOWAIT leaves the child a zombie, so its pid (the group id) cannot be
        reused before reap() has killed the rest of the group."""
        end = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, self.proc.pid,
                             os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                    return True
            except ChildProcessError:
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.01))

    def reap(self) -> int | None:
        _killpg(self.proc.pid, signal.SIGKILL)  # whatever the job left behind in its group
        return self.proc.wait()

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
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
    def spawn(cls, server: ForkServer, write_fd: int | None, templated: bool) -> _WarmChild:
        request_r, request_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        theirs = [request_r, stdout_w, stderr_w, *([] if write_fd is None else [write_fd])]
        try:
            job = server.spawn(theirs, templated=templated)
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

    def wait_exit(self, timeout: float) -> bool:
        return self.job.wait(timeout)

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
