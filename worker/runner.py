"""Running one job: fetch its code, spawn it, stream its logs, write its outcome."""

from __future__ import annotations

import contextlib
import dataclasses
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
from common.models import Job, Kind, ScriptVersion, Status, UnreadableJob
from common.retry import next_delay_s, parse_policy
from common.settings import Settings
from common.store import FENCED, NEW_SECRETS, Completed, Completion, NextClaim, Store
from flows.handoff import StepOutcome, forward
from jobs.scripts import ScriptStore
from storage.objects import ObjectStore, StorageError
from storage.results import store_result
from vault.crypto import SecretBox
from vault.redaction import redact, redaction_values
from worker.dedicated import Cancel, DedicatedPool
from worker.dependencies import Dependencies, DependencyFailure, with_deps
from worker.environment import ephemeral_token, job_environment
from worker.executors.binding import ArgumentError
from worker.executors.command import Prepared
from worker.executors.dispatch import interpret, prepare
from worker.executors.outcome import Outcome
from worker.groupcommit import GroupCommit
from worker.jobprocess import LogLine, ProcessRun
from worker.sandbox.policy import Limits, Sandbox
from worker.spill import LogBudget

MAX_ERROR_TEXT = 64 * 1024  # of an error's message and of its traceback, each
PENDING_LOG_CAP = 20_000
RETRY_BACKOFF_MAX_S = 5.0
TOKEN_MARGIN_S = 60
T = TypeVar("T")
# The worker's claim for a slot's next job, asked for when the job's completion is sent
# (None: the worker stops, or ready was found empty).
ClaimNext = Callable[[], NextClaim | None]


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


def dedicated_as_is(job: Job, version: ScriptVersion | None, language: str, *, handled: bool,
                    deps: bool) -> bool:
    """Whether a job of a dedicated worker runs in its script's process, known before anything
    is prepared: a python3 job of a dedicated path or tag (``handled``) whose version needs no
    dependency environment. One that does (or may: a preview, a version locking) takes the
    general path, which runs it dedicated or warm once its environment is known."""
    if not handled or language != "python3":
        return False
    if not deps:
        return True
    if job.kind == Kind.PREVIEW:
        return False
    return version is None or (version.lock_status in (None, "locked") and not version.lock)


class Cancelable(Protocol):
    """A running job's handle: a ProcessRun, or a dedicated job's Cancel."""

    def cancel(self) -> None: ...


class JobTokens(Protocol):
    """What the runner needs of the identity store."""

    def mint_job_token(self, job_id: str, permissioned_as: str, *, expires_at: int,
                       created_by: str | None = None, claim: str | None = None) -> str: ...


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
                 max_bytes: int = InstanceSettings().max_log_bytes,
                 budget: LogBudget | None = None) -> None:
        self.budget = budget or LogBudget(None, job.id, job.attempt, max_bytes=max_bytes,
                                          used=job.log_bytes or 0, keep_until_ms=0)
        self.store = store
        self.job = job
        self.box = box
        self.max_bytes = max_bytes
        self.pending: list[tuple[int, str, str]] = []
        self.fenced = False
        self.run: Cancelable | None = None
        self.redaction_entries = 0
        self.secrets: list[str] = []

    def __call__(self, lines: list[LogLine]) -> None:
        if self.fenced or self._take(lines):
            return
        if len(self.pending) > PENDING_LOG_CAP:
            dropped = len(self.pending) - PENDING_LOG_CAP
            self.pending = [(now_ms(), "stderr", f"[gristmill: {dropped} log lines dropped "
                             "while Redis was unreachable]"), *self.pending[-PENDING_LOG_CAP:]]
        self.flush()

    def hold(self, lines: list[LogLine]) -> None:
        """The job's last lines: kept for the completion's call (complete.lua writes them with
        the outcome) instead of an append of their own; lines past the budget spill as ever."""
        if not self.fenced:
            self._take(lines)

    def _take(self, lines: list[LogLine]) -> bool:
        """Queue the lines within the budget; spill the rest (after a flush, so the order
        holds). True when some spilled (and so the pending ones were sent)."""
        kept, spilled = self.budget.route([(line.ts_ms, line.stream, line.line) for line in lines])
        self.pending.extend(kept)
        if spilled:
            self.flush()
            self.spill(spilled)
        return bool(spilled)

    def spill(self, lines: list[tuple[int, str, str]]) -> None:
        """Lines past the Redis budget, to the object store (worker/spill.py); fenced and
        redacted like the others: an empty append checks the claim and the secrets."""
        try:
            answer = self.store.append_logs(self.job, [], known_redactions=self.redaction_entries,
                                            max_bytes=self.max_bytes)
        except RedisUnavailable:
            answer = 0  # checked again with the next batch
        if answer == NEW_SECRETS:
            self.learn_secrets()
        elif answer == FENCED:
            self.fenced = True
            if self.run is not None:
                self.run.cancel()
            return
        self.budget.send(self.redacted(lines))

    def close(self) -> None:
        """The attempt ended: upload the rest of the spill (a note in Redis if that failed)."""
        note = self.budget.close()
        if note is not None and not self.fenced:
            self.pending.append(note)

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
        deps: Dependencies | None = None, objects: ObjectStore | None = None,
        dedicated: DedicatedPool | None = None,
    ) -> None:
        self.deps = deps
        self.objects = objects
        self.store = store
        self.sandbox = sandbox
        self.tokens = tokens
        self.box = box
        self.settings = settings
        self.clock = clock
        self._active: dict[str, Cancelable] = {}
        self.dedicated = dedicated
        self._cancel_pending: set[str] = set()
        self._releasing = False
        self._lock = threading.Lock()
        self._script_code = lru_cache(maxsize=512)(scripts.by_hash)
        self._completions: GroupCommit[Completion, Completed] = GroupCommit(
            store.complete_then_claim)
        self._log = log.get()  # bound per job (binding a new logger costs ~10 times as much)

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

    def run(self, job: Job, instance: InstanceSettings,
            then_claim: ClaimNext | None = None) -> list[Job] | None:
        """Run ``job`` to its outcome and write it; with ``then_claim``, the slot's next job is
        claimed in the same write as the completion, if it answers a claim when the job is
        done. The jobs that claim started (empty: ready had none), or None when it was not
        made (no claim wanted, no completion written, or Redis failed on the way: the caller
        claims on its own)."""
        jlog = self._log.bind(job_id=job.id, worker_id=job.worker, group=job.group)
        if isinstance(job, UnreadableJob):
            jlog.error("job record unreadable; recorded as failed", problem=job.problem)
            return self._finish(job, Status.FAILURE, {"duration_ms": 0, "error": {
                "name": "BadRecord", "message": job.problem, "traceback": ""}}, instance, jlog,
                then_claim=then_claim)
        if self._overlaps(job):
            return self._finish(job, Status.CANCELED, {
                "canceled_by": "schedule", "duration_ms": 0,
                "canceled_reason": f"skipped: the previous run {job.skip_if_running} "
                "is still running (no-overlap schedule)",
            }, instance, jlog, then_claim=then_claim)
        started = time.monotonic()
        timeout_s = job.timeout_s or instance.default_timeout_s or self.settings.default_timeout_s
        budget = LogBudget(self.objects, job.id, job.attempt, max_bytes=instance.max_log_bytes,
                           used=job.log_bytes or 0,
                           keep_until_ms=self.clock() + (timeout_s + instance.retention_s) * 1000)
        sink = LogSink(self.store, job, self.box, instance.max_log_bytes, budget)
        # WM_TOKEN is signed for this attempt's claim: it dies with the attempt, whatever its
        # outcome, with nothing to revoke (auth/jobtokens.py).
        outcome = self._execute(job, instance, sink)
        sink.close()
        duration_ms = int((time.monotonic() - started) * 1000)
        metrics.child(metrics.JOB_DURATION, job.group, job.kind.value).observe(duration_ms / 1000)
        if sink.fenced:
            jlog.warning("attempt fenced off while running; outcome discarded")
            return None
        with self._lock:
            self._cancel_pending.discard(job.id)
            releasing = self._releasing
        if releasing and outcome.error is not None and outcome.error["name"] == "Canceled":
            # The last lines are written before the release, even across an outage.
            self._write(lambda: sink.flush(until_written=True))
            if self._write(lambda: self.store.release(job)):
                jlog.info("job released: worker stopping")
            return None
        return self._complete(job, outcome, duration_ms, instance, jlog, sink, then_claim)

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
        timeout_s = job.timeout_s or instance.default_timeout_s or self.settings.default_timeout_s
        deadline = time.monotonic() + timeout_s
        sandbox, lock_input, code = self.sandbox, None, ""
        prepared: Prepared | None
        # A job whose script needs an environment runs warm, not in a dedicated process
        # (docs/ARCHITECTURE.md, known limits of dedicated workers).
        needs_env = False
        try:
            if job.kind == Kind.DEPENDENCIES and self.deps is not None:
                deps = self.deps
                prepared, lock_input = self._write(lambda: deps.lock_plan(job))
                language, limits = Kind.DEPENDENCIES.value, self.sandbox.limits
                sandbox = deps.sandbox_for_resolver(sandbox)
            else:
                version, code, language, limits = self._write(lambda: self._code(job))
                # A dedicated job needs nothing prepared: its script's process has the code
                # and binds the args.
                as_is = self._dedicated_as_is(job, version, language)
                prepared = None if as_is else prepare(language, code, job.args)
                if prepared is not None and language == "python3" and self.deps is not None:
                    deps = self.deps
                    needs = self._write(lambda: deps.for_job(
                        job, version, code, sink, sandbox, deadline,
                        track=lambda run: self._track(job.id, run)))
                    prepared = dataclasses.replace(prepared, env={**prepared.env, **needs.env})
                    needs_env = bool(needs.env)
                    sandbox = with_deps(sandbox, needs)
        except ArgumentError as exc:
            return failure("ArgumentError", str(exc))
        except NotFound as exc:
            return failure("ScriptNotFound", str(exc))
        except DependencyFailure as exc:
            with self._lock:
                self._active.pop(job.id, None)  # a preview's resolver run, if it had one
            return exc.outcome
        env = self._environment(job, timeout_s)
        if prepared is None or (
                self.dedicated is not None and job.script_hash is not None and not needs_env
                and self.dedicated.handles(job.script_path, job.tag) and language == "python3"):
            return self._execute_dedicated(job, env, timeout_s, sink, (code, limits))
        run = ProcessRun(prepared, sandbox=sandbox, env=env, sink=sink, last_sink=sink.hold,
                         limits=limits, timeout_s=max(1.0, deadline - time.monotonic()))
        sink.run = run
        self._track(job.id, run)
        try:
            result = run.run()
        finally:
            with self._lock:
                self._active.pop(job.id, None)
        if lock_input is not None and self.deps is not None:
            deps, text, releasing = self.deps, lock_input, self._releasing
            return self._write(lambda: deps.finish_lock(job, text, result, releasing=releasing))
        return interpret(language, result)

    def _track(self, job_id: str, run: ProcessRun) -> None:
        """``run`` is what a cancel of the job stops now (a preview's resolver, then the job)."""
        with self._lock:
            self._active[job_id] = run
            if job_id in self._cancel_pending or self._releasing:
                run.cancel()

    def _dedicated_as_is(self, job: Job, version: ScriptVersion | None, language: str) -> bool:
        return self.dedicated is not None and job.script_hash is not None and \
            dedicated_as_is(job, version, language, handled=self.dedicated.handles(
                job.script_path, job.tag), deps=self.deps is not None)

    def _environment(self, job: Job, timeout_s: int) -> dict[str, str]:
        return job_environment(job, base_url=self.settings.base_url,
                               token=self._write(lambda: self._mint_token(job, timeout_s)))

    def _execute_dedicated(self, job: Job, env: dict[str, str], timeout_s: int,
                           sink: LogSink, source: tuple[str, Limits]) -> Outcome:
        """The job in its script's dedicated process (see worker/dedicated.py); ``source``:
        its version's code and limits, for a process that has to start."""
        assert self.dedicated is not None and job.script_hash is not None
        cancel = Cancel()
        sink.run = cancel
        with self._lock:
            self._active[job.id] = cancel
            if job.id in self._cancel_pending or self._releasing:
                cancel.cancel()
        try:
            return self.dedicated.run(
                script_path=job.script_path or "", script_hash=job.script_hash,
                code=lambda: source, job_id=job.id, args=job.args, env=env,
                timeout_s=timeout_s, sink=sink, cancel=cancel.event)
        finally:
            with self._lock:
                self._active.pop(job.id, None)

    def _mint_token(self, job: Job, timeout_s: int) -> str:
        """WM_TOKEN: the permissions of permissioned_as, until the job ends (or timeout + 60 s)."""
        if self.tokens is None:
            return ephemeral_token()
        expires_at = self.clock() + (timeout_s + TOKEN_MARGIN_S) * 1000
        return self.tokens.mint_job_token(job.id, job.permissioned_as, expires_at=expires_at,
                                          created_by=job.created_by, claim=job.claim)

    def _code(self, job: Job) -> tuple[ScriptVersion | None, str, str, Limits]:
        """The job's version, code, language and sandbox limits (its script's, within the
        worker's)."""
        if job.code is not None:
            return None, job.code, job.language, self.sandbox.limits
        version = self._script_code(job.script_hash or "")
        return version, version.code, version.language, \
            self.sandbox.limits.tightened(version.limits)

    def _complete(
        self, job: Job, outcome: Outcome, duration_ms: int, instance: InstanceSettings,
        jlog: Any, sink: LogSink, then_claim: ClaimNext | None,
    ) -> list[Job] | None:
        """Decide the status (success, retry, failure, canceled) and write it, with the last
        log lines; the result and error redacted of the secrets the job read."""
        fields: dict[str, Any] = {"duration_ms": duration_ms}
        limit = instance.max_result_bytes
        packed = codec.pack(outcome.result) if outcome.ok else b""
        stored: str | None = None
        if outcome.ok and len(packed) > limit:
            # It leaves Redis's reach: redacted of every secret the job read, first.
            self._write(sink.learn_secrets)
            outcome = redact_outcome(outcome, sink.secrets)
            packed = codec.pack(outcome.result)
            stored, problem = self._store_result(job, packed, instance)
            if stored is None:
                outcome = failure(
                    "ResultTooLarge",
                    f"the result is larger than {limit} bytes (setting max_result_bytes){problem}; "
                    "store large data elsewhere and return a reference",
                )
        outcome = redact_outcome(outcome, sink.secrets)
        if outcome.ok and stored is not None:
            fields.update(result_ref=stored, result_bytes=len(packed))
            return self._finish(job, Status.SUCCESS, fields, instance, jlog, sink, then_claim)
        if outcome.ok:
            fields["result"] = outcome.result
            return self._finish(job, Status.SUCCESS, fields, instance, jlog, sink, then_claim)
        error = bounded_error(outcome.error or {"name": "Error", "message": "", "traceback": ""})
        if error["name"] == "Canceled" and self._cancel_was_requested(job):
            return self._finish(job, Status.CANCELED, fields, instance, jlog, sink, then_claim)
        fields["error"] = error
        delay = self._retry_delay(job, error["name"])
        if delay is not None:
            at_ms = self.clock() + int(delay * 1000)
            # The last lines are written before the retry, even across an outage.
            self._write(lambda: sink.flush(until_written=True))
            if sink.fenced:
                jlog.warning("attempt fenced off while running; outcome discarded")
                return None
            # retry.lua checks no redaction count (complete.lua does): learn every secret the
            # job read, a silent job's included, before its error is kept.
            if self.box is not None:
                self._write(sink.learn_secrets)
            fields["error"] = redact_value(error, sink.secrets)
            if self._write(lambda: self.store.retry(job, fields, at_ms=at_ms)):
                jlog.info("job failed; retrying", error=error["name"], retry=job.retries + 1,
                          in_s=round(delay, 3))
            else:
                jlog.warning("late retry refused: the job moved on to another attempt")
            return None
        return self._finish(job, Status.FAILURE, fields, instance, jlog, sink, then_claim)

    def _store_result(self, job: Job, packed: bytes,
                      instance: InstanceSettings) -> tuple[str | None, str]:
        """Keep a large result in the object store: (its key, "") or (None, why not)."""
        if self.objects is None:
            return None, ""
        keep_until = self.clock() + instance.retention_s * 1000
        try:
            return store_result(self.objects, job.id, keep_until, packed), ""
        except StorageError as exc:
            return None, f" and the object store could not take it ({exc})"

    def fail(self, job: Job, exc: BaseException, instance: InstanceSettings) -> None:
        """Record a job whose run crashed inside the worker (a bug of ours) as failed."""
        error = {"name": "WorkerError", "traceback": "",
                 "message": f"the worker failed while running this job: {exc!r}"}
        jlog = self._log.bind(job_id=job.id, worker_id=job.worker, group=job.group)
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
        jlog: Any, sink: LogSink | None = None, then_claim: ClaimNext | None = None,
    ) -> list[Job] | None:
        """Write the outcome, with the attempt's last log lines, in one call (complete.lua);
        the claim ``then_claim`` answers rides on the first try only, so it is never made
        twice: the jobs it started, or None when that try failed (its claim may have run:
        an id it moved into our running list, unseen, is given back by the worker's
        reconciliation).

        The call checks that the job read no secret the sink does not know of (else it
        writes nothing): then the secrets are fetched, lines and outcome redacted again,
        and the call repeated."""
        claimed: list[Job] | None = None
        unsent = then_claim  # asked for on the first try only

        def call() -> int:
            nonlocal claimed, unsent
            sent, unsent = (unsent() if unsent is not None else None), None
            answer = self._complete_call(job, status, fields, instance, sink, sent)
            if sent is not None:
                claimed = answer.claimed
            return answer.outcome

        while True:
            outcome = self._write(call)
            if outcome != NEW_SECRETS or sink is None:
                break
            self._write(sink.learn_secrets)
            fields = {k: redact_value(v, sink.secrets) if k in ("result", "error") else v
                      for k, v in fields.items()}
        if sink is not None and outcome in (1, 2):
            sink.pending = []
        if outcome == 0:
            jlog.warning("late completion refused: the job moved on to another attempt")
            return claimed
        jlog.info("job completed", status=status.value, duration_ms=fields.get("duration_ms"))
        if job.flow_group and job.parent_job:  # a flow's step (StepOutcome.of)
            # The flow hears of it now; the scheduler forwards what an outage left behind.
            with contextlib.suppress(RedisUnavailable):
                forward(self.store.client, self.store.keys, job.group)
        return claimed

    def _complete_call(self, job: Job, status: Status, fields: dict[str, Any],
                       instance: InstanceSettings, sink: LogSink | None,
                       then_claim: NextClaim | None) -> Completed:
        """One completion, sent with those of other slots completing at the same moment."""
        step = StepOutcome.of(job, status, fields.get("result"), fields.get("error"))
        return self._completions.submit(Completion(
            job, status, fields, instance.retention_s,
            notify=None if step is None else step.to_json(),
            logs=None if sink is None or sink.fenced else sink.redacted(sink.pending),
            known_redactions=None if sink is None else sink.redaction_entries,
            max_log_bytes=instance.max_log_bytes, then_claim=then_claim))

    def _write(self, write: Callable[[], T]) -> T:
        """Run a Redis call until Redis answers: nothing a job did is lost to an outage.

        Only for calls that are safe to repeat (conditional scripts, reads, idempotent writes).
        The outage (backoff, log lines, error count) is set up at the first failure only: a
        job makes several of these calls, nearly always answered at once.
        """
        try:
            return write()
        except RedisUnavailable as exc:
            outage = Outage("job write", "worker", cap_s=RETRY_BACKOFF_MAX_S)
            delay = outage.failed(exc)
        while True:
            time.sleep(delay)
            try:
                answer = write()
                outage.ok()
                return answer
            except RedisUnavailable as exc:
                delay = outage.failed(exc)
