"""The Python client for producers and operators.

    from gristmill import Gristmill
    gm = Gristmill()                      # GRISTMILL_REDIS_URL, else the embedded server of `up`
    job_id = gm.run_script("u/alice/hello", {"name": "Ada"})
    print(gm.wait(job_id).result)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from auth.identity import IdentityStore
from common import instance
from common.clock import now_ms
from common.connection import connect, ping, redis_errors
from common.errors import NotFound, SpecError
from common.fleet import Fleet
from common.instance import InstanceSettings
from common.keys import Keys
from common.models import Job, Kind, ScriptVersion, Status
from common.queries import (
    EVERYONE,
    JobFilter,
    OnDamaged,
    Page,
    Viewer,
    iter_jobs,
    list_jobs,
    list_page,
)
from common.settings import Settings
from common.store import LogEntry, Store
from flows.jobs import FlowJobs
from flows.steps import StepRow
from flows.versions import FlowVersion
from jobs import bulk
from jobs.admission import ADMIN_USER, NAME_PATTERN, Admission, BatchOutcome, RawSpec, raw_text
from jobs.locking import Locker
from jobs.scripts import ScriptStore
from jobs.spec import JobSpec, parse_spec
from schedules.store import ScheduleStore
from storage.logs import read_logs
from storage.objects import from_settings
from storage.results import with_result


class Gristmill:
    """A connection to one Gristmill instance (one Redis, one namespace)."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.url = redis_url or self.settings.effective_redis_url
        self.redis = connect(self.url, password=self.settings.redis_password(),
                             socket_timeout=self.settings.redis_socket_timeout_s)
        self.keys = Keys(self.settings.namespace)
        self.store = Store(self.redis, self.keys)
        self.scripts = ScriptStore(self.redis, self.keys)
        self.fleet = Fleet(self.redis, self.keys)
        self.identity = IdentityStore(self.redis, self.keys)
        self.flow_jobs = FlowJobs(self.redis, self.keys)
        self.flows = self.flow_jobs.versions
        self.admission = Admission(self.store, self.scripts, self.settings,
                                   authority=self.identity, flows=self.flow_jobs)
        self.schedules = ScheduleStore(self.admission)
        self.locker = Locker(self.scripts, self.admission)
        self.objects = from_settings(self.settings.object_store_url)

    # -- running ---------------------------------------------------------------------------

    def submit(self, spec: JobSpec | dict[str, Any]) -> str:
        """Validate and enqueue a spec as the operator; return the job id (SpecError, DuplicateJob)."""
        parsed = spec if isinstance(spec, JobSpec) else parse_spec(spec)
        return self.admission.submit(parsed).id

    def enqueue_many(self, specs: Iterable[RawSpec], *, batch_size: int = 1000) -> BatchOutcome:
        """Enqueue many specs as the operator, ``batch_size`` per round trip to the inbox.

        Each distinct template (a spec without its ``id`` and ``args``) is checked in
        full once; each job then gets only an id and its args checked, and a batch
        goes to Redis as one stored batch and one inbox reference (one round trip).
        The returned ids are durable at once; a scheduler admits them (as the
        operator) moments later, so ``get_job`` may answer "not admitted yet" and
        ``wait`` waits. Never raises for a bad spec: it is recorded as a failed job
        saying why and named in ``outcome.rejected``; a spec whose ``id`` exists or
        came earlier in the call is in ``outcome.duplicates`` (not run twice).
        ``outcome.ids`` has one id per spec. ARCHITECTURE.md, "enqueue_many".
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        outcome = BatchOutcome()
        verdicts: dict[Hashable, str | None] = {}
        seen: set[str] = set()
        batch: list[RawSpec] = []
        for spec in specs:
            batch.append(spec)
            if len(batch) >= batch_size:
                outcome.extend(self._enqueue_batch(batch, verdicts, seen))
                batch = []
        if batch:
            outcome.extend(self._enqueue_batch(batch, verdicts, seen))
        return outcome

    def _enqueue_batch(self, batch: list[RawSpec], verdicts: dict[Hashable, str | None],
                       seen: set[str]) -> BatchOutcome:
        """Check a batch (templates judged once per call), record its rejections, push it."""

        def taken(ids: list[str]) -> set[str]:
            existing = set(ids) & seen
            return existing | self.store.existing_ids([i for i in ids if i not in existing])

        prepared = bulk.prepare(batch, self.admission.judge, taken=taken, verdicts=verdicts)
        seen.update(spec["id"] for spec in prepared.specs)
        outcome = BatchOutcome(ids=prepared.ids, rejected=prepared.rejected,
                               duplicates=prepared.duplicates)
        for i, why in prepared.rejected.items():
            outcome.ids[i] = self.admission.reject(raw_text(batch[i]), why)
        if prepared.specs:
            self.store.push_batch(str(uuid.uuid4()), bulk.pack_batch(prepared, now_ms()))
        return outcome

    def run_script(self, path: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        """Run the latest version at ``path``; options are spec fields (``scheduled_for``, ...)."""
        return self.submit({"path": path, "args": args or {}, **options})

    def run_hash(self, script_hash: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        return self.submit({"hash": script_hash, "args": args or {}, **options})

    def run_preview(
        self, code: str, language: str, args: dict[str, Any] | None = None, **options: Any
    ) -> str:
        return self.submit({"code": code, "language": language, "args": args or {}, **options})

    @redis_errors
    def push_raw(self, spec: dict[str, Any] | str) -> None:
        """LPUSH a raw spec to the inbox, as any Redis client would; the scheduler admits it."""
        self.redis.lpush(self.keys.inbox, spec if isinstance(spec, str) else json.dumps(spec))

    def cancel(self, job_id: str, *, reason: str = "", by: str = ADMIN_USER) -> str:
        """Cancel a job: ``canceled`` when it was queued, ``requested`` when it is running."""
        return self.store.cancel(job_id, by=by, reason=reason,
                                 retention_s=self.instance_settings().retention_s)

    def cancel_queued(self, *, group: str | None = None, reason: str = "", by: str = ADMIN_USER,
                      limit: int | None = None) -> int:
        """Cancel every queued job (of ``group``, else of all groups), in batched scripts."""
        retention_s = self.instance_settings().retention_s
        groups = [group] if group else sorted(g.decode() for g in self.redis.smembers(self.keys.groups))
        total = 0
        for name in groups:
            left = None if limit is None else limit - total
            if left is not None and left <= 0:
                break
            total += self.store.cancel_queued(name, by=by, reason=reason, retention_s=retention_s,
                                              limit=left)
        return total

    # -- reading ---------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        """The job's record; NotFound saying so when it may still wait in the inbox."""
        try:
            return self.with_result(self.store.get_job(job_id))
        except NotFound as exc:
            waiting = self.store.inbox_waiting()
            if not waiting:
                raise
            raise NotFound(f"{exc}; {waiting} inbox element(s) wait in the inbox for a scheduler "
                           "to admit them (is one running?): the job may be one of them") from None

    def wait(self, job_id: str, timeout_s: float = 3600.0, *, early_return: bool = False) -> Job:
        """Block until the job completes (JobTimeout after ``timeout_s``).

        With ``early_return``, a flow whose ``early_return`` step completed answers
        at that moment, as Windmill's synchronous callers get it: the flow job's
        record (maybe still running) with ``result`` set to that step's result
        (:func:`flows.jobs.answered_early` tells the two answers apart).
        """
        if early_return:
            job = self.store.get_job(job_id)
            if job.kind in (Kind.FLOW, Kind.FLOWPREVIEW):
                done, answered, early = self.flow_jobs.wait_early(self.store, job_id, timeout_s)
                return done.model_copy(update={"result": early}) if answered else self.with_result(done)
        return self.with_result(self.store.wait(job_id, timeout_s))

    def with_result(self, job: Job) -> Job:
        """The job with a result kept in the object store read back (storage/results.py)."""
        return with_result(self.objects, job)

    def logs(self, job_id: str, *, follow: bool = False, after: str = "0-0") -> Iterator[LogEntry]:
        """The job's log entries after stream id ``after``; with ``follow``, new ones until
        the job completes. The part of a large log kept in the object store is read in place
        of its marker entry (storage/logs.py)."""
        return read_logs(self.store, self.objects, job_id, follow=follow, after=after)

    def list_jobs(
        self, *, status: Status | None = None, kind: Kind | None = None,
        group: str | None = None, limit: int = 50, on_damaged: OnDamaged | None = None,
    ) -> list[Job]:
        """The newest ``limit`` matching jobs; records this version cannot read are left out,
        and passed to ``on_damaged`` (a :class:`BadRecord` naming the job) when given."""
        return list_jobs(self.store, status=status, kind=kind, group=group, limit=limit,
                         on_damaged=on_damaged)

    def list_page(self, flt: JobFilter, *, viewer: Viewer = EVERYONE, cursor: str | None = None,
                  limit: int = 50) -> Page:
        """One page of matching jobs from the listing indexes, with the cursor of the next."""
        return list_page(self.store, flt, viewer=viewer, cursor=cursor, limit=limit)

    def iter_jobs(self, flt: JobFilter, *, page_size: int = 500,
                  on_damaged: OnDamaged | None = None) -> Iterator[Job]:
        """Every matching job, newest first; records this version cannot read are left out,
        and passed to ``on_damaged`` (a :class:`BadRecord` naming the job) when given."""
        return iter_jobs(self.store, flt, page_size=page_size, on_damaged=on_damaged)

    # -- flows -----------------------------------------------------------------------------

    def flow_steps(self, flow_id: str) -> list[StepRow]:
        """The steps of a flow job as rows of a tree (empty for a flow whose state expired)."""
        return self.flow_jobs.steps(flow_id)

    def deploy_flow(self, path: str, document: dict[str, Any] | str | bytes, *,
                    created_by: str = ADMIN_USER) -> tuple[FlowVersion, bool]:
        """Check and save a flow version (JSON or YAML); (version, is_new)."""
        return self.flows.deploy(path, document, created_by=created_by)

    def get_flow(self, ref: str) -> FlowVersion:
        """A flow version by hash, or the latest at a path."""
        return self.flows.get(ref)

    def run_flow(self, path: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        return self.submit({"flow_path": path, "args": args or {}, **options})

    def run_flow_preview(self, flow: dict[str, Any], args: dict[str, Any] | None = None,
                         **options: Any) -> str:
        return self.submit({"flow": flow, "args": args or {}, **options})

    # -- scripts and settings --------------------------------------------------------------

    def deploy_script(self, path: str, code: str, language: str) -> tuple[ScriptVersion, bool]:
        """Save a new immutable version (or find the identical one); (version, is_new).

        A new python3 version with third-party imports gets a dependencies job
        (``version.lock_job``); runs by path keep the previous locked version until it ends.
        """
        return self.locker.deploy(path, language, code)

    def get_script(self, ref: str) -> ScriptVersion:
        return self.scripts.get(ref)

    @redis_errors
    def routes(self) -> dict[str, str]:
        """Tag -> worker group (``gm:routing``); tags not listed go to the default route."""
        raw = self.redis.hgetall(self.keys.routing)
        return {k.decode(): v.decode() for k, v in sorted(raw.items())}

    @redis_errors
    def set_route(self, tag: str, group: str | None) -> None:
        """Send jobs tagged ``tag`` to ``group`` (None: back to the default route)."""
        for what, name in (("tag", tag), ("group", group)):
            if name is not None and not NAME_PATTERN.fullmatch(name):
                raise SpecError(f"bad {what} {name!r}: letters, digits, _ . - (at most 64)")
        if group is None:
            self.redis.hdel(self.keys.routing, tag)
        else:
            self.redis.hset(self.keys.routing, tag, group)

    def instance_settings(self) -> InstanceSettings:
        return instance.load(self.redis, self.keys)

    def set_setting(self, key: str, value: str) -> str:
        return instance.save_one(self.redis, self.keys, key, value)

    def ping(self, timeout_s: float = 0.0) -> None:
        """Check Redis answers; retry up to ``timeout_s``."""
        ping(self.redis, timeout_s)
