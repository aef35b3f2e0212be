"""The warm fork server: forks one sandboxed process per job from an interpreter that is ready.

Started by the worker (``worker/sandbox/warm.py``) before it reads a secret or
opens a connection, as ``python -u -P -m worker.sandbox.forkserver FD [--no-pid1]``
with an empty environment; FD is its end of a ``SOCK_SEQPACKET`` socket pair. It has
imported the python3 wrapper and the launcher, and nothing else of ours.

Messages (one per packet, ASCII)::

    worker → server   run SEQ [t] + SCM_RIGHTS [request, stdout, stderr(, result)]
                      kill SEQ SIGNO      signal job SEQ's whole process group
    server → worker   pid SEQ   + SCM_RIGHTS [pidfd]   job SEQ's process, right after the fork
                      exit SEQ STATUS     the job's process ended with this wait status

For ``run``, a server with PID-1 forks (isolated workers; root) forks the job's
process as PID 1 of a new PID namespace: ``unshare(CLONE_NEWPID)`` before the
fork, ``setns`` back to its own after it. That process reads the request from
the request pipe, enters the other namespaces, builds the private root and runs
the job: a python3 job in that very process (as the job's uid), a bash job
exec'd in a child it reaps. One Python fork per python3 job; see
docs/ARCHITECTURE.md ("Warm execution") for what being PID 1 changes. With a root
template (``template.py``), the server forks the next templated job's PID 1 ahead
(a *spare*: its root prepared, no job's descriptor or request), and a ``run SEQ t``
(the request asks for the template's root) hands the job's descriptors to it. Without
PID-1 forks (``--no-pid1``: shared workers, or no right to a PID namespace) the
child becomes exactly what ``launch.py`` is for a cold job: its own session, the
request read from the request pipe (whose write end the worker keeps open:
end-of-file means the worker is gone and the job is killed), then
``run_isolated`` or ``run_shared``, a python3 job run in the last forked process.

What the server itself never holds: a request. It passes the request pipe to
the child unread, so no job's code, args or token ever enters the memory that
later jobs are forked from. It is single-threaded (``fork`` from a threaded
process is unsafe), ignores SIGTERM and SIGINT, and exits when the worker's end
of the socket closes, after SIGKILLing its PID-1 jobs; a launcher then sees
end-of-file on its request pipe and kills the job's namespace. When the server
itself dies first (the OOM killer, an operator's kill), the worker SIGKILLs the
jobs it held through the pidfds of the ``pid`` messages: a PID-1 python3 job runs
job code in the very process that has PDEATHSIG, and job code may clear it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import select
import selectors
import signal
import socket
import sys

from worker.executors import pywrapper
from worker.sandbox import launch, template

MAX_FDS = 4
MAX_MESSAGE = 256
RESULT_FD = 3  # where a job's result pipe is put; the worker names it in the request
# Signals whose default action ends a process, given a handler in a PID-1 python3 job.
PID1_HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2)


class _Job:
    """A job the server forked and has not reaped yet."""

    def __init__(self, pid: int, pid1: bool) -> None:
        self.pid, self.pid1 = pid, pid1
        self.sent: set[int] = set()  # signals the worker had forwarded to it


class _Spare:
    """A PID-1 process forked ahead of its job, its root prepared from the template, waiting
    on ``sock`` for the job's descriptors (``_spare``)."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock


class _Server:
    """The server's state: its socket, its jobs, and how it forks them."""

    def __init__(self, sock: socket.socket, pid1: bool, root: template.Spec | None = None
                 ) -> None:
        self.sock = sock
        self.jobs: dict[int, _Job] = {}  # seq -> job, until reaped
        # PID-1 forks: each job's process is PID 1 of a new PID namespace (root only).
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if pid1 else -1
        self.pid1 = pid1 and _pid1_forks_work(self.own_pidns)
        # Readable once this server has exited: a job checks it after arming PDEATHSIG.
        self.self_pidfd = os.pidfd_open(os.getpid())
        # The jobs' root, laid out once (``template.py``); -1: each job builds its own.
        self.root, self.root_fd = root, -1
        if self.pid1 and root is not None:
            try:
                # Above the descriptors a job's process puts its pipes on (0-3).
                fd = template.make(root)
                self.root_fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                os.close(fd)
            except (launch.SandboxError, OSError) as exc:
                sys.stderr.write(f"gristmill fork server: every job builds its own root: {exc}\n")
        self.spare: _Spare | None = None  # the next templated job's process, ready


def serve(sock: socket.socket, pid1: bool = True, root: template.Spec | None = None) -> None:
    """Fork a job per ``run``, signal per ``kill``, report each exit; at EOF kill the PID-1
    jobs (the worker is gone) and return. ``root``: the jobs' usual root, laid out once."""
    server = _Server(sock, pid1, root)
    _fork_spare(server)
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fileobj is sock:
                    message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
                    if not message:
                        _kill_all(server)
                        return
                    _handle(message.decode().split(), fds, server, sel)
                else:
                    seq, pid = key.data
                    sel.unregister(key.fileobj)
                    os.close(key.fd)
                    _reap(seq, pid, server)


def _pid1_forks_work(own_pidns: int) -> bool:
    """Whether this process may give its children a new PID namespace (and take it back)."""
    if launch._libc.unshare(launch.CLONE_NEWPID) != 0:
        return False
    launch._check(launch._libc.setns(own_pidns, launch.CLONE_NEWPID), "setns")
    return True


def _fork(server: _Server) -> tuple[int, bool]:
    """Fork a job: (pid, whether it is PID 1 of a new PID namespace)."""
    if not server.pid1 or launch._libc.unshare(launch.CLONE_NEWPID) != 0:
        return os.fork(), False
    try:
        pid = os.fork()
    except OSError:
        _own_pidns_for_children(server)
        raise
    if pid:  # only this child is in the new namespace: the next gets a namespace of its own
        try:
            _own_pidns_for_children(server)
        except launch.SandboxError:
            # Every later child would land in this job's namespace: this server is done for.
            # The job dies first, so nothing outlives the server's exit.
            os.kill(pid, signal.SIGKILL)
            raise
    return pid, True


def _own_pidns_for_children(server: _Server) -> None:
    launch._check(launch._libc.setns(server.own_pidns, launch.CLONE_NEWPID), "setns")


def _handle(words: list[str], fds: list[int], server: _Server,
            sel: selectors.BaseSelector) -> None:
    if words[0] == "run":
        seq = int(words[1])
        templated = words[2:] == ["t"]  # the job asks for the template's root: a spare may run it
        pid, pid1 = (_hand_to_spare(server, fds), True) if templated else (-1, False)
        if pid < 0:
            try:
                pid, pid1 = _fork(server)
            except OSError as exc:  # out of processes or memory: this job fails, the server stays
                with contextlib.suppress(OSError):
                    os.write(fds[2], f"gristmill sandbox: cannot fork the job: {exc}\n".encode())
                    server.sock.send(f"exit {seq} {launch.START_FAILED << 8}".encode())
                pid, pid1 = -1, False
        if pid == 0:
            if pid1:
                _pid1_job(fds, server)
            _launcher(fds)
        for fd in fds:
            os.close(fd)
        if pid > 0:
            server.jobs[seq] = _Job(pid, pid1)
            pidfd = os.pidfd_open(pid)  # before any reap: it names this very process
            sel.register(pidfd, selectors.EVENT_READ, (seq, pid))
            with contextlib.suppress(OSError):  # the worker is gone: _kill_all at EOF
                socket.send_fds(server.sock, [f"pid {seq}".encode()], [pidfd])
        if templated and server.spare is None:
            _fork_spare(server)  # the next one's, while this job runs
    elif words[0] == "kill":
        job = server.jobs.get(int(words[1]))
        if job is not None:  # not reaped yet, so the group id is still this job's
            job.sent.add(int(words[2]))
            _signal_job(job.pid, int(words[2]))


def _fork_spare(server: _Server) -> None:
    """Fork the next templated job's PID 1 now, so that a job finds its root ready."""
    if server.root_fd < 0:
        return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid, pid1 = _fork(server)
    except OSError:  # out of processes: the next job is forked when it comes
        ours.close()
        theirs.close()
        return
    if pid == 0:
        if pid1:
            _spare(theirs, server)
        os._exit(0)  # no PID namespace for it after all
    theirs.close()
    if not pid1:
        ours.close()
        os.waitpid(pid, 0)
        return
    server.spare = _Spare(pid, ours)


def _hand_to_spare(server: _Server, fds: list[int]) -> int:
    """Give the spare this job's descriptors: its pid, or -1 when there is none (or it died)."""
    spare, server.spare = server.spare, None
    if spare is None:
        return -1
    try:
        socket.send_fds(spare.sock, [b"job"], fds)
    except OSError:  # it died before its job (the OOM killer): the job is forked afresh
        _signal_job(spare.pid, signal.SIGKILL)  # if it lives on after all, not forever
        os.waitpid(spare.pid, 0)
        return -1
    finally:
        spare.sock.close()
    return spare.pid


def _signal_job(pid: int, sig: int) -> None:
    """Signal the job's process group; the process alone if it has not made its group yet."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    except PermissionError:
        pass


def _reap(seq: int, pid: int, server: _Server) -> None:
    # The job is a zombie until waited for, so its group id is not reused yet:
    # kill whatever it left behind in its group, then reap.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    job = server.jobs.pop(seq)
    if job.pid1:
        status = pid1_status(status, job.sent)
    with contextlib.suppress(OSError):  # the worker is gone: nobody to tell
        server.sock.send(f"exit {seq} {status}".encode())


def pid1_status(status: int, sent: set[int]) -> int:
    """A PID-1 job's wait status as the worker expects it.

    PID 1 cannot die of a signal it has no handler for, so a PID-1 job exits
    ``128 + SIG`` where a plain process would have died of SIG. When the worker
    had sent that signal, report it as the death by that signal it stands for.
    """
    if os.WIFEXITED(status):
        sig = os.WEXITSTATUS(status) - 128
        if sig in sent and sig > 0:
            return sig  # the wait status of a process killed by ``sig``
    return status


def _kill_all(server: _Server) -> None:
    """The worker is gone: SIGKILL every PID-1 job (its namespace dies with it) and the
    spare, and reap.

    A job forked the other way (a launcher) kills its job itself when its request
    pipe, whose write end the worker held, reaches end-of-file.
    """
    if server.spare is not None:
        _signal_job(server.spare.pid, signal.SIGKILL)
        os.waitpid(server.spare.pid, 0)
        server.spare = None
    for job in server.jobs.values():
        if job.pid1:
            _signal_job(job.pid, signal.SIGKILL)
    for job in server.jobs.values():
        if job.pid1:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(job.pid, 0)


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


def _pid1_job(fds: list[int], server: _Server) -> None:
    """In the forked child, PID 1 of a new PID namespace: the job's sandbox and the job
    itself (python3 in this process, bash under it). Never returns; its exit ends every
    process left in the namespace."""
    try:
        launch._prctl(launch.PR_SET_PDEATHSIG, signal.SIGKILL)  # the server dies: so does the job
        if select.select([server.self_pidfd], [], [], 0)[0]:  # it died before that was armed
            os._exit(1)
        os.setsid()  # a process group of its own, signalled as a whole by ``kill``
        _take_fds(fds, keep=server.root_fd)
        request = _isolated_request()
        if server.root is not None and server.root_fd >= 0 and \
                template.matches(server.root, request):
            template.enter(request, server.root_fd, server.root)
        else:
            if server.root_fd >= 0:
                os.close(server.root_fd)
            launch.enter_sandbox(request)
        _run_as_pid1(request)
    except BaseException as exc:
        _cannot_set_up(exc)
    os._exit(launch.START_FAILED)


def _spare(sock: socket.socket, server: _Server) -> None:
    """In a PID-1 process forked ahead (``_fork_spare``): prepare the template's root, wait
    for a job's descriptors on ``sock``, then finish the sandbox and run the job as
    ``_pid1_job`` would. Never returns. Until its job comes it holds nothing of any job: no
    descriptor but ``sock`` (and the server's stdio), no request."""
    try:
        launch._prctl(launch.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([server.self_pidfd], [], [], 0)[0]:
            os._exit(1)
        os.setsid()
        _close_above_stderr({sock.fileno(), server.root_fd})
        assert server.root is not None
        problem: BaseException | None = None
        try:
            template.prepare(server.root_fd, server.root)
        except BaseException as exc:  # said on the job's own stderr, once it has one
            problem = exc
        _, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
        if not fds:  # the server closed its end: it is stopping, there is no job
            os._exit(0)
        sock.close()
        _take_fds(fds)
        if problem is not None:
            raise problem
        request = _isolated_request()
        template.finish(request, server.root)
        _run_as_pid1(request)
    except BaseException as exc:
        _cannot_set_up(exc)
    os._exit(launch.START_FAILED)


def _isolated_request() -> launch.Request:
    request = launch.read_request(0)
    if request["mode"] != "isolated":  # a shared job keeps the host's PID namespace
        raise launch.SandboxError("this fork server runs isolated jobs only (started "
                                  "with pid1); a shared job needs one started without")
    return request


def _run_as_pid1(request: launch.Request) -> None:
    """In the sandbox, still root: the python3 job in this process, or the bash job under it."""
    if request.get("inprocess"):
        start_job(request, launch.JOB_DIR, request["uid"], "/tmp")
    launch.exit_as_pid1(launch.supervise(request, start_job))


def _cannot_set_up(exc: BaseException) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"gristmill sandbox: cannot set up the job's sandbox: {exc}\n"
                 .encode(errors="replace"))


def _close_above_stderr(keep: set[int]) -> None:
    """Close every descriptor above 2 but those in ``keep``."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _take_fds(fds: list[int], keep: int = -1) -> None:
    """Keep only the job's descriptors: request on 0, stdout 1, stderr 2, result on 3
    (and ``keep``, above them, for the caller to close)."""
    # Everything else of the server's (its socket, other jobs' pidfds) goes.
    _close_above_stderr({*fds, keep} if keep > RESULT_FD else set(fds))
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
        if os.getpid() == 1:
            # PID 1 of its namespace ignores a signal it has no handler for, so the worker's
            # SIGTERM (timeout, cancel) would do nothing, nor the job's own alarm(): exit as
            # the signal would have ended it (the server reports that exit, for a signal it
            # forwarded, as the death by the signal: ``pid1_status``).
            for sig in PID1_HANDLED:
                signal.signal(sig, _exit_as_killed)
            os.register_at_fork(after_in_child=_default_signals)  # the job's forks are not
    except BaseException as exc:
        launch.cannot_start(exc)
    code = 1
    try:
        code = pywrapper.main(["pywrapper", *argv[-3:]])
    finally:
        os._exit(_shutdown(code))


def _default_signals() -> None:
    """In a process a PID-1 job forked: the dispositions any process starts with."""
    if os.getpid() != 1:
        for sig in PID1_HANDLED:
            signal.signal(sig, signal.SIG_DFL)


def _exit_as_killed(sig: int, frame: object) -> None:
    if os.getpid() != 1:  # a process the job forked inherited the handler: die of it
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return
    os._exit(128 + sig)


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

    # As the interpreter's own exit: only a job that imported threading has threads to join
    # (importing it here would cost every job a millisecond).
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()
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
    pid1 = "--no-pid1" not in sys.argv[2:]
    root = json.loads(sys.argv[sys.argv.index("--root") + 1]) if "--root" in sys.argv else None
    # Everything imported so far is shared with every job copy-on-write; frozen, the jobs'
    # garbage collections never walk (and so never copy) those pages.
    gc.freeze()
    serve(sock, pid1, root)


if __name__ == "__main__":
    main()
