"""The dedicated process: one script imported once, ``main`` called per job, inside the sandbox.

Run in a sandboxed process of its own (a uid, namespaces, a private root and
limits, exactly as a job) by a dedicated worker (``worker/dedicated.py``)::

    python -u -P -m worker.executors.dedicated <path/to/main.py> <THREADS> <FD>

FD is a stream socket to the worker. Both ways, each message is a 4-byte
big-endian length and a JSON object:

* worker -> here: ``{"t": "run", "j": id, "args": {...}, "env": {...}}``,
  ``{"t": "cancel", "j": id}``;
* here -> worker: ``{"t": "ready", "async": bool}`` once the module is
  imported (or ``{"t": "fatal", "error": {...}}`` and exit 1), then
  ``{"t": "log", "j": id, "s": "stdout"|"stderr", "l": line}`` and
  ``{"t": "done", "j": id, "ok": bool, "result" | "error": ...}``.

Module state persists from one job to the next (that is the point). A sync
``main`` runs one job at a time, or up to THREADS at once on as many threads
when the operator asked for more than one; an ``async def main`` runs every
job it is given concurrently on one event loop. What ``print`` writes while a job runs
is that job's log (the job is known from a context variable, so concurrent
async jobs keep their own lines); ``os.environ`` shows each job its own
``WM_*`` variables the same way. Standard library only, like ``pywrapper``.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from worker.executors.binding import ArgumentError, Binder
from worker.executors.pywrapper import (
    _check_json,
    _error,
    _load,
    _NotSerialisable,
    _user_error,
)

HEADER = struct.Struct(">I")  # the protocol's frame: a big-endian length, then JSON
MAX_MESSAGE = 64 * 1024 * 1024
current_job: contextvars.ContextVar[str] = contextvars.ContextVar("gristmill_job", default="")
job_env: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "gristmill_env", default=None)


def frame(message: dict[str, Any]) -> bytes:
    """One message of the worker <-> dedicated process protocol, framed."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


def unframe(buffer: bytes) -> tuple[list[bytes], bytes, bool]:
    """The bodies of the whole frames at the start of ``buffer``, what is left of it (a
    frame still arriving), and whether a header announced more than MAX_MESSAGE (framing
    stops there: the peer does not speak the protocol)."""
    bodies: list[bytes] = []
    while len(buffer) >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer)
        if size > MAX_MESSAGE:
            return bodies, buffer, True
        if len(buffer) < HEADER.size + size:
            break
        bodies.append(buffer[HEADER.size:HEADER.size + size])
        buffer = buffer[HEADER.size + size:]
    return bodies, buffer, False


class Channel:
    """The socket to the worker: framed JSON, sends serialised by a lock (threads may print)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        # Jobs sent and not done: only their lines go to the worker, which reads the socket
        # while it waits for them (a task a job left behind prints to the process's output).
        self.running: set[str] = set()

    def send(self, message: dict[str, Any]) -> None:
        data = frame(message)
        with self.lock:
            self.sock.sendall(data)

    def messages(self) -> Iterator[dict[str, Any]]:
        """Messages from the worker until it closes the socket (none after a frame that
        announces more than MAX_MESSAGE: the rest is read and ignored)."""
        buffer, stuck = b"", False
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            if stuck:
                continue
            bodies, buffer, stuck = unframe(buffer + chunk)
            for body in bodies:
                yield json.loads(body)


class LineRouter:
    """sys.stdout / sys.stderr: each line goes to the log of the job that wrote it."""

    def __init__(self, stream: str, channel: Channel, fallback: Any) -> None:
        self.stream, self.channel, self.fallback = stream, channel, fallback
        self.partial: dict[str, str] = {}
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        job = current_job.get()
        if job not in self.channel.running:
            # Outside any job (import time, a thread the job started, a task that outlived
            # its job): the process's own output.
            self.fallback.write(text)
            return len(text)
        with self.lock:
            pending = self.partial.pop(job, "") + text
            *lines, rest = pending.split("\n")
            if rest:
                self.partial[job] = rest
        for line in lines:
            self.channel.send({"t": "log", "j": job, "s": self.stream, "l": line})
        return len(text)

    def end(self, job: str) -> None:
        """The job is over: its unterminated last line is sent as it is."""
        with self.lock:
            rest = self.partial.pop(job, "")
        if rest:
            self.channel.send({"t": "log", "j": job, "s": self.stream, "l": rest})

    def flush(self) -> None:
        self.fallback.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


class JobEnviron(MutableMapping[str, str]):
    """os.environ as each job sees it: the process's, under the running job's own variables."""

    def __init__(self, base: MutableMapping[str, str]) -> None:
        self.base = base

    def _view(self) -> dict[str, str]:
        return {**self.base, **(job_env.get() or {})}

    def __getitem__(self, key: str) -> str:
        own = job_env.get() or {}
        return own[key] if key in own else self.base[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.base[key] = value

    def __delitem__(self, key: str) -> None:
        del self.base[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def copy(self) -> dict[str, str]:
        return self._view()


class Server:
    """Runs the jobs the worker sends through one imported ``main``."""

    def __init__(self, binder: Binder, channel: Channel,
                 routers: tuple[LineRouter, LineRouter], main_file: str) -> None:
        # The binder holds main's parameters and hints, read once for all its jobs.
        self.binder, self.channel, self.routers, self.main_file = binder, channel, routers, main_file

    def serve_sync(self, threads: int = 1) -> None:
        if threads <= 1:
            for message in self.channel.messages():
                if message["t"] == "run":
                    self._run_sync(message)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="gristmill-job") as pool:
            for message in self.channel.messages():
                if message["t"] == "run":
                    # Each job in a context of its own: its log lines and WM_* variables.
                    pool.submit(contextvars.copy_context().run, self._run_sync, message)

    def _run_sync(self, message: dict[str, Any]) -> None:
        self._enter(message)
        self._done(message["j"], self._report(message["args"]))

    def serve_async(self) -> None:
        import asyncio

        asyncio.run(self._serve_async())

    async def _serve_async(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def read() -> None:
            for message in self.channel.messages():
                loop.call_soon_threadsafe(inbox.put_nowait, message)
            loop.call_soon_threadsafe(inbox.put_nowait, None)

        threading.Thread(target=read, daemon=True, name="gristmill-dedicated-reader").start()
        tasks: dict[str, asyncio.Task[None]] = {}
        while (message := await inbox.get()) is not None:
            if message["t"] == "run":
                context = contextvars.copy_context()
                context.run(self._enter, message)
                task = loop.create_task(self._run_async(message), context=context)
                tasks[message["j"]] = task
                task.add_done_callback(self._forget(tasks, message["j"]))
            elif message["t"] == "cancel" and message["j"] in tasks:
                tasks[message["j"]].cancel()

    @staticmethod
    def _forget(tasks: dict[str, Any], job: str) -> Callable[[object], None]:
        return lambda _: tasks.pop(job, None)

    async def _run_async(self, message: dict[str, Any]) -> None:
        import asyncio

        job = message["j"]
        try:
            result = await self.binder.call(self.binder.bind(message["args"]))  # type: ignore[misc]
            report = self._checked(result)
        except ArgumentError as exc:
            report = _error("ArgumentError", str(exc))
        except asyncio.CancelledError:
            report = _error("Canceled", "job was canceled")
        except BaseException as exc:  # the job's own failure, SystemExit included
            report = _user_error(exc, self.main_file)
        self._done(job, report)

    def _enter(self, message: dict[str, Any]) -> None:
        self.channel.running.add(message["j"])
        current_job.set(message["j"])
        job_env.set(message.get("env") or {})

    def _report(self, args: dict[str, Any]) -> dict[str, object]:
        try:
            return self._checked(self.binder.call(self.binder.bind(args)))
        except ArgumentError as exc:
            return _error("ArgumentError", str(exc))
        except BaseException as exc:
            return _user_error(exc, self.main_file)

    def _checked(self, result: object) -> dict[str, object]:
        try:
            _check_json(result, "result", set())
        except _NotSerialisable as exc:
            return _error("ResultNotSerializable", str(exc))
        except RecursionError:
            return _error("ResultNotSerializable", "result is nested too deeply")
        return {"ok": True, "result": result}

    def _done(self, job: str, report: dict[str, object]) -> None:
        for router in self.routers:
            router.end(job)
        self.channel.running.discard(job)
        current_job.set("")
        job_env.set(None)
        try:
            self.channel.send({"t": "done", "j": job, **report})
        except ValueError:  # not JSON after all (a NaN the check missed): say so
            self.channel.send({"t": "done", "j": job, **_error(
                "ResultNotSerializable", "result is not JSON-serialisable")})


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: python -m worker.executors.dedicated MAIN_PY THREADS FD\n")
        return 2
    threads, fd = int(argv[2]), int(argv[3])
    # Close-on-exec copy: processes the jobs start must not hold the worker's socket.
    sock = socket.socket(fileno=os.dup(fd))
    os.close(fd)
    channel = Channel(sock)
    main_file = os.path.abspath(argv[1])
    try:
        module = _load(argv[1])
        func = getattr(module, "main", None)
        if not callable(func):
            raise _Missing(f"{os.path.basename(argv[1])} does not define a function main()")
        binder = Binder(func)  # may evaluate the user's annotations: their failure is theirs
    except _Missing as exc:
        channel.send({"t": "fatal", **_error("NoMainFunction", str(exc))})
        return 1
    except BaseException as exc:
        channel.send({"t": "fatal", **_user_error(exc, main_file)})
        return 1
    is_async = inspect.iscoroutinefunction(func)
    routers = (LineRouter("stdout", channel, sys.stdout), LineRouter("stderr", channel, sys.stderr))
    sys.stdout, sys.stderr = routers
    # Replaced, not cleared: the process's variables stay under each job's own.
    os.environ = JobEnviron(os.environ)  # type: ignore[assignment]  # noqa: B003
    server = Server(binder, channel, routers, main_file)
    channel.send({"t": "ready", "async": is_async})
    if is_async:
        server.serve_async()
    else:
        server.serve_sync(threads)
    return 0


class _Missing(Exception):
    pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))
