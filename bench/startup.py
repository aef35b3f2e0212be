"""Interpreter start-up cost: what every python3 job pays before ``main`` runs.

Measured without Redis and before the fleet starts (the machine is otherwise
idle), as medians over ``reps`` runs of wall time from spawn to reap:

* ``python -c pass`` - this interpreter with its site-packages, for reference;
* ``python -I -S -c pass`` - the floor: no site, no environment;
* ``python -u -P -m worker.executors.pywrapper main.py args.json`` for a no-op
  ``main``, spawned directly with its result pipe on fd 3 (the job's own
  interpreter: start-up, wrapper imports, binding, running main, reporting);
* the worker's whole spawn path, ``worker.jobprocess.ProcessRun`` on what
  ``worker.executors.python3.prepare`` returns: the sandbox launcher, the job
  interpreter with its result pipe, plus the reader and log threads. This is
  what a job's ``duration_ms`` consists of for a no-op job, minus Redis. It is
  measured in the ``shared`` sandbox and, where the machine allows it, in the
  ``isolated`` one: the difference is the per-job cost of isolation;
* the same spawn path warm: the job forked from the worker's fork server
  (``worker/sandbox/warm.py``) and ``main`` run in the forked process, shared
  and isolated. The server is started once, before the first round.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.jobs import job_code
from bench.stats import median
from common.errors import ConfigError
from common.models import Job, Kind, Status
from worker.environment import job_environment
from worker.executors import python3
from worker.jobprocess import LogLine, ProcessRun
from worker.sandbox.policy import Limits, Sandbox, choose
from worker.sandbox.warm import ForkServer


@dataclass(frozen=True)
class StartupFigures:
    """Median wall times in ms of the spawns described in the module docstring."""

    reps: int
    python_pass_ms: float
    python_isolated_pass_ms: float
    pywrapper_noop_ms: float
    worker_spawn_path_ms: float  # in the shared sandbox
    isolated_spawn_path_ms: float | None  # in the isolated sandbox; None where unavailable
    warm_spawn_path_ms: float | None = None  # forked from the fork server, shared sandbox
    warm_isolated_spawn_path_ms: float | None = None  # the same, isolated sandbox

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _spawn_wait(argv: list[str], env: dict[str, str], result_fd: int | None = None) -> float:
    """Spawn ``argv`` (stdio on /dev/null, ``result_fd`` on fd 3), reap it; wall ms."""
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    if result_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, result_fd, 3))
    started = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with status {status}")
    return elapsed


def _pywrapper_once(workdir: Path, env: dict[str, str]) -> float:
    prepared = python3.prepare(job_code(0), {})
    for name, text in prepared.files.items():
        (workdir / name).write_text(text)
    argv = [str(workdir / arg) if arg in prepared.files else arg for arg in prepared.argv]
    read_fd, write_fd = os.pipe()
    try:
        elapsed = _spawn_wait(argv, env, result_fd=write_fd)
        os.close(write_fd)
        write_fd = -1
        report = json.loads(os.read(read_fd, 65536))
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if report.get("ok") is not True:
        raise RuntimeError(f"pywrapper did not run the no-op job: {report}")
    return elapsed


def _worker_path_once(sandbox: Sandbox, env: dict[str, str]) -> float:
    def sink(lines: list[LogLine]) -> None:
        return None

    prepared = python3.prepare(job_code(0), {})
    started = time.perf_counter()
    result = ProcessRun(prepared, sandbox=sandbox, env=env, timeout_s=60, sink=sink).run()
    elapsed = (time.perf_counter() - started) * 1000
    if result.exit_code != 0 or not result.payload:
        raise RuntimeError(f"worker spawn path failed: {result}")
    return elapsed


def _isolated_sandbox() -> Sandbox | None:
    """The isolated sandbox where this machine allows it (root on Linux), else None."""
    try:
        return choose(Limits(), "host", unsafe_shared_user=False)
    except ConfigError:
        return None


def measure_startup(reps: int) -> StartupFigures:
    """Run each spawn ``reps`` times (after one warm-up each); return the medians."""
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-startup-") as tmp:
        workdir = Path(tmp)
        job = Job(id="00000000-0000-0000-0000-000000000000", kind=Kind.PREVIEW,
                  status=Status.RUNNING, tag="python3", group="default", language="python3",
                  scheduled_for=0, created_at=0)
        env = job_environment(job, base_url="http://127.0.0.1:8000", token="bench")
        exe = sys.executable
        shared = Sandbox("shared", Limits())
        server = ForkServer.start()
        warm = dataclasses.replace(shared, server=server)
        spawns = ["pass", "isolated", "wrapper", "path", "warm"]
        isolated = _isolated_sandbox()
        warm_isolated = isolated.warm() if isolated is not None else None  # PID-1 forks
        if isolated is not None:
            spawns += ["sandboxed", "warm_sandboxed"]
        figures: dict[str, list[float]] = {k: [] for k in spawns}
        for i in range(reps + 1):  # the first round warms the page cache and is dropped
            round_ = {
                "pass": _spawn_wait([exe, "-c", "pass"], env),
                "isolated": _spawn_wait([exe, "-I", "-S", "-c", "pass"], env),
                "wrapper": _pywrapper_once(workdir, env),
                "path": _worker_path_once(shared, env),
            }
            round_["warm"] = _worker_path_once(warm, env)
            if isolated is not None:
                round_["sandboxed"] = _worker_path_once(isolated, env)
                assert warm_isolated is not None
                round_["warm_sandboxed"] = _worker_path_once(warm_isolated, env)
            if i > 0:
                for key, value in round_.items():
                    figures[key].append(value)
        server.close()
        if warm_isolated is not None and warm_isolated.server is not None:
            warm_isolated.server.close()
    return StartupFigures(
        reps=reps,
        python_pass_ms=median(figures["pass"]),
        python_isolated_pass_ms=median(figures["isolated"]),
        pywrapper_noop_ms=median(figures["wrapper"]),
        worker_spawn_path_ms=median(figures["path"]),
        isolated_spawn_path_ms=median(figures["sandboxed"]) if "sandboxed" in figures else None,
        warm_spawn_path_ms=median(figures["warm"]),
        warm_isolated_spawn_path_ms=(median(figures["warm_sandboxed"])
                                     if "warm_sandboxed" in figures else None),
    )
