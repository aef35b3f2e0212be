"""Running one job: fetch its code, spawn it, stream its logs, write its outcome."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from common import codec, log, metrics
from common.clock import Clock, now_ms
from common.errors import NotFound, RedisUnavailable
from common.instance import InstanceSettings
from common.models import Job, Status
from common.scripts import ScriptStore
from common.settings import Settings
from common.store import Store
from worker.environment import ephemeral_token, job_environment
from worker.executors.base import Outcome, interpret, prepare
from worker.executors.binding import ArgumentError
from worker.process import LogLine, ProcessRun

MAX_RESULT_BYTES = 8 * 1024 * 1024
PENDING_LOG_CAP = 20_000
RETRY_BACKOFF_MAX_S = 5.0


def failure(name: str, message: str) -> Outcome:
    return Outcome(ok=False, error={"name": name, "message": message, "traceback": ""})


class LogSink:
    """Receives batches of log lines and appends them, fenced by the job's claim.

    Lines that cannot be written while Redis is away are kept (up to a cap) and
    sent with the next batch; when the attempt has been fenced off the process
    is killed: a worker presumed dead must stop doing the job's work.
    """

    def __init__(self, store: Store, job: Job) -> None:
        self.store = store
        self.job = job
        self.pending: list[tuple[int, str, str]] = []
        self.fenced = False
        self.run: ProcessRun | None = None

    def __call__(self, lines: list[LogLine]) -> None:
        if self.fenced:
            return
        self.pending.extend((line.ts_ms, line.stream, line.line) for line in lines)
        if len(self.pending) > PENDING_LOG_CAP:
            dropped = len(self.pending) - PENDING_LOG_CAP
            self.pending = [(now_ms(), "stderr", f"[gristmill: {dropped} log lines dropped "
                             "while Redis was unreachable]"), *self.pending[-PENDING_LOG_CAP:]]
        self.flush()

    def flush(self) -> None:
        if not self.pending or self.fenced:
            return
        try:
            accepted = self.store.append_logs(self.job, self.pending)
        except RedisUnavailable:
            return
        self.pending = []
        if not accepted:
            self.fenced = True
            if self.run is not None:
                self.run.cancel()


class JobRunner:
    """Runs jobs for a worker; thread-safe, one call of :meth:`run` per job."""

    def __init__(
        self, *, store: Store, scripts: ScriptStore, settings: Settings, clock: Clock = now_ms
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._active: dict[str, ProcessRun] = {}
        self._lock = threading.Lock()
        self._script_code = lru_cache(maxsize=512)(scripts.by_hash)

    def cancel_all(self) -> None:
        with self._lock:
            runs = list(self._active.values())
        for run in runs:
            run.cancel()

    def run(self, job: Job, instance: InstanceSettings) -> None:
        """Run ``job`` to its outcome and write it."""
        jlog = log.get(job_id=job.id, worker_id=job.worker, group=job.group)
        started = time.monotonic()
        sink = LogSink(self.store, job)
        workdir = Path(tempfile.mkdtemp(prefix="gristmill-job-"))
        try:
            outcome = self._execute(job, instance, workdir, sink)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sink.flush()
        duration_ms = int((time.monotonic() - started) * 1000)
        metrics.JOB_DURATION.labels(group=job.group, kind=job.kind.value).observe(duration_ms / 1000)
        if sink.fenced:
            jlog.warning("attempt fenced off while running; outcome discarded")
            return
        self._complete(job, outcome, duration_ms, instance, jlog)

    def _execute(
        self, job: Job, instance: InstanceSettings, workdir: Path, sink: LogSink
    ) -> Outcome:
        try:
            code, language = self._code(job)
            prepared = prepare(language, code, job.args, workdir)
        except ArgumentError as exc:
            return failure("ArgumentError", str(exc))
        except NotFound as exc:
            return failure("ScriptNotFound", str(exc))
        timeout_s = job.timeout_s or instance.default_timeout_s or self.settings.default_timeout_s
        env = job_environment(
            job, workdir=workdir, base_url=self.settings.base_url, token=ephemeral_token()
        )
        run = ProcessRun(prepared, workdir=workdir, env=env, timeout_s=timeout_s, sink=sink)
        sink.run = run
        with self._lock:
            self._active[job.id] = run
        try:
            return interpret(language, run.run())
        finally:
            with self._lock:
                self._active.pop(job.id, None)

    def _code(self, job: Job) -> tuple[str, str]:
        if job.code is not None:
            return job.code, job.language
        version = self._script_code(job.script_hash or "")
        return version.code, version.language

    def _complete(
        self, job: Job, outcome: Outcome, duration_ms: int, instance: InstanceSettings,
        jlog: Any,
    ) -> None:
        fields: dict[str, Any] = {"duration_ms": duration_ms}
        if outcome.ok and len(codec.pack(outcome.result)) > MAX_RESULT_BYTES:
            outcome = failure(
                "ResultTooLarge",
                f"the result is larger than {MAX_RESULT_BYTES // (1024 * 1024)} MiB; "
                "store large data elsewhere and return a reference",
            )
        if outcome.ok:
            status, fields["result"] = Status.SUCCESS, outcome.result
        else:
            status, fields["error"] = Status.FAILURE, outcome.error
        delay = 0.1
        while True:
            try:
                answer = self.store.complete(job, status, fields, retention_s=instance.retention_s)
                break
            except RedisUnavailable:
                # The outcome is kept in memory and written once Redis is back.
                metrics.REDIS_ERRORS.labels(process="worker").inc()
                time.sleep(delay)
                delay = min(delay * 2, RETRY_BACKOFF_MAX_S)
        if answer == 0:
            jlog.warning("late completion refused: the job moved on to another attempt")
        else:
            jlog.info("job completed", status=status.value, duration_ms=duration_ms)
