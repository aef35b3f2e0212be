"""Dedicated workers: a script kept imported in a long-lived sandboxed process, ``main`` per job.

``gristmill worker --dedicated u/alice/fast`` hands every job of that script
(by path; any version) to a :class:`DedicatedProcess`: the program
``worker/executors/dedicated.py`` started through the very sandbox a job gets
(``ProcessRun``: its own uid, namespaces, private root, limits; no Redis
credentials, no secret of the worker), with the version's code as its
``main.py``. It imports the script once and then runs each job it is sent on
a socket, so module state persists between the jobs of that script, and of
that script only. Jobs of other scripts run the ordinary way.

* **Processes.** A sync ``main`` runs one job at a time in a process, so a
  version gets a process per job running at once, up to
  ``--dedicated-processes`` (default: the worker's ``--concurrency``), each
  its own interpreter and module state, started when a job finds every
  process busy, and stopped (all but the first) after ``IDLE_S`` unused. An
  ``async def main`` gets one process whose event loop runs every job it is
  sent. Where the next job goes: ``worker/dedicated_plan.py``.
* **Versions.** A process runs one version (hash). A job of a newer version
  starts a process for it; the older ones are *draining*: they take no new
  job and are stopped when their last job ends.
* **Threads.** With ``--dedicated-threads N`` a process runs up to N jobs of
  a sync ``main`` at once on as many threads.
* **Timeouts and cancels.** An ``async def main`` job is canceled inside the
  process (``CancelledError``). A sync job cannot be interrupted there: the
  process is killed (SIGTERM, then SIGKILL) and restarted for the next job,
  and any other job it held fails with ``SandboxLost``. A job over its timeout
  kills the process the same way.
* **The process dies** (its own crash, out of memory, killed): its jobs fail
  with ``SandboxLost`` naming the exit and the last stderr lines; the next
  job starts a new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from common import log
from worker.dedicated_plan import START, is_async_main, place, surplus
from worker.dedicated_process import DedicatedProcess, Unavailable
from worker.executors.outcome import Outcome
from worker.jobprocess import LogLine, LogSink
from worker.sandbox.policy import Limits, Sandbox

IDLE_S = 300.0  # a version's processes beyond its first are stopped after this long unused
TIDY_EVERY_S = 30.0


class Cancel:
    """What the runner cancels a dedicated job through (as it cancels a ProcessRun)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def cancel(self) -> None:
        self.event.set()


class DedicatedPool:
    """The dedicated processes of one worker: up to ``processes`` per script version in use.

    A sync ``main`` gets a process per job running at once (up to ``processes``,
    the worker's concurrency by default), each its own interpreter with its own
    module state, as in a prefork pool; with ``threads`` > 1 a process takes that
    many jobs at once. An ``async def main`` gets one process: its event loop
    takes every job. Processes start when a job finds none with room
    (``worker/dedicated_plan.py``), and stay until the worker stops, a newer
    version drains them, they die, or (all but a version's first) they go unused
    for ``idle_s``.
    """

    def __init__(self, paths: tuple[str, ...], sandbox: Sandbox, env: dict[str, str],
                 tags: tuple[str, ...] = (), threads: int = 1, processes: int = 1,
                 idle_s: float = IDLE_S) -> None:
        self.threads = threads  # a sync main's jobs at once in one process
        self.processes = max(1, processes)  # processes per script version at most
        self.paths = frozenset(paths)
        self.tags = frozenset(tags)
        self.sandbox = sandbox
        self.env = env
        self._processes: dict[str, list[DedicatedProcess]] = {}  # hash -> processes, by age
        self._lock = threading.Lock()
        self.log = log.get(process="worker")
        self.idle_s = idle_s
        self._closed = threading.Event()
        threading.Thread(target=self._tidy, daemon=True, name="gristmill-dedicated-tidy").start()

    def handles(self, script_path: str | None, tag: str) -> bool:
        """Whether a script job of this path and tag runs dedicated here."""
        return script_path is not None and (script_path in self.paths or tag in self.tags)

    def run(self, *, script_path: str, script_hash: str, code: Callable[[], tuple[str, Limits]],
            job_id: str, args: dict[str, Any], env: dict[str, str], timeout_s: float,
            sink: LogSink, cancel: threading.Event) -> Outcome:
        """Run one job of a dedicated script in a process of its version (started if need be)."""
        process = self._take(script_path, script_hash, code)
        try:
            process.wait_ready()
            return process.run(job_id, args, env, timeout_s, sink, cancel)
        except Unavailable as exc:
            return exc.outcome
        finally:
            with self._lock:
                process.load -= 1
                if process.load == 0:
                    process.idle_since = time.monotonic()
                dropped = process.load == 0 and \
                    process not in self._processes.get(script_hash, ())
            if dropped:  # it died, or the worker closed the pool, while this job was in it
                process.release()
            if process.draining or not process.alive:
                self._retire()  # at once; a surplus process waits for the tidy thread

    def _take(self, path: str, digest: str,
              code: Callable[[], tuple[str, Limits]]) -> DedicatedProcess:
        """A process of this version for one more job, its place counted in its load."""
        with self._lock:
            process = self._placed(digest)
            if process is not None:
                return process
        source, limits = code()  # outside the lock: it may read Redis
        with self._lock:
            process = self._placed(digest)  # another job may have started one meanwhile
            if process is not None:
                return process
            for other_hash, others in self._processes.items():
                if other_hash != digest:
                    for other in others:
                        if other.path == path:
                            other.draining = True  # a newer version is here: let it drain
            process = self._start(path, digest, source, limits)
            process.load += 1
            return process

    def _placed(self, digest: str) -> DedicatedProcess | None:
        """The live process of ``digest`` that takes the next job, its load counted; None
        when a new one should start. Called with the lock held."""
        live = [p for p in self._processes.get(digest, ()) if p.alive]
        if not live:
            return None
        room = None if live[0].is_async else self.threads
        index = place([p.load for p in live], room, self.processes)
        if index == START:
            return None
        live[index].load += 1
        return live[index]

    def _start(self, path: str, digest: str, source: str, limits: Limits) -> DedicatedProcess:
        plog = self.log.bind(script_path=path, script_hash=digest)

        def on_output(lines: list[LogLine]) -> None:
            for line in lines:
                plog.info("dedicated process output", stream=line.stream, line=line.line)

        process = DedicatedProcess(path=path, script_hash=digest, code=source,
                                   sandbox=self.sandbox, limits=limits, env=self.env,
                                   on_output=on_output, threads=self.threads)
        process.is_async = is_async_main(source)
        siblings = [p for p in self._processes.get(digest, ()) if p.alive]
        self._processes[digest] = [*siblings, process]
        plog.info("dedicated process started", processes=len(siblings) + 1)
        return process

    def _tidy(self) -> None:
        """Stop the surplus processes a burst started, once unused for ``idle_s``."""
        while not self._closed.wait(min(TIDY_EVERY_S, self.idle_s)):
            self._retire()

    def _retire(self) -> None:
        """Stop the processes that are dead, drained (an old version with no job left), or
        surplus (not a version's first, unused for ``idle_s``)."""
        now = time.monotonic()
        with self._lock:
            retired: list[DedicatedProcess] = []
            for digest, processes in list(self._processes.items()):
                live = [p for p in processes if p.alive]
                idle = set(surplus([p.load for p in live], [now - p.idle_since for p in live],
                                   self.idle_s))
                kept = [p for i, p in enumerate(live)
                        if i not in idle and not (p.draining and p.load == 0)]
                retired += [p for p in processes if p not in kept]
                if kept:
                    self._processes[digest] = kept
                else:
                    del self._processes[digest]
        for process in retired:
            if process.alive:
                self.log.info("dedicated process drained; stopped" if process.draining else
                              "dedicated process unused; stopped",
                              script_hash=process.script_hash)
                process.stop()
            if process.load == 0:  # else the last of its jobs releases it
                process.release()

    def close(self) -> None:
        """Stop every process (the worker is stopping)."""
        self._closed.set()
        with self._lock:
            processes = [p for group in self._processes.values() for p in group]
            self._processes.clear()
        for process in processes:
            process.stop()
            if process.load == 0:  # else the last of its jobs releases it
                process.release()
