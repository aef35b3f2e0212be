"""The sandbox launcher: runs one job's command isolated from everything else on the host.

Started by the worker for every job as ``python -I -S launch.py`` (standard
library only, so it starts in milliseconds and imports nothing of ours), it
reads one length-prefixed JSON request from stdin and then keeps stdin open:
end-of-file there means the worker is gone, and the job dies at once.

``isolated`` mode (root on Linux)::

    launcher (root, host namespaces)        watches stdin and the init process
      └─ init (PID 1 of a new PID, mount, IPC, UTS [, network] namespace, root)
           builds a private root: tmpfs + read-only binds of the system and of
           Python, its own /proc, /dev, /tmp and /job; chroot
           └─ job (a uid of its own, no capabilities, no_new_privs, rlimits)

When the job's main process exits, init exits and the kernel kills every
process left in the namespace, however it detached. When the worker dies, the
launcher kills init (and init has PR_SET_PDEATHSIG for the case where the
launcher itself is killed). Nothing of the job is written to the host's disk.

``shared`` mode (``--unsafe-shared-user``): the job runs as the worker's own
user in a temporary directory; the launcher is a child subreaper and kills
every descendant left when the job ends. Job code can then read whatever the
worker's user can read: this mode is for single-user machines only.

The request's fields: ``mode``, ``argv``, ``env``, ``files`` (name → text, put
in the job's directory), ``limits`` (``memory_mb``, ``max_procs``, ``file_mb``,
``open_files``, ``disk_mb``), ``uid``, ``network`` (``host`` or ``none``),
``binds`` (host paths made visible read-only), ``shared_dirs`` (host
directories every job may read and write, chosen by the operator), ``root`` (the mount point of
the private root) and ``result_fd`` (kept open for the job, or null).

The exit status mirrors the job's main process: its exit code, or death by
the same signal. ``--probe`` checks that isolation works here and exits 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
from typing import TYPE_CHECKING, Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# Every job's, besides its PID namespace (and a network namespace with no network).
JOB_NAMESPACES = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38

JOB_DIR = "/job"
DEVICES = ("null", "zero", "full", "random", "urandom")
START_FAILED = 127  # the job's command could not be started (its stderr says why)

_libc = ctypes.CDLL(None, use_errno=True)
Request = dict[str, Any]  # the JSON request: see the module docstring
if TYPE_CHECKING:
    from collections.abc import Callable

    # Runs in the job's forked process and never returns: (request, workdir, uid, tmpdir).
    # ``exec_job`` here; the warm fork server passes one that runs python3 jobs in-process.
    StartJob = Callable[[Request, str, int | None, str], None]


class SandboxError(Exception):
    """The sandbox could not be set up."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None),
        f"mount {source} on {target}",
    )


# -- reading the request --------------------------------------------------------------------


def read_request(fd: int) -> Request:
    (size,) = struct.unpack(">I", _read_exactly(fd, 4))
    request: Request = json.loads(_read_exactly(fd, size))
    return request


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise SandboxError("the worker closed the request pipe early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- the private root (isolated mode, inside the new mount namespace) -------------------------


def build_root(root: str, binds: list[str], shared_dirs: list[str], disk_mb: int,
               uid: int) -> None:
    """Mount a tmpfs on ``root`` and lay out the job's whole filesystem in it."""
    lay_out_root(root, binds, shared_dirs, f"size={disk_mb}m,mode=0755")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in ("/tmp", "/dev/shm"):
        os.makedirs(root + path, exist_ok=True)  # a shared directory may lie under /tmp
        os.chmod(root + path, 0o1777)
    os.makedirs(root + JOB_DIR)
    os.chown(root + JOB_DIR, uid, uid)
    os.chmod(root + JOB_DIR, 0o700)
    os.chroot(root)
    os.chdir("/")


def lay_out_root(root: str, binds: list[str], shared_dirs: list[str], tmpfs: str) -> None:
    """In a new mount namespace: a tmpfs (mount options ``tmpfs``) on ``root`` with the
    read-only binds, the shared directories and the devices: what no job has of its own
    (``build_root`` adds the rest; so does ``template.enter``, per job, to a copy)."""
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    for path in binds:
        target = root + path
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
            continue
        os.makedirs(target, exist_ok=True)
        _mount(path, target, None, MS_BIND | MS_REC)
        _mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in shared_dirs:
        os.makedirs(root + path, exist_ok=True)
        _mount(path, root + path, None, MS_BIND)
        _mount("none", root + path, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/dev")
    for name in DEVICES:
        with open(f"{root}/dev/{name}", "w"):
            pass
        _mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc")


def write_files(directory: str, files: dict[str, str], uid: int | None) -> None:
    for name, text in files.items():
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if uid is not None:
            os.chown(path, uid, uid)


# -- the job's own process ----------------------------------------------------------------------


def exec_job(request: Request, workdir: str, uid: int | None, tmpdir: str) -> None:
    """In the forked job process: limits, identity, then exec. Never returns."""
    try:
        enter_job(request, workdir, uid)
        argv = request["argv"]
        os.execve(argv[0], argv, {**request["env"], "HOME": workdir, "TMPDIR": tmpdir})
    except BaseException as exc:  # report why, on the job's own stderr
        cannot_start(exc)


def cannot_start(exc: BaseException) -> None:
    """Say why the job could not start, on its own stderr, and exit. Never returns."""
    os.write(2, f"gristmill sandbox: cannot start the job: {exc}\n".encode(errors="replace"))
    os._exit(START_FAILED)


def enter_job(request: Request, workdir: str, uid: int | None) -> None:
    """In the forked job process: its descriptors, directory, limits and identity."""
    keep = request["result_fd"]
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    _close_fds_except(keep)
    os.chdir(workdir)
    _set_limits(request["limits"])
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SandboxError("could not drop to the job's uid")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, mount, ...) gain nothing
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _close_fds_except(keep: int | None) -> None:
    """Close every descriptor above stderr but ``keep``: the job inherits nothing else."""
    high = os.sysconf("SC_OPEN_MAX")
    if keep is None:
        os.closerange(3, high)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, high)


def _set_limits(limits: dict[str, int]) -> None:
    mib = 1024 * 1024
    for which, value in (
        (resource.RLIMIT_AS, limits["memory_mb"] * mib),
        (resource.RLIMIT_NPROC, limits["max_procs"]),
        (resource.RLIMIT_FSIZE, limits["file_mb"] * mib),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))


# -- waiting ----------------------------------------------------------------------------------


def wait_for(pid: int, watch_fd: int) -> int | None:
    """Wait until ``pid`` exits (its wait status) or ``watch_fd`` reaches EOF (None)."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready, _, _ = select.select([pidfd, watch_fd], [], [])
            if pidfd in ready:
                return os.waitpid(pid, 0)[1]
            if not os.read(watch_fd, 4096):
                return None
    finally:
        os.close(pidfd)


def exit_like(status: int) -> None:
    """Exit the way the job did: the same exit code, or the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that does not kill: say so in the code
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def run_isolated(request: Request, watch_fd: int, start: StartJob = exec_job) -> None:
    _check(_libc.unshare(CLONE_NEWPID | namespace_flags(request)), "unshare")
    status_r, status_w = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(status_r)
        os.close(watch_fd)
        _init(request, status_w, start)
    os.close(status_w)
    if wait_for(init, watch_fd) is None:  # the worker is gone: so is the job
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)
        os._exit(1)
    report = os.read(status_r, 64)
    exit_like(int(report) if report else 1 << 8)


def _init(request: Request, status_w: int, start: StartJob) -> None:
    """PID 1 of the job's namespaces. Never returns; its exit ends every job process."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(PR_SET_DUMPABLE, 0)
        if _reader_gone(status_w):  # the launcher died before PDEATHSIG was armed
            os._exit(1)
        build_root(request["root"], request["binds"], request["shared_dirs"],
                   request["limits"]["disk_mb"], request["uid"])
        write_files(JOB_DIR, request["files"], request["uid"])
        status = supervise(request, start, status_w)
        os.write(status_w, str(status).encode())
        os._exit(0)
    except BaseException as exc:
        os.write(2, f"gristmill sandbox: cannot set up the job's sandbox: {exc}\n".encode())
        os.write(status_w, str(START_FAILED << 8).encode())
        os._exit(0)


def namespace_flags(request: Request) -> int:
    """The namespaces a job gets besides its PID namespace."""
    return JOB_NAMESPACES | CLONE_NEWNET if request["network"] == "none" else JOB_NAMESPACES


def enter_sandbox(request: Request) -> None:
    """In PID 1 of a new PID namespace (the warm path): the other namespaces and the private
    root with the job's files, still as root."""
    _prctl(PR_SET_DUMPABLE, 0)
    _check(_libc.unshare(namespace_flags(request)), "unshare")
    build_root(request["root"], request["binds"], request["shared_dirs"],
               request["limits"]["disk_mb"], request["uid"])
    write_files(JOB_DIR, request["files"], request["uid"])


def supervise(request: Request, start: StartJob, keep_fd: int = -1) -> int:
    """As PID 1: fork the job (``start``), reap every orphan until the job's main process
    ends; return its wait status."""
    job = os.fork()
    if job == 0:
        if keep_fd >= 0:
            os.close(keep_fd)
        start(request, JOB_DIR, request["uid"], "/tmp")
    while True:  # reap everything; the job's main process decides the end
        pid, status = os.wait()
        if pid == job:
            return status


def exit_as_pid1(status: int) -> None:
    """PID 1 ends like the job did, where it can: a signal it cannot die of becomes
    ``128 + SIG`` (see ``forkserver.pid1_status``). Never returns."""
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else
             os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _reader_gone(write_fd: int) -> bool:
    """True when nobody holds the read end of the pipe ``write_fd`` writes to."""
    poller = select.poll()
    poller.register(write_fd, 0)  # POLLERR is reported whatever the mask
    return any(event & select.POLLERR for _, event in poller.poll(0))


def run_shared(request: Request, watch_fd: int, start: StartJob = exec_job) -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # detached descendants become our children
    workdir = tempfile.mkdtemp(prefix="gristmill-job-")
    try:
        write_files(workdir, request["files"], None)
        job = os.fork()
        if job == 0:
            os.close(watch_fd)
            start(request, workdir, None, workdir)
        status = wait_for(job, watch_fd)
        if status is None:
            os.kill(job, signal.SIGKILL)
        _kill_descendants()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    exit_like(status if status is not None else 1 << 8)


def _kill_descendants() -> None:
    """SIGKILL and reap every child until none is left (orphans keep arriving)."""
    me = str(os.getpid())
    while True:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _parent_of(entry) == me:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)
        try:
            os.wait()
        except ChildProcessError:
            return


def _parent_of(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[1].decode()
    except (OSError, IndexError):
        return None


def probe(root: str) -> None:
    """Isolated mode works here: namespaces, mounts and a uid change in a throwaway child."""
    request: Request = {
        "mode": "isolated", "argv": ["/bin/true"], "env": {}, "files": {}, "uid": 65534,
        "network": "host", "binds": ["/usr", "/bin", "/lib", "/lib64"], "shared_dirs": [],
        "root": root,
        "result_fd": None,
        "limits": {"memory_mb": 256, "max_procs": 16, "file_mb": 1, "open_files": 64, "disk_mb": 1},
    }
    request["binds"] = [p for p in request["binds"] if os.path.lexists(p)]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_fd)
        try:
            run_isolated(request, read_fd)
        except BaseException as exc:
            os.write(2, f"{exc}\n".encode())
            os._exit(1)
    os.close(read_fd)
    status = os.waitpid(pid, 0)[1]
    os.close(write_fd)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)


def main() -> None:
    # Signals are for the job: the worker's SIGTERM goes to the whole process
    # group, and only its SIGKILL may end the launcher.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.argv[1:2] == ["--probe"]:
        probe(sys.argv[2])
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        request = read_request(0)
        runner = run_isolated if request["mode"] == "isolated" else run_shared
        runner(request, 0)
    except SandboxError as exc:
        os.write(2, f"gristmill sandbox: {exc}\n".encode())
        os._exit(START_FAILED)


if __name__ == "__main__":
    main()
