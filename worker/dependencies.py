"""What the worker does about Python dependencies: lock jobs, inline locks, environments.

* A ``dependencies`` job runs ``uv pip compile`` in the job's sandbox (the
  requirements are the user's input), with the find-links directories shown
  read-only; its logs are uv's output. The lock, checked, is stored on the
  script version before the job completes; a failure marks the version
  ``failed`` and the job's error says what to fix.
* A python3 job gets the environment of its version's lock (waiting for a
  lock still being made, up to its own timeout), installed once per host
  (``deps/environments.py``), shown read-only in its sandbox and put on its
  ``PYTHONPATH``. A lock without packages costs nothing: no environment.
* A preview with third-party imports is resolved inline (in its own
  sandbox, bounded by the job's timeout), cached by requirement set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import JobTimeout, NotFound
from common.models import Job, Kind, ScriptVersion
from common.settings import Settings
from common.store import Store
from deps.environments import EnvironmentCache, InstallError
from deps.inference import RequirementsError, requirements
from deps.resolver import (
    REQUIREMENTS_FILE,
    IndexOptions,
    LockError,
    command,
    parse_lock,
    resolution_key,
    sandbox_env,
)
from jobs.scripts import ScriptStore
from storage.objects import ObjectStore
from worker.executors.command import Prepared, ProcessResult
from worker.executors.outcome import Outcome, failure, stderr_excerpt
from worker.jobprocess import LogLine, LogSink, ProcessRun
from worker.sandbox.policy import Sandbox

LOCK_CACHE_TTL_S = 3600


def uv_binary() -> str:
    """The uv executable the ``uv`` wheel installed beside this Python."""
    from uv import find_uv_bin

    return str(find_uv_bin())


@dataclass(frozen=True)
class JobDeps:
    """What a job's run needs from its dependencies: extra environment and visible paths."""

    env: dict[str, str]
    binds: tuple[str, ...] = ()


class DependencyFailure(Exception):
    """The job cannot run: its lock failed, is still pending, or cannot be installed."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


class Dependencies:
    """A worker's dependency handling (one per worker, thread-safe)."""

    def __init__(self, *, scripts: ScriptStore, store: Store, settings: Settings,
                 objects: ObjectStore | None = None) -> None:
        self.scripts = scripts
        self.store = store
        self.options = IndexOptions.from_settings(
            settings.pip_index_url, settings.pip_extra_index_url, settings.pip_find_links,
            settings.pip_no_index)
        root = settings.deps_dir or settings.data_dir / "deps"
        self.cache = EnvironmentCache(Path(root).resolve(), uv_binary(), self.options,
                                      remote=objects)

    # -- dependencies jobs -------------------------------------------------------------------

    def lock_plan(self, job: Job) -> tuple[Prepared, str]:
        """The resolver's command for a dependencies job, and the requirements it resolves."""
        version = self.scripts.by_hash(job.script_hash or "")
        try:
            wanted = requirements(version.code)
        except RequirementsError as exc:
            self.scripts.set_lock(version.hash, job.id, "failed")
            raise DependencyFailure(failure("InvalidRequirements", str(exc))) from None
        return self.resolver(wanted.text()), wanted.text()

    def resolver(self, requirements_text: str) -> Prepared:
        return Prepared(argv=command(self.cache.uv, self.options),
                        files={REQUIREMENTS_FILE: requirements_text}, env=sandbox_env(),
                        result_fd=True)

    def sandbox_for_resolver(self, sandbox: Sandbox) -> Sandbox:
        """The job's sandbox, with the local find-links directories shown read-only."""
        return _with_binds(sandbox, self.options.local_dirs())

    def finish_lock(self, job: Job, requirements_text: str, run: ProcessResult, *,
                    releasing: bool = False) -> Outcome:
        """Store the lock a dependencies job made (or its failure) on the version.

        A job stopped because its worker is stopping (``releasing``) runs again
        elsewhere: the version stays ``locking``.
        """
        digest = job.script_hash or ""
        try:
            lock = self._lock_from(run, job.script_path or digest)
        except DependencyFailure as exc:
            if not (releasing and run.canceled):
                self.scripts.set_lock(digest, job.id, "failed")
            return exc.outcome
        self.scripts.set_lock(digest, job.id, "locked", lock, requirements_text)
        self.scripts.cache_lock(resolution_key(requirements_text, self.options), lock,
                                LOCK_CACHE_TTL_S)
        return Outcome(ok=True, result={
            "script_hash": digest, "requirements": requirements_text.splitlines(),
            "lock": lock.splitlines()})

    def _lock_from(self, run: ProcessResult, what: str) -> str:
        if run.canceled:
            raise DependencyFailure(failure("Canceled", f"resolving {what} was canceled"))
        if run.timed_out:
            raise DependencyFailure(failure("Timeout", f"resolving {what} exceeded the timeout "
                                            f"of {run.timeout_s:g} s"))
        if run.sandbox_error:
            raise DependencyFailure(failure("SandboxLost", run.sandbox_error))
        if run.exit_code != 0 or run.payload is None:
            raise DependencyFailure(failure(
                "LockFailed",
                f"uv could not resolve the requirements of {what}"
                f"{stderr_excerpt(run)}\nFix the imports, or list the distributions in a "
                "'# requirements:' block (or pin one with '# extra_requirements:'), then deploy "
                "again; if the packages come from a private index or a wheel directory, set "
                "GRISTMILL_PIP_INDEX_URL / GRISTMILL_PIP_FIND_LINKS on the workers and run "
                "`gristmill script lock <hash>`."))
        try:
            return parse_lock(run.payload.decode("utf-8", errors="replace"))
        except LockError as exc:
            raise DependencyFailure(failure("LockUnusable", str(exc))) from None

    # -- the environment of a python3 job -----------------------------------------------------

    def for_job(self, job: Job, version: ScriptVersion | None, code: str, sink: LogSink,
                sandbox: Sandbox, deadline: float,
                track: Callable[[ProcessRun], None] = lambda _run: None) -> JobDeps:
        """What a python3 job needs to import its packages; DependencyFailure when it may not run.

        ``track`` is given a preview's resolver run before it starts, so a cancel stops it."""
        if job.kind == Kind.PREVIEW:
            lock = self._preview_lock(code, sink, sandbox, deadline, track)
        elif version is not None:
            lock = self._version_lock(version, deadline)
        else:
            return JobDeps({})
        if not lock:
            return JobDeps({})
        try:
            env = self.cache.ensure(lock, log=lambda line: _log(sink, line))
        except InstallError as exc:
            raise DependencyFailure(failure("EnvironmentFailed", str(exc))) from None
        return JobDeps({"PYTHONPATH": str(env.path)}, (str(env.path),))

    def _version_lock(self, version: ScriptVersion, deadline: float) -> str:
        if not version.runnable:
            version = self.scripts.by_hash(version.hash)  # the cached copy may be older
        if version.lock_status == "locking" and version.lock is None:
            version = self._wait_for_lock(version, deadline)
        if version.lock_status == "failed":
            raise DependencyFailure(failure(
                "LockFailed", f"script version {version.hash} cannot run: lock failed: "
                f"{version.lock_job} (see `gristmill job get {version.lock_job}`)"))
        return version.lock or ""

    def _wait_for_lock(self, version: ScriptVersion, deadline: float) -> ScriptVersion:
        job_id = version.lock_job or ""
        try:
            self.store.wait(job_id, max(0.0, deadline - time.monotonic()))
        except JobTimeout:
            raise DependencyFailure(failure(
                "LockPending", f"script version {version.hash} is still locking: its "
                f"dependencies job {job_id} did not finish within this job's timeout")) from None
        except NotFound:
            raise DependencyFailure(failure(
                "LockPending", f"script version {version.hash} waits for dependencies job "
                f"{job_id}, which does not exist: run `gristmill script lock {version.hash}`"
            )) from None
        return self.scripts.by_hash(version.hash)

    def _preview_lock(self, code: str, sink: LogSink, sandbox: Sandbox, deadline: float,
                      track: Callable[[ProcessRun], None]) -> str:
        try:
            wanted = requirements(code)
        except RequirementsError as exc:
            raise DependencyFailure(failure("InvalidRequirements", str(exc))) from None
        if wanted.empty:
            return ""
        key = resolution_key(wanted.text(), self.options)
        cached = self.scripts.cached_lock(key)
        if cached is not None:
            return cached
        _log(sink, "[gristmill] resolving this preview's requirements")
        run = ProcessRun(self.resolver(wanted.text()), sandbox=self.sandbox_for_resolver(sandbox),
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                         timeout_s=max(1.0, deadline - time.monotonic()), sink=sink)
        track(run)
        lock = self._lock_from(run.run(), "this preview")
        self.scripts.cache_lock(key, lock, LOCK_CACHE_TTL_S)
        return lock


def with_deps(sandbox: Sandbox, deps: JobDeps) -> Sandbox:
    return _with_binds(sandbox, deps.binds)


def _with_binds(sandbox: Sandbox, paths: tuple[str, ...]) -> Sandbox:
    """``sandbox`` showing ``paths`` read-only too (isolated mode; shared mode sees all)."""
    if not paths or sandbox.mode != "isolated":
        return sandbox
    return dataclasses.replace(sandbox, binds=(*sandbox.binds, *paths))


def _log(sink: LogSink, line: str) -> None:
    sink([LogLine(int(time.time() * 1000), "stdout", line)])
