"""The warm fork server: forks one sandboxed process per job from an interpreter that is ready.

Started by the worker (``worker/sandbox/warm.py``) before it reads a secret or
opens a connection, as ``python -u -P -m worker.sandbox.forkserver FD`` with an
empty environment; FD is its end of a ``SOCK_SEQPACKET`` socket pair. It has
imported the python3 wrapper and the launcher, and nothing else of ours.

Messages (one per packet, ASCII)::

    worker → server   run SEQ   + SCM_RIGHTS [request, stdout, stderr(, result)]
                      kill SEQ SIGNO      signal job SEQ's whole process group
    server → worker   exit SEQ STATUS     the job's launcher ended with this wait status

For ``run`` the server forks a child that becomes exactly what ``launch.py``
is for a cold job: its own session, the request read from the request pipe
(whose write end the worker keeps open: end-of-file means the worker is gone
and the job is killed), then ``run_isolated`` or ``run_shared``. The only
difference is the job's last step: a python3 job runs the wrapper in the
forked process instead of exec'ing a new interpreter; a bash job is exec'd.

What the server itself never holds: a request. It passes the request pipe to
the child unread, so no job's code, args or token ever enters the memory that
later jobs are forked from. It is single-threaded (``fork`` from a threaded
process is unsafe), ignores SIGTERM and SIGINT, and exits when the worker's end
of the socket closes; each job's launcher then sees end-of-file on its request
pipe and kills the job's namespace.
"""

from __future__ import annotations

import contextlib
import gc
import os
import selectors
import signal
import socket
import sys

from worker.executors import pywrapper
from worker.sandbox import launch

MAX_FDS = 4
MAX_MESSAGE = 256
RESULT_FD = 3  # where a job's result pipe is put; the worker names it in the request


def serve(sock: socket.socket) -> None:
    """Fork a job per ``run``, signal per ``kill``, report each exit; return at EOF."""
    jobs: dict[int, int] = {}  # seq -> launcher pid, until reaped
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fileobj is sock:
                    message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
                    if not message:
                        return
                    _handle(message.decode().split(), fds, jobs, sel, sock)
                else:
                    seq, pid = key.data
                    sel.unregister(key.fileobj)
                    os.close(key.fd)
                    _reap(seq, pid, jobs, sock)


def _handle(words: list[str], fds: list[int], jobs: dict[int, int],
            sel: selectors.BaseSelector, sock: socket.socket) -> None:
    if words[0] == "run":
        seq = int(words[1])
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: this job fails, the server stays
            with contextlib.suppress(OSError):
                os.write(fds[2], f"gristmill sandbox: cannot fork the job: {exc}\n".encode())
                sock.send(f"exit {seq} {launch.START_FAILED << 8}".encode())
            pid = -1
        if pid == 0:
            _launcher(fds)
        for fd in fds:
            os.close(fd)
        if pid > 0:
            jobs[seq] = pid
            sel.register(os.pidfd_open(pid), selectors.EVENT_READ, (seq, pid))
    elif words[0] == "kill":
        target = jobs.get(int(words[1]))
        if target is not None:  # not reaped yet, so the group id is still this job's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, int(words[2]))


def _reap(seq: int, pid: int, jobs: dict[int, int], sock: socket.socket) -> None:
    # The launcher is a zombie until waited for, so its group id is not reused yet:
    # kill whatever the job left behind in its group, then reap.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    del jobs[seq]
    with contextlib.suppress(OSError):  # the worker is gone: nobody to tell
        sock.send(f"exit {seq} {status}".encode())


def _launcher(fds: list[int]) -> None:
    """In the forked child: become the job's launcher (as ``launch.main``). Never returns."""
    try:
        os.setsid()  # a process group of its own, signalled as a whole by ``kill``
        _take_fds(fds)
        request = launch.read_request(0)
        runner = launch.run_isolated if request["mode"] == "isolated" else launch.run_shared
        runner(request, 0, start_job)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"gristmill sandbox: {exc}\n".encode(errors="replace"))
    os._exit(launch.START_FAILED)


def _take_fds(fds: list[int]) -> None:
    """Keep only the job's descriptors: request on 0, stdout 1, stderr 2, result on 3."""
    high = os.sysconf("SC_OPEN_MAX")
    low = 0
    for fd in sorted(fds):  # everything of the server's (its socket, other jobs' pidfds) goes
        os.closerange(max(low, 3), fd)
        low = fd + 1
    os.closerange(max(low, 3), high)
    for src, dst in zip(fds[:3], (0, 1, 2), strict=True):
        os.dup2(src, dst)
    if len(fds) > 3:
        os.dup2(fds[3], RESULT_FD)
    for fd in fds:
        if fd > RESULT_FD or (fd == RESULT_FD and len(fds) == 3):
            os.close(fd)


def start_job(request: launch.Request, workdir: str, uid: int | None, tmpdir: str) -> None:
    """The job's own process: a bash job is exec'd, a python3 job runs here. Never returns."""
    try:
        launch.enter_job(request, workdir, uid)
        env = {**request["env"], "HOME": workdir, "TMPDIR": tmpdir}
        argv = request["argv"]
        if not request.get("inprocess"):
            os.execve(argv[0], argv, env)
        _as_fresh_interpreter(env)
    except BaseException as exc:
        launch.cannot_start(exc)
    code = 1
    try:
        code = pywrapper.main(["pywrapper", *argv[-3:]])
    finally:
        os._exit(_shutdown(code))


def _as_fresh_interpreter(env: dict[str, str]) -> None:
    """What a new ``python`` process would have: its environment, signal dispositions, dumpable."""
    os.environ.clear()
    os.environ.update(env)
    import tempfile
    import time

    tempfile.tempdir = None  # the launcher's mkdtemp cached the server's idea of TMPDIR
    sys.dont_write_bytecode = True  # the job's directory dies with it: no .pyc worth writing
    time.tzset()
    # exec makes a process dumpable again; the job may read its own /proc files.
    launch._prctl(launch.PR_SET_DUMPABLE, 1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as the interpreter sets them at start
        signal.signal(sig, signal.SIG_IGN)


def _shutdown(code: int) -> int:
    """What interpreter exit does: wait for the job's threads, run atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's own exit step
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:  # the job's own exit handlers failing: the interpreter says so too
        return code or 1
    return code


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it ends with the worker's socket
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    launch._prctl(launch.PR_SET_DUMPABLE, 0)
    sock = socket.socket(fileno=int(sys.argv[1]))
    # Everything imported so far is shared with every job copy-on-write; frozen, the jobs'
    # garbage collections never walk (and so never copy) those pages.
    gc.freeze()
    serve(sock)


if __name__ == "__main__":
    main()
