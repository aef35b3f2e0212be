"""The warm fork server's cost per job, alone (no worker, no Redis), split into its steps.

Run as root: ``python -m bench.spawn [--reps N]``. Two parts:

* **Steps**, forked from this process, which imports what the fork server imports
  and freezes it as the server does. Each row is a child doing one more step of an
  isolated job than the row before (or one namespace flag alone), then ``_exit``:
  fork; fork as PID 1 of a new PID namespace (``unshare(CLONE_NEWPID)`` before the
  fork, as the server does); each other namespace flag alone; all of them; the
  private root (tmpfs, read-only binds, /proc, /dev: its mount count is printed);
  the job's files; limits and the uid change (``enter_job``); and a no-op python3
  job run in the process (the wrapper, binding, ``main``, the result written).
  Then the python3 job's process alone, by phase: its CPU ms and minor (mostly
  copy-on-write) page faults (``getrusage`` marks in the child; the exit is the
  rest of what ``wait4`` reports).
  Per row: median wall ms from fork to reap, and mean CPU ms of the child and
  what it waited for (``wait4``'s rusage). Namespace teardown done later by
  kernel threads (a network namespace's) is in neither: the ``host CPU`` column
  is the whole machine's busy time per rep (``/proc/stat``), noisy on a shared
  machine, but the only place that cost shows.
* **Server round trip**: ``ForkServer.spawn`` of a no-op python3 job and a
  ``true`` bash job, with the server handing each job to a PID-1 process it forked
  ahead from its root template (this design, ``template.py``), forking PID-1 jobs
  that build their root, and a launcher per job (``pid1=False``), alternated:
  median wall
  ms from spawn to exit, and CPU ms per job of the server and its jobs
  (``/proc/PID/stat``: its own time and its reaped children's).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.stats import median
from worker.executors import pywrapper
from worker.sandbox import forkserver, launch, template
from worker.sandbox.policy import Limits, Sandbox, sandbox_root, visible_paths
from worker.sandbox.warm import ForkServer

NOOP = "def main():\n    return None\n"
ROUNDS = 5
TICKS = os.sysconf("SC_CLK_TCK")


def _request(sandbox: Sandbox, argv: list[str], inprocess: bool) -> dict[str, Any]:
    import json

    body = sandbox.request(argv, {"PATH": "/usr/bin:/bin"}, {"main.py": NOOP, "args.json": "{}"},
                           forkserver.RESULT_FD, inprocess=inprocess)
    request: dict[str, Any] = json.loads(body[4:])
    return request


def _python_argv() -> list[str]:
    return [sys.executable, "-u", "-P", "-m", "worker.executors.pywrapper",
            f"{launch.JOB_DIR}/main.py", f"{launch.JOB_DIR}/args.json", str(forkserver.RESULT_FD)]


def _host_busy_ticks() -> int:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _steps(request: dict[str, Any]) -> list[tuple[str, int, Callable[[], None]]]:
    """(name, extra clone flags for the child, what the child does after the fork)."""
    flags = launch.CLONE_NEWNS | launch.CLONE_NEWIPC | launch.CLONE_NEWUTS

    def unshare(flag: int) -> Callable[[], None]:
        return lambda: launch._check(launch._libc.unshare(flag), "unshare")

    def root() -> None:
        unshare(flags)()
        launch.build_root(request["root"], request["binds"], [], 64, request["uid"])

    def files() -> None:
        root()
        launch.write_files(launch.JOB_DIR, request["files"], request["uid"])

    def uid() -> None:
        files()
        launch.enter_job(request, launch.JOB_DIR, request["uid"])

    def python_job() -> None:
        files()
        forkserver.start_job(request, launch.JOB_DIR, request["uid"], "/tmp")

    return [
        ("fork + exit", 0, lambda: None),
        ("fork as PID 1 (NEWPID)", launch.CLONE_NEWPID, lambda: None),
        ("  + NEWNS", launch.CLONE_NEWPID, unshare(launch.CLONE_NEWNS)),
        ("  + NEWIPC", launch.CLONE_NEWPID, unshare(launch.CLONE_NEWIPC)),
        ("  + NEWUTS", launch.CLONE_NEWPID, unshare(launch.CLONE_NEWUTS)),
        ("  + NEWNET", launch.CLONE_NEWPID, unshare(launch.CLONE_NEWNET)),
        ("  + NEWNS|NEWIPC|NEWUTS", launch.CLONE_NEWPID, unshare(flags)),
        ("  + NEWNS|NEWIPC|NEWUTS|NEWNET", launch.CLONE_NEWPID,
         unshare(flags | launch.CLONE_NEWNET)),
        ("  + private root", launch.CLONE_NEWPID, root),
        ("  + job files", launch.CLONE_NEWPID, files),
        ("  + limits, uid (enter_job)", launch.CLONE_NEWPID, uid),
        ("  + no-op python3 job in-process", launch.CLONE_NEWPID, python_job),
    ]


def _time_step(pidns: int, clone: int, body: Callable[[], None], reps: int,
               result_fd: int) -> tuple[float, float, float]:
    walls, cpu = [], 0.0
    busy = _host_busy_ticks()
    for _ in range(reps):
        start = time.perf_counter()
        if clone:
            launch._check(launch._libc.unshare(clone), "unshare")
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(result_fd, forkserver.RESULT_FD)
                body()
            except BaseException as exc:
                os.write(2, f"step failed: {exc}\n".encode())
                os._exit(1)
            os._exit(0)
        if clone:
            launch._check(launch._libc.setns(pidns, launch.CLONE_NEWPID), "setns")
        _, status, usage = os.wait4(pid, 0)
        walls.append((time.perf_counter() - start) * 1000)
        if status != 0:
            raise SystemExit(f"a step's child failed (status {status})")
        cpu += (usage.ru_utime + usage.ru_stime) * 1000
    host = (_host_busy_ticks() - busy) * 1000 / TICKS
    return median(walls), cpu / reps, host / reps


def _job_phases(request: dict[str, Any], pidns: int, reps: int, result_fd: int) -> None:
    """Print the PID-1 python3 job's own CPU ms and minor faults by phase, means of ``reps``."""
    totals: dict[str, list[float]] = {}
    for _ in range(reps):
        read_fd, write_fd = os.pipe()
        launch._check(launch._libc.unshare(launch.CLONE_NEWPID), "unshare")
        pid = os.fork()
        if pid == 0:
            os.dup2(result_fd, forkserver.RESULT_FD)
            os.dup2(write_fd, 1)  # enter_job keeps 0-2 and the result descriptor only
            _phases_in_child(request)
        launch._check(launch._libc.setns(pidns, launch.CLONE_NEWPID), "setns")
        os.close(write_fd)
        _, _, usage = os.wait4(pid, 0)
        with os.fdopen(read_fd) as report:
            marks = [line.split("\t") for line in report.read().splitlines()]
        previous_ms, previous_faults = 0.0, 0
        for name, ms, faults in marks:
            entry = totals.setdefault(name, [0.0, 0.0])
            entry[0] += float(ms) - previous_ms
            entry[1] += int(faults) - previous_faults
            previous_ms, previous_faults = float(ms), int(faults)
        entry = totals.setdefault("exit (the rest of wait4's CPU)", [0.0, 0.0])
        entry[0] += (usage.ru_utime + usage.ru_stime) * 1000 - previous_ms
        entry[1] += usage.ru_minflt - previous_faults
    print(f"{'python3 job as PID 1, by phase':40} {'CPU ms':>8} {'minflt':>7}")
    for phase, (cpu_ms, minflt) in totals.items():
        print(f"{phase:40} {cpu_ms / reps:8.2f} {minflt / reps:7.0f}")


def _phases_in_child(request: dict[str, Any]) -> None:
    """The PID-1 python3 job's steps (as ``forkserver._pid1_job``), marked. Never returns."""
    lines = []

    def mark(name: str) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        lines.append(f"{name}\t{(usage.ru_utime + usage.ru_stime) * 1000}\t{usage.ru_minflt}")

    mark("after the fork")
    launch.enter_sandbox(request)
    mark("namespaces, private root, files")
    launch.enter_job(request, launch.JOB_DIR, request["uid"])
    mark("limits, uid (enter_job)")
    env = {**request["env"], "HOME": launch.JOB_DIR, "TMPDIR": "/tmp"}
    forkserver._as_fresh_interpreter(env)
    mark("as a fresh interpreter")
    code = pywrapper.main(["pywrapper", *request["argv"][-3:]])
    mark("the wrapper and main")
    forkserver._shutdown(code)
    mark("interpreter shutdown steps")
    os.write(1, "\n".join(lines).encode())
    os._exit(0)


def _mount_count(request: dict[str, Any], pidns: int) -> int:
    read_fd, write_fd = os.pipe()
    launch._check(launch._libc.unshare(launch.CLONE_NEWPID), "unshare")
    pid = os.fork()
    if pid == 0:
        launch._check(launch._libc.unshare(launch.CLONE_NEWNS), "unshare")
        launch.build_root(request["root"], request["binds"], [], 64, request["uid"])
        with open("/proc/self/mountinfo") as info:
            os.write(write_fd, str(sum(1 for line in info if " /job" not in line)).encode())
        os._exit(0)
    launch._check(launch._libc.setns(pidns, launch.CLONE_NEWPID), "setns")
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as counted:
        return int(counted.read())


def _server_cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) * 1000 / TICKS  # utime stime cutime cstime


def _round_trips(server: ForkServer, sandbox: Sandbox, argv: list[str], inprocess: bool,
                 reps: int) -> tuple[list[float], float]:
    """Wall ms of each job, and the server's and its jobs' CPU ms in all."""
    walls = []
    assert server.pid is not None
    before = _server_cpu_ms(server.pid)
    for _ in range(reps):
        start = time.perf_counter()
        request_r, request_w = os.pipe()
        out_r, out_w = os.pipe()
        result_r, result_w = os.pipe()
        job = server.spawn([request_r, out_w, out_w, result_w], templated=server.root is not None)
        for fd in (request_r, out_w, result_w):
            os.close(fd)
        os.write(request_w, sandbox.request(argv, {"PATH": "/usr/bin:/bin"},
                                            {"main.py": NOOP, "args.json": "{}"},
                                            forkserver.RESULT_FD, inprocess=inprocess))
        job.wait()
        walls.append((time.perf_counter() - start) * 1000)
        output = os.read(out_r, 4096)
        if job.returncode() != 0:
            raise SystemExit(f"a job failed: {job.returncode()} {output!r}")
        for fd in (request_w, out_r, result_r):
            os.close(fd)
    return walls, _server_cpu_ms(server.pid) - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spawn", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.spawn needs root (namespaces, mounts, a uid change)")
    sandbox = Sandbox("isolated", Limits(), "host", visible_paths(), sandbox_root())
    request = _request(sandbox, _python_argv(), inprocess=True)
    print(f"load: {os.getloadavg()}  reps: {args.reps}  python: {sys.version.split()[0]}")
    pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    print(f"mounts in a job's namespace after the private root: {_mount_count(request, pidns)} "
          f"({len(request['binds'])} binds)")
    gc.freeze()  # as the server does
    _, result_w = os.pipe()
    print(f"{'step (child)':40} {'wall ms':>8} {'CPU ms':>7} {'host CPU ms':>12}")
    for name, clone, body in _steps(request):
        wall, cpu, host = _time_step(pidns, clone, body, args.reps, result_w)
        print(f"{name:40} {wall:8.2f} {cpu:7.2f} {host:12.2f}")
    _job_phases(request, pidns, args.reps, result_w)
    print(f"{'server round trip':60} {'wall ms':>8} {'CPU ms':>7}")
    root = template.spec(sandbox.root, sandbox.binds, sandbox.shared_dirs, sandbox.limits.disk_mb)
    servers = {"spare PID 1, root template (this design)": ForkServer.start(pid1=True, root=root),
               "PID-1 fork, root built per job": ForkServer.start(pid1=True),
               "launcher per job": ForkServer.start(pid1=False)}
    for kind, job_argv, inprocess in (("python3 no-op", _python_argv(), True),
                                      ("bash true", ["/bin/true"], False)):
        walls: dict[str, list[float]] = {name: [] for name in servers}
        spent_ms = dict.fromkeys(servers, 0.0)
        for _ in range(ROUNDS):  # alternated, so both see the same machine load
            for name, server in servers.items():
                some, spent = _round_trips(server, sandbox, job_argv, inprocess,
                                           max(1, args.reps // ROUNDS))
                walls[name] += some
                spent_ms[name] += spent
        for name in servers:
            print(f"{kind + ', ' + name:60} {median(walls[name]):8.2f} "
                  f"{spent_ms[name] / len(walls[name]):7.2f}")
    for server in servers.values():
        server.close()


if __name__ == "__main__":
    main()
