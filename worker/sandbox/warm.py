"""The worker's side of the warm fork server (``forkserver.py``): start it, hand it jobs.

One ``ForkServer`` per worker process, shared by its job threads. ``spawn``
passes a job's pipes to the server and returns a ``WarmJob``: a handle with
the same semantics as the cold launcher's process (signal its whole group,
wait for its exit, get its wait status). A reader thread turns the server's
``exit`` messages into those handles' results. When the server dies, every job
it held is failed with ``FORK_SERVER_DIED`` and the next ``spawn`` starts a
new server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

from worker.sandbox.forkserver import MAX_MESSAGE, RESULT_FD
from worker.sandbox.template import Spec

__all__ = ["FORK_SERVER_DIED", "RESULT_FD", "ForkServer", "WarmJob"]

FORK_SERVER_DIED = ("the worker's fork server died while the job ran; the job's processes "
                    "were killed (the worker started a new fork server)")
# The server's whole environment: nothing of the worker's (which holds its secrets).
SERVER_ENV = {"LC_ALL": "C.UTF-8"}


class ForkServerError(Exception):
    """The fork server could not take the job."""


class WarmJob:
    """One job forked by the fork server (its PID 1, or its launcher): signal, wait, status."""

    def __init__(self, server: ForkServer, seq: int) -> None:
        self._server, self.seq = server, seq
        self._done = threading.Event()
        self.status: int | None = None  # wait status; None when the server died first
        self._pidfd: int | None = None  # the job's process, from the server's ``pid`` message

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the job's whole process group (nothing once it has ended)."""
        if not self._done.is_set():
            self._server.send(f"kill {self.seq} {sig}".encode())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job's process has ended (True) or ``timeout`` passed."""
        return self._done.wait(timeout)

    def returncode(self) -> int | None:
        """As ``Popen.returncode``: exit code, or minus the signal; None if the server died."""
        if self.status is None:
            return None
        if os.WIFSIGNALED(self.status):
            return -os.WTERMSIG(self.status)
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else 1

    def _end(self, status: int | None) -> None:
        self._close_pidfd()
        self.status = status
        self._done.set()

    def _kill(self) -> None:
        """SIGKILL the job's process (its PID 1, or its launcher) through its pidfd."""
        if self._pidfd is not None:
            with contextlib.suppress(OSError):  # already gone
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _close_pidfd(self) -> None:
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)


class _Connection:
    """One server process, its socket and the jobs it holds."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self.sock, self.proc = sock, proc
        self.jobs: dict[int, WarmJob] = {}
        self.alive = True


class ForkServer:
    """A running fork server and the jobs it holds; restarted on the first spawn after it died."""

    def __init__(self, *, pid1: bool = False, root: Spec | None = None) -> None:
        self.pid1, self.root = pid1, root
        self._lock = threading.Lock()
        self._seq = 0
        self._conn: _Connection | None = None
        self.starts = 0

    @classmethod
    def start(cls, *, pid1: bool = False, root: Spec | None = None) -> ForkServer:
        """A started server (call before reading secrets or connecting to Redis).

        ``pid1`` (isolated jobs only): where the server may (root), each job's process is
        PID 1 of a new PID namespace and builds the job's whole sandbox itself (see
        ``forkserver.py``); a shared job sent to it fails. False: a launcher per job, as
        cold, for either mode. ``root`` (with ``pid1``): the private root most jobs ask
        for, laid out once by the server and copied per job (``template.py``).
        """
        server = cls(pid1=pid1, root=root)
        with server._lock:
            server._start_locked()
        return server

    @property
    def pid(self) -> int | None:
        """The server process's pid (None while none is running)."""
        conn = self._conn
        return conn.proc.pid if conn is not None and conn.alive else None

    def spawn(self, fds: list[int], *, templated: bool = False) -> WarmJob:
        """Hand the server [request, stdout, stderr(, result)]; the caller still owns ``fds``.

        ``templated``: the job's request asks for the root the server laid out (``root``),
        so a process the server prepared ahead may take it.
        """
        with self._lock:
            for attempt in range(2):  # a server found dead is replaced once
                conn = self._conn if self._conn is not None and self._conn.alive else \
                    self._start_locked()
                self._seq += 1
                job = WarmJob(self, self._seq)
                conn.jobs[job.seq] = job
                try:
                    run = f"run {job.seq}{' t' if templated and self.root else ''}"
                    socket.send_fds(conn.sock, [run.encode()], fds)
                    return job
                except OSError as exc:
                    del conn.jobs[job.seq]
                    conn.alive = False
                    if attempt:
                        raise ForkServerError(f"the fork server did not take the job: {exc}") \
                            from exc
            raise AssertionError("unreachable")

    def send(self, message: bytes) -> None:
        with self._lock:
            conn = self._conn
            if conn is not None and conn.alive:
                with contextlib.suppress(OSError):  # it died: its reader fails its jobs
                    conn.sock.send(message)

    def close(self) -> None:
        """Stop the server: its jobs are killed (PID-1 jobs by the server; launchers at EOF)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.alive = False
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            conn.proc.wait()

    def _start_locked(self) -> _Connection:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # A new session: the worker's terminal or group signals are not the server's;
            # it ends when this end of the socket closes, worker death included.
            proc = subprocess.Popen(
                [sys.executable, "-u", "-P", "-m", "worker.sandbox.forkserver",
                 str(theirs.fileno()), *([] if self.pid1 else ["--no-pid1"]),
                 *(["--root", json.dumps(self.root)] if self.pid1 and self.root else [])],
                env=SERVER_ENV, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        conn = self._conn = _Connection(ours, proc)
        self.starts += 1
        threading.Thread(target=self._read, args=(conn,), daemon=True,
                         name=f"gristmill-forkserver-{proc.pid}").start()
        return conn

    def _read(self, conn: _Connection) -> None:
        """Dispatch ``pid`` and ``exit`` messages until the server's end closes; then kill
        and fail what it held (a dead server cannot have killed them)."""
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(conn.sock, MAX_MESSAGE, 1)
            except OSError:
                message, fds = b"", []
            if not message:
                for fd in fds:
                    os.close(fd)
                break
            kind, seq, *rest = message.decode().split()
            with self._lock:
                job = conn.jobs.get(int(seq)) if kind == "pid" else conn.jobs.pop(int(seq), None)
                if kind == "pid" and job is not None and fds:
                    job._pidfd = fds.pop()
            for fd in fds:  # a pid for a job already failed, or a stray descriptor
                os.close(fd)
            if kind == "exit" and job is not None:
                job._end(int(rest[0]))
        with self._lock:
            conn.alive = False
            lost = list(conn.jobs.values())
            conn.jobs.clear()
        for job in lost:
            job._kill()
        conn.proc.wait()
        conn.sock.close()
        for job in lost:
            job._end(None)
