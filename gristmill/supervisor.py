"""What `gristmill up` needs to supervise its fleet: children, and one clean output.

* :class:`Child` restarts a process that exits, with a backoff that starts
  over once the process has run for :data:`HEALTHY_S`; every child gets
  SIGTERM from the kernel when `up` dies (:func:`common.hardening.die_with_parent`),
  so a killed `up` leaves no orphans.
* :class:`Output` is the only writer of `up`'s output. Children's stdout and
  stderr come through pipes and are written line by line, each with one
  ``write``; in JSON mode a line that is not a JSON object (a traceback, a
  library's own log line) is wrapped into one. So two lines never run into
  each other, whatever the output is sent to.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common.hardening import die_with_parent

RESTART_BACKOFF_S = (0.5, 1, 2, 5, 10)
HEALTHY_S = 60.0  # a child up this long has its restart backoff reset
MAX_LINE_BYTES = 1024 * 1024  # a longer line without a newline is written in pieces
READ_BYTES = 65536


def json_mode(fmt: str) -> bool:
    """The same choice as :func:`common.log.configure`: JSON unless a TTY (or told)."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


class Output:
    """`up`'s stdout (its announcements) and stderr (its warnings, its children's lines)."""

    def __init__(self, *, as_json: bool, stdout_fd: int = 1, stderr_fd: int = 2) -> None:
        self.as_json = as_json
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd

    def say(self, message: str, *, level: str = "info", to_stderr: bool = False,
            **fields: Any) -> None:
        """One event of `up` itself: a JSON object, or ``gristmill: message`` on a terminal."""
        fd = self.stderr_fd if to_stderr else self.stdout_fd
        if self.as_json:
            self._write(fd, self._object(message, level, "up", fields))
        else:
            extra = "".join(f" {k}={v}" for k, v in fields.items())
            self._write(fd, f"gristmill: {message}{extra}".encode())

    def child_line(self, process: str, line: bytes) -> None:
        """One line a child wrote (without its newline)."""
        text = line.decode(errors="replace").rstrip("\r")
        if not text.strip():
            return
        if self.as_json and not _is_json_object(text):
            self._write(self.stderr_fd, self._object(text, "info", process, {"raw": True}))
        else:
            self._write(self.stderr_fd, text.encode())

    @staticmethod
    def _object(event: str, level: str, process: str, fields: dict[str, Any]) -> bytes:
        body = {"event": event, "level": level, "process": process,
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"), **fields}
        return json.dumps(body, default=str).encode()

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data + b"\n")
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _is_json_object(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class Child:
    """A supervised child process, restarted with backoff when it exits unexpectedly."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.next_start = 0.0
        self.started_at = 0.0
        self.partial = b""

    def start(self, now: float | None = None) -> None:
        # Own session: a Ctrl-C at the terminal reaches `up` only, which then stops
        # each child once, gracefully. Its output comes to `up` through a pipe.
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(),
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.started_at = time.monotonic() if now is None else now

    def check(self, now: float, out: Output) -> bool:
        """Restart the process if it exited and its backoff has passed; True if it was (re)started."""
        if self.process is not None and self.process.poll() is None:
            if self.restarts and now - self.started_at >= HEALTHY_S:
                self.restarts = 0  # healthy again: the next crash restarts at once
            return False
        if self.process is not None:
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            out.say("process exited; restarting", level="warning", to_stderr=True,
                    child=self.name, code=self.process.returncode, in_s=delay)
            self.drain(out, final=True)
            self.process, self.next_start = None, now + delay
            self.restarts += 1
        if now >= self.next_start:
            self.start(now)
            return True
        return False

    def drain(self, out: Output, *, final: bool = False) -> None:
        """Write the complete lines the child has produced so far (all of it when ``final``)."""
        if self.process is None or self.process.stdout is None or self.process.stdout.closed:
            return
        fd = self.process.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, READ_BYTES)
            except BlockingIOError:
                break
            if not chunk:
                final = True
                break
            self.partial += chunk
            *lines, self.partial = self.partial.split(b"\n")
            for line in lines:
                out.child_line(self.name, line)
            while len(self.partial) > MAX_LINE_BYTES:
                out.child_line(self.name, self.partial[:MAX_LINE_BYTES])
                self.partial = self.partial[MAX_LINE_BYTES:]
        if final:
            if self.partial:
                out.child_line(self.name, self.partial)
                self.partial = b""
            if self.process.poll() is not None:
                self.process.stdout.close()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def pump(children: list[Child], out: Output, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for output from any child, and write what came."""
    with selectors.DefaultSelector() as selector:
        for child in children:
            stdout = child.process.stdout if child.process is not None else None
            if stdout is not None and not stdout.closed:
                selector.register(stdout, selectors.EVENT_READ, child)
        if not selector.get_map():
            time.sleep(timeout_s)
            return
        for key, _ in selector.select(timeout_s):
            ready: Child = key.data
            ready.drain(out)


def stop_all(children: list[Child], out: Output, grace_s: float) -> None:
    """SIGTERM each child, relay their last words, SIGKILL what is left after ``grace_s``."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace_s
    while any(child.running() for child in children) and time.monotonic() < deadline:
        pump(children, out, 0.1)
    for child in children:
        if child.running() and child.process is not None:
            child.process.kill()
            child.process.wait()
        if child.process is not None:
            child.process.wait()
        child.drain(out, final=True)
