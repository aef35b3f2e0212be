"""The jobs' root, built once per fork server and copied per job (the warm path's fast root).

``launch.build_root`` lays out a job's private root from scratch: a tmpfs, two
mounts per read-only bind, the devices, /proc; about 50 mount calls per job. The
fork server instead builds that layout once, at start, in a mount namespace of
its own (``make``): the same tmpfs and binds, then ``pivot_root`` into it, so
that namespace holds the jobs' root and nothing of the host, and the root
itself is remounted read-only. The server keeps a descriptor on it.

A job's PID 1 whose request asks for exactly that root (same root, binds and
shared directories: a job with a locked environment has binds of its own and
gets ``build_root``) joins that namespace and at once unshares a copy of it
(``enter``), so nothing it mounts reaches the template or another job. In the
copy it mounts what is the job's alone: one tmpfs of ``disk_mb`` holding its
``/tmp``, ``/dev/shm`` and ``/job`` (so the three share one budget, as they
share the private root's tmpfs in ``build_root``), and its own ``/proc``.
Binds and shared directories under ``/tmp`` (a checkout in /tmp, say) would be
hidden by the job's tmpfs: they are cloned from the template copy before it is
covered (``open_tree``) and put back on top (``move_mount``).

What a job sees is what ``build_root`` gives it, but stricter in two ways: its
root is read-only (nobody but root could write there anyway), and its mount
namespace holds nothing of the host's. ``enter`` is ``prepare`` (what needs no
request: the fork server's spare job process does it ahead of its job) and
``finish`` (the job's network namespace, disk budget, directory owner, files).
"""

from __future__ import annotations

import contextlib
import os

from worker.sandbox import launch

# System call numbers: pivot_root differs by architecture; open_tree and move_mount
# (Linux 5.2) have the same number everywhere.
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
_OPEN_TREE, _MOVE_MOUNT = 428, 429
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_RECURSIVE = 1, 0o2000000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MNT_DETACH = 2
TEMPLATE_SIZE = "size=1m,mode=0755"  # directories and mount points only: read-only once built
SCRATCH = "/tmp"  # the job's tmpfs is mounted here; its /tmp, /dev/shm and /job lie in it
# The job's own directories inside its tmpfs: (name, mode, mounted on).
_OWN_DIRS = ((".job", 0o700, launch.JOB_DIR), (".shm", 0o1777, "/dev/shm"), (".tmp", 0o1777, "/tmp"))
# Each job gets its own of these: no bind may be one of them or lie under one (but /tmp).
_OWN_TREES = ("/", SCRATCH, "/dev", "/proc", launch.JOB_DIR)

Spec = dict[str, object]  # {"root": str, "binds": [str], "shared_dirs": [str], "disk_mb": int}


def spec(root: str, binds: tuple[str, ...] | list[str], shared_dirs: tuple[str, ...] | list[str],
         disk_mb: int) -> Spec:
    """What a template is built from, and what a request must ask for to use it (all but
    ``disk_mb``: the size a spare job process gives its tmpfs before it knows its job's)."""
    return {"root": root, "binds": list(binds), "shared_dirs": list(shared_dirs),
            "disk_mb": disk_mb}


def matches(template: Spec, request: launch.Request) -> bool:
    """Whether ``request`` asks for exactly the root ``template`` was built from."""
    return all(request[key] == template[key] for key in ("root", "binds", "shared_dirs"))


def make(template: Spec) -> int:
    """Build the template in a throwaway process and prepare one job's root from it in
    another; a descriptor on its mount namespace.

    Raises ``launch.SandboxError`` (with the reason) when it cannot be built or used here
    (a seccomp profile without ``setns``, a tmpfs size the kernel refuses); the caller then
    builds every job's root from scratch rather than failing every job.
    """
    fd = _build_in_child(template)
    try:
        _try(fd, template)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _try(template_fd: int, template: Spec) -> None:
    """``prepare`` once, in a throwaway child, before any job relies on it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            prepare(template_fd, template)
        except BaseException as exc:
            os.write(write_fd, str(exc).encode(errors="replace") or b"failed")
            os._exit(1)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reason:
        problem = reason.read()
    status = os.waitpid(pid, 0)[1]
    if status != 0:
        raise launch.SandboxError("a job's root could not be prepared from the template: "
                                  f"{problem.decode(errors='replace') or f'status {status}'}")


def _build_in_child(template: Spec) -> int:
    """Build the template in a throwaway process; a descriptor on its mount namespace."""
    if _PIVOT_ROOT is None:
        raise launch.SandboxError(f"no pivot_root system call number for {os.uname().machine}")
    paths = [*_strs(template["binds"]), *_strs(template["shared_dirs"])]
    for path in paths:
        if path in _OWN_TREES or any(_under(path, top) for top in _OWN_TREES[2:]):
            raise launch.SandboxError(f"{path} is, or lies under, a directory each job gets "
                                      "its own of")
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the builder: lays the root out in its namespace and holds it until opened
        try:
            os.close(ready_r)
            os.close(done_w)
            _build(str(template["root"]), _strs(template["binds"]), _strs(template["shared_dirs"]))
            os.write(ready_w, b"ok")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(ready_w, str(exc).encode(errors="replace") or b"failed")
        with contextlib.suppress(OSError):
            os.read(done_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        answer = os.read(ready_r, 4096)
        if answer != b"ok":
            raise launch.SandboxError("cannot build the jobs' root template: "
                                      f"{answer.decode(errors='replace') or 'its builder died'}")
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)  # the builder exits; the namespace lives on in the descriptor
        os.waitpid(pid, 0)


def _build(root: str, binds: list[str], shared_dirs: list[str]) -> None:
    launch._check(launch._libc.unshare(launch.CLONE_NEWNS), "unshare")
    launch.lay_out_root(root, binds, shared_dirs, TEMPLATE_SIZE)
    for path in (launch.JOB_DIR, SCRATCH, "/dev/shm"):  # mount points, filled per job
        os.makedirs(root + path, exist_ok=True)
    put_old = root + "/.host"
    os.mkdir(put_old)
    launch._check(launch._libc.syscall(_PIVOT_ROOT, root.encode(), put_old.encode()), "pivot_root")
    os.chdir("/")
    launch._check(launch._libc.umount2(b"/.host", MNT_DETACH), "umount the host's root")
    os.rmdir("/.host")
    launch._mount("none", "/", None, launch.MS_REMOUNT | launch.MS_BIND | launch.MS_RDONLY
                  | launch.MS_NOSUID | launch.MS_NODEV)
    for _, tree in _clone_under_scratch([*binds, *shared_dirs]):  # open_tree works here (5.2+)
        os.close(tree)


def enter(request: launch.Request, template_fd: int, template: Spec) -> None:
    """In a job's PID 1, as root: a private copy of the template plus the job's own mounts
    (``launch.enter_sandbox``'s result, from the template). Closes ``template_fd``."""
    prepare(template_fd, template)
    finish(request, template)


def prepare(template_fd: int, template: Spec) -> None:
    """What ``enter`` does before it needs the request: the copy, the job's tmpfs (of the
    template's ``disk_mb``) and /proc. A spare job process does it ahead of its job."""
    launch._prctl(launch.PR_SET_DUMPABLE, 0)
    launch._check(launch._libc.setns(template_fd, launch.CLONE_NEWNS), "setns")  # its root is ours
    os.close(template_fd)
    launch._check(launch._libc.unshare(launch.JOB_NAMESPACES), "unshare")
    hidden = _clone_under_scratch([*_strs(template["binds"]), *_strs(template["shared_dirs"])])
    launch._mount("tmpfs", SCRATCH, "tmpfs", launch.MS_NOSUID | launch.MS_NODEV,
                  f"size={template['disk_mb']}m,mode=0700")
    for name, mode, _ in _OWN_DIRS:
        os.mkdir(f"{SCRATCH}/{name}", mode)
        os.chmod(f"{SCRATCH}/{name}", mode)  # mkdir's mode is masked by the umask
    for name, _, target in _OWN_DIRS:  # /tmp last: it covers the tmpfs's top
        launch._mount(f"{SCRATCH}/{name}", target, None, launch.MS_BIND)
    for path, tree in hidden:
        os.makedirs(path, exist_ok=True)
        launch._check(launch._libc.syscall(_MOVE_MOUNT, tree, b"", AT_FDCWD, path.encode(),
                                           MOVE_MOUNT_F_EMPTY_PATH), f"move_mount {path}")
        os.close(tree)
    launch._mount("proc", "/proc", "proc", launch.MS_NOSUID | launch.MS_NODEV | launch.MS_NOEXEC)
    os.chdir("/")


def finish(request: launch.Request, template: Spec) -> None:
    """The rest of ``enter``, once the request is read: its network namespace, its disk
    budget, its directory's owner and files."""
    if not matches(template, request):  # the worker said it would: a bug, not a job's doing
        raise launch.SandboxError("the job's root is not the one this process prepared")
    if launch.namespace_flags(request) & launch.CLONE_NEWNET:
        launch._check(launch._libc.unshare(launch.CLONE_NEWNET), "unshare")
    disk_mb = request["limits"]["disk_mb"]
    if disk_mb != template["disk_mb"]:  # the three directories' tmpfs, through one of its mounts
        launch._mount("none", launch.JOB_DIR, None,
                      launch.MS_REMOUNT | launch.MS_NOSUID | launch.MS_NODEV, f"size={disk_mb}m")
    uid = request["uid"]
    os.chown(launch.JOB_DIR, uid, uid)
    launch.write_files(launch.JOB_DIR, request["files"], uid)


def _clone_under_scratch(paths: list[str]) -> list[tuple[str, int]]:
    """Detached copies of the template's mounts under ``SCRATCH``, outermost first."""
    trees: list[tuple[str, int]] = []
    for path in sorted(p for p in paths if _under(p, SCRATCH)):
        if any(_under(path, outer) for outer, _ in trees):
            continue  # came along with the outer one (AT_RECURSIVE)
        tree = launch._libc.syscall(_OPEN_TREE, AT_FDCWD, path.encode(),
                                    OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
        if tree < 0:
            launch._check(-1, f"open_tree {path}")
        trees.append((path, tree))
    return trees


def _under(path: str, top: str) -> bool:
    return path.startswith(top.rstrip("/") + "/")


def _strs(value: object) -> list[str]:
    assert isinstance(value, list)
    return [str(v) for v in value]

