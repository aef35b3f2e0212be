"""Running one job: fetch its code, spawn it, stream its logs, write its outcome."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from common import codec, log, metrics
from common.clock import Clock, now_ms
from common.errors import NotFound, RedisUnavailable
from common.instance import InstanceSettings
from common.loops import Outage
from common.models import Job, Status
from common.retry import next_delay_s, parse_policy
from common.settings import Settings
from common.store import FENCED, NEW_SECRETS, Store
from jobs.scripts import ScriptStore
from vault.crypto import SecretBox
from vault.redaction import redact, redaction_values
from worker.environment import ephemeral_token, job_environment
from worker.executors.binding import ArgumentError
from worker.executors.dispatch import interpret, prepare
from worker.executors.outcome import Outcome
from worker.jobprocess import LogLine, ProcessRun
from worker.sandbox.policy import Limits, Sandbox

MAX_ERROR_TEXT = 64 * 1024  # of an error's message and of its traceback, each
PENDING_LOG_CAP = 20_000
RETRY_BACKOFF_MAX_S = 5.0
TOKEN_MARGIN_S = 60
T = TypeVar("T")


def failure(name: str, message: str) -> Outcome:
    return Outcome(ok=False, error={"name": name, "message": message, "traceback": ""})


def bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    """The error with its message and traceback cut at MAX_ERROR_TEXT characters each."""
    bounded = dict(error)
    for key in ("name", "message", "traceback"):
        text = bounded.get(key)
        if isinstance(text, str) and len(text) > MAX_ERROR_TEXT:
            bounded[key] = text[:MAX_ERROR_TEXT] + f"...[gristmill: cut, {len(text)} characters]"
    return bounded


class JobTokens(Protocol):
    """What the runner needs of the identity store."""

    def mint_job_token(self, job_id: str, permissioned_as: str, *, expires_at: int,
                       created_by: str | None = None) -> str: ...
    def revoke_job_token(self, job_id: str) -> None: ...


def redact_value(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret removed from its strings (keys included)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_value(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact_value(k, secrets): redact_value(v, secrets) for k, v in value.items()}
    return value


def redact_outcome(outcome: Outcome, secrets: list[str]) -> Outcome:
    """The outcome with secrets the job read removed from its result and error."""
    if not secrets:
        return outcome
    return Outcome(ok=outcome.ok, result=redact_value(outcome.result, secrets),
                   error=redact_value(outcome.error, secrets))


class LogSink:
    """Receives batches of log lines and appends them, fenced by the job's claim.

    Lines that cannot be written while Redis is away are kept (up to a cap) and
    sent with the next batch; when the attempt has been fenced off the process
    is killed: a worker presumed dead must stop doing the job's work.
    """

    def __init__(self, store: Store, job: Job, box: SecretBox | None = None,
                 max_bytes: int = InstanceSettings().max_log_bytes) -> None:
        self.store = store
        self.job = job
        self.box = box
        self.max_bytes = max_bytes
        self.pending: list[tuple[int, str, str]] = []
        self.fenced = False
        self.run: ProcessRun | None = None
        self.redaction_entries = 0
        self.secrets: list[str] = []

    def __call__(self, lines: list[LogLine]) -> None:
        if self.fenced:
            return
        self.pending.extend((line.ts_ms, line.stream, line.line) for line in lines)
        if len(self.pending) > PENDING_LOG_CAP:
            dropped = len(self.pending) - PENDING_LOG_CAP
            self.pending = [(now_ms(), "stderr", f"[gristmill: {dropped} log lines dropped "
                             "while Redis was unreachable]"), *self.pending[-PENDING_LOG_CAP:]]
        self.flush()

    def flush(self, *, until_written: bool = False) -> None:
        """Send pending lines; ``until_written``: raise RedisUnavailable rather than keep them."""
        if not self.pending or self.fenced:
            return
        try:
            answer = self.store.append_logs(
                self.job, self.redacted(self.pending), known_redactions=self.redaction_entries,
                max_bytes=self.max_bytes)
            if answer == NEW_SECRETS:
                self.learn_secrets()
                answer = self.store.append_logs(
                    self.job, self.redacted(self.pending), known_redactions=self.redaction_entries,
                    max_bytes=self.max_bytes)
        except RedisUnavailable:
            if until_written:
                raise
            metrics.REDIS_ERRORS.labels(process="worker").inc()
            return  # kept: sent with the next batch
        if answer == NEW_SECRETS:
            return  # more secrets arrived meanwhile: the next flush sends these lines
        self.pending = []
        if answer == FENCED:
            self.fenced = True
            if self.run is not None:
                self.run.cancel()

    def learn_secrets(self) -> None:
        """Fetch the secrets the job read since the last batch (to redact them)."""
        entries = self.store.redactions(self.job)
        self.secrets = redaction_values(self.box, entries) if self.box is not None else []
        self.redaction_entries = len(entries)

    def redacted(self, lines: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
        if not self.secrets:
            return lines
        return [(ts, stream, redact(line, self.secrets)) for ts, stream, line in lines]


class JobRunner:
    """Runs jobs for a worker; thread-safe, one call of :meth:`run` per job."""

    def __init__(
        self, *, store: Store, scripts: ScriptStore, settings: Settings, sandbox: Sandbox,
        clock: Clock = now_ms, tokens: JobTokens | None = None, box: SecretBox | None = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        self.tokens = tokens
        self.box = box
        self.settings = settings
        self.clock = clock
        self._active: dict[str, ProcessRun] = {}
        self._cancel_pending: set[str] = set()
        self._releasing = False
        self._lock = threading.Lock()
        self._script_code = lru_cache(maxsize=512)(scripts.by_hash)

    def cancel(self, job_id: str) -> None:
        """Kill a running job's process (a cancel request); remembered if it has not spawned yet."""
        with self._lock:
            run = self._active.get(job_id)
            if run is None:
                self._cancel_pending.add(job_id)
        if run is not None:
            run.cancel()

    def release_all(self) -> None:
        """Stop every running job and give it back to the queue (the worker is stopping)."""
        with self._lock:
            self._releasing = True
            runs = list(self._active.values())
        for run in runs:
            run.cancel()

    def run(self, job: Job, instance: InstanceSettings) -> None:
        """Run ``job`` to its outcome and write it."""
        jlog = log.get(job_id=job.id, worker_id=job.worker, group=job.group)
        if self._overlaps(job):
            self._finish(job, Status.CANCELED, {
                "canceled_by": "schedule", "duration_ms": 0,
                "canceled_reason": f"skipped: the previous run {job.skip_if_running} "
                "is still running (no-overlap schedule)",
            }, instance, jlog)
            return
        started = time.monotonic()
        sink = LogSink(self.store, job, self.box, instance.max_log_bytes)
        try:
            outcome = self._execute(job, instance, sink)
        finally:
            tokens = self.tokens
            if tokens is not None:
                # WM_TOKEN dies with the attempt, whatever its outcome.
                self._write(lambda: tokens.revoke_job_token(job.id))
        # The last lines are written before the outcome, even across an outage.
        self._write(lambda: sink.flush(until_written=True))
        if self.box is not None:
            with contextlib.suppress(RedisUnavailable):
                sink.learn_secrets()
            outcome = redact_outcome(outcome, sink.secrets)
        duration_ms = int((time.monotonic() - started) * 1000)
        metrics.JOB_DURATION.labels(group=job.group, kind=job.kind.value).observe(duration_ms / 1000)
        if sink.fenced:
            jlog.warning("attempt fenced off while running; outcome discarded")
            return
        with self._lock:
            self._cancel_pending.discard(job.id)
            releasing = self._releasing
        if releasing and outcome.error is not None and outcome.error["name"] == "Canceled":
            if self._write(lambda: self.store.release(job)):
                jlog.info("job released: worker stopping")
            return
        self._complete(job, outcome, duration_ms, instance, jlog)

    def _overlaps(self, job: Job) -> bool:
        """A no-overlap schedule's fire whose previous run has not finished yet."""
        previous_id = job.skip_if_running
        if previous_id is None:
            return False
        try:
            previous = self._write(lambda: self.store.get_job(previous_id))
        except NotFound:
            return False
        return not previous.is_terminal

    def _execute(self, job: Job, instance: InstanceSettings, sink: LogSink) -> Outcome:
        with self._lock:
            if job.id in self._cancel_pending or self._releasing:
                return failure("Canceled", "job was canceled before it started")
        try:
            code, language, limits = self._write(lambda: self._code(job))
            prepared = prepare(language, code, job.args)
        except ArgumentError as exc:
            return failure("ArgumentError", str(exc))
        except NotFound as exc:
            return failure("ScriptNotFound", str(exc))
        timeout_s = job.timeout_s or instance.default_timeout_s or self.settings.default_timeout_s
        env = job_environment(
            job, base_url=self.settings.base_url,
            token=self._write(lambda: self._mint_token(job, timeout_s)),
        )
        run = ProcessRun(prepared, sandbox=self.sandbox, env=env, timeout_s=timeout_s, sink=sink,
                         limits=limits)
        sink.run = run
        with self._lock:
            self._active[job.id] = run
            if job.id in self._cancel_pending or self._releasing:
                run.cancel()
        try:
            return interpret(language, run.run())
        finally:
            with self._lock:
                self._active.pop(job.id, None)

    def _mint_token(self, job: Job, timeout_s: int) -> str:
        """WM_TOKEN: the permissions of permissioned_as, until the job ends (or timeout + 60 s)."""
        if self.tokens is None:
            return ephemeral_token()
        expires_at = self.clock() + (timeout_s + TOKEN_MARGIN_S) * 1000
        return self.tokens.mint_job_token(job.id, job.permissioned_as, expires_at=expires_at,
                                          created_by=job.created_by)

    def _code(self, job: Job) -> tuple[str, str, Limits]:
        """The job's code, language and sandbox limits (its script's, within the worker's)."""
        if job.code is not None:
            return job.code, job.language, self.sandbox.limits
        version = self._script_code(job.script_hash or "")
        return version.code, version.language, self.sandbox.limits.tightened(version.limits)

    def _complete(
        self, job: Job, outcome: Outcome, duration_ms: int, instance: InstanceSettings,
        jlog: Any,
    ) -> None:
        """Decide the status (success, retry, failure, canceled) and write it."""
        fields: dict[str, Any] = {"duration_ms": duration_ms}
        limit = instance.max_result_bytes
        if outcome.ok and len(codec.pack(outcome.result)) > limit:
            outcome = failure(
                "ResultTooLarge",
                f"the result is larger than {limit} bytes (setting max_result_bytes); "
                "store large data elsewhere and return a reference",
            )
        if outcome.ok:
            fields["result"] = outcome.result
            self._finish(job, Status.SUCCESS, fields, instance, jlog)
            return
        error = bounded_error(outcome.error or {"name": "Error", "message": "", "traceback": ""})
        if error["name"] == "Canceled" and self._cancel_was_requested(job):
            self._finish(job, Status.CANCELED, fields, instance, jlog)
            return
        fields["error"] = error
        delay = self._retry_delay(job, error["name"])
        if delay is not None:
            at_ms = self.clock() + int(delay * 1000)
            if self._write(lambda: self.store.retry(job, fields, at_ms=at_ms)):
                jlog.info("job failed; retrying", error=error["name"], retry=job.retries + 1,
                          in_s=round(delay, 3))
            else:
                jlog.warning("late retry refused: the job moved on to another attempt")
            return
        self._finish(job, Status.FAILURE, fields, instance, jlog)

    def fail(self, job: Job, exc: BaseException, instance: InstanceSettings) -> None:
        """Record a job whose run crashed inside the worker (a bug of ours) as failed."""
        error = {"name": "WorkerError", "traceback": "",
                 "message": f"the worker failed while running this job: {exc!r}"}
        jlog = log.get(job_id=job.id, worker_id=job.worker, group=job.group)
        try:
            self._finish(job, Status.FAILURE, {"error": error}, instance, jlog)
        except Exception:
            jlog.exception("could not record the crash; the job stays in the running list")

    def _cancel_was_requested(self, job: Job) -> bool:
        try:
            return self.store.get_job(job.id).cancel_requested is not None
        except (NotFound, RedisUnavailable):
            return True  # killed on request of cancel() all the same

    def _retry_delay(self, job: Job, error_name: str) -> float | None:
        if not job.retry:
            return None
        return next_delay_s(parse_policy(job.retry), job.retries, error_name, random.random())

    def _finish(
        self, job: Job, status: Status, fields: dict[str, Any], instance: InstanceSettings,
        jlog: Any,
    ) -> None:
        answer = self._write(
            lambda: self.store.complete(job, status, fields, retention_s=instance.retention_s)
        )
        if answer == 0:
            jlog.warning("late completion refused: the job moved on to another attempt")
        else:
            jlog.info("job completed", status=status.value, duration_ms=fields.get("duration_ms"))

    def _write(self, write: Callable[[], T]) -> T:
        """Run a Redis call until Redis answers: nothing a job did is lost to an outage.

        Only for calls that are safe to repeat (conditional scripts, reads, idempotent writes).
        """
        outage = Outage("job write", "worker", cap_s=RETRY_BACKOFF_MAX_S)
        while True:
            try:
                answer = write()
                outage.ok()
                return answer
            except RedisUnavailable as exc:
                time.sleep(outage.failed(exc))
