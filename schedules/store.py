"""Cron schedules: stored definitions, and turning each due fire into exactly one job.

Exactly one next job is queued per enabled schedule, with an id derived from
the schedule and the fire time, so several schedulers materialising the same
fire enqueue it once (the second gets DuplicateJob and moves on).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel

from auth.permissions import Principal
from common.clock import Clock, now_ms
from common.connection import queue_delete, redis_errors
from common.errors import DuplicateJob, GristmillError, NotFound, PermissionDenied, SpecError
from common.instance import decode as decode_instance
from common.paths import check_item_path
from common.store import Store
from jobs.admission import ADMIN_USER, FLOW_KINDS, OPERATOR, Admission
from jobs.spec import JobSpec
from schedules.cron import CATCH_UP_POLICIES, parse_cron, plan_fires

RUNS_KEPT = 100
_FIRE_NAMESPACE = uuid.UUID("5b0c3f5e-8f7e-4a59-9a38-6d1d1d9b7a10")


class Schedule(BaseModel):
    """A schedule's definition and state."""

    path: str
    script_path: str  # the script's path, or the flow's when is_flow
    cron: str
    tz: str = "UTC"
    args: dict[str, Any] = {}
    no_overlap: bool = False
    paused: bool = False
    catch_up: str = "skip"
    created_at: int = 0
    created_by: str = "u/admin"
    next_fire: int | None = None
    is_flow: bool = False

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes]) -> Schedule:
        data: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
        data["args"] = json.loads(data.get("args", "{}"))
        for flag in ("no_overlap", "paused", "is_flow"):
            data[flag] = data.get(flag) == "1"
        return cls.model_validate(data)

    def to_redis(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {
            "path": self.path, "script_path": self.script_path, "cron": self.cron, "tz": self.tz,
            "args": json.dumps(self.args), "no_overlap": int(self.no_overlap),
            "paused": int(self.paused), "catch_up": self.catch_up,
            "created_at": self.created_at, "created_by": self.created_by,
            "is_flow": int(self.is_flow),
        }
        if self.next_fire is not None:
            out["next_fire"] = self.next_fire
        return out


def fire_job_id(namespace: str, path: str, fire_ms: int) -> str:
    """The id of the job for one fire of one schedule: the same in every scheduler."""
    return str(uuid.uuid5(_FIRE_NAMESPACE, f"{namespace}:{path}:{fire_ms}"))


class ScheduleStore:
    """Create, change and materialise schedules."""

    def __init__(self, admission: Admission, *, clock: Clock = now_ms) -> None:
        self.admission = admission
        self.store: Store = admission.store
        self.client = admission.store.client
        self.keys = admission.store.keys
        self.clock = clock

    # -- definitions -----------------------------------------------------------------------

    @redis_errors
    def create(self, schedule: Schedule) -> Schedule:
        """Save a new schedule and queue its first fire (unless paused)."""
        check_item_path(schedule.path)
        parse_cron(schedule.cron, schedule.tz)
        if schedule.catch_up not in CATCH_UP_POLICIES:
            raise SpecError(f"catch-up policy {schedule.catch_up!r}; use one of "
                            f"{', '.join(CATCH_UP_POLICIES)}")
        if schedule.is_flow:  # a missing flow is a SpecError that says how to fix it
            if self.admission.flows is None:
                raise SpecError("this connection cannot schedule flows")
            self.admission.flows.describe(JobSpec(flow_path=schedule.script_path))
        else:
            self.admission.scripts.latest(schedule.script_path)  # NotFound says how to fix it
        schedule = schedule.model_copy(update={"created_at": self.clock(), "next_fire": None})
        if not self.client.hsetnx(self.keys.schedule(schedule.path), "path", schedule.path):
            raise GristmillError(f"schedule {schedule.path} exists; delete it first")
        self.client.hset(self.keys.schedule(schedule.path), mapping=schedule.to_redis())
        self.client.sadd(self.keys.schedule_paths, schedule.path)
        if not schedule.paused:
            self._queue_from(schedule, self.clock())
        return self.get(schedule.path)

    @redis_errors
    def get(self, path: str) -> Schedule:
        fields = self.client.hgetall(self.keys.schedule(path))
        if not fields:
            raise NotFound(f"no schedule at {path!r}")
        return Schedule.from_redis(fields)

    @redis_errors
    def all(self) -> list[Schedule]:
        return [self.get(p.decode()) for p in sorted(self.client.smembers(self.keys.schedule_paths))]

    @redis_errors
    def runs(self, path: str, limit: int = 20) -> list[str]:
        return [i.decode() for i in self.client.lrange(self.keys.schedule_runs(path), 0, limit - 1)]

    @redis_errors
    def pause(self, path: str) -> None:
        """Stop firing: the queued next fire is canceled."""
        schedule = self.get(path)
        self.client.hset(self.keys.schedule(path), "paused", 1)
        self.client.zrem(self.keys.schedules_due, path)
        self._cancel_next(schedule, "schedule paused")

    @redis_errors
    def resume(self, path: str) -> None:
        """Fire again, from the next fire after now (missed fires are not run)."""
        schedule = self.get(path)
        self.client.hset(self.keys.schedule(path), "paused", 0)
        self._queue_from(schedule.model_copy(update={"paused": False}), self.clock())

    @redis_errors
    def delete(self, path: str) -> None:
        schedule = self.get(path)
        self._cancel_next(schedule, "schedule deleted")
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.schedules_due, path)
        pipe.srem(self.keys.schedule_paths, path)
        queue_delete(pipe, self.keys.schedule(path), self.keys.schedule_runs(path))
        pipe.execute()

    # -- materialisation (scheduler) -------------------------------------------------------

    @redis_errors
    def due(self, now: int) -> list[tuple[str, int]]:
        """Enabled schedules whose queued fire is due: (path, fire ms)."""
        rows = self.client.zrange(self.keys.schedules_due, "-inf", now, byscore=True,
                                  withscores=True)
        return [(path.decode(), int(score)) for path, score in rows]

    def materialise(self, path: str, fire_ms: int, now: int) -> None:
        """The fire at ``fire_ms`` is due: queue the catch-up fires and the next one."""
        try:
            schedule = self.get(path)
        except NotFound:
            self.client.zrem(self.keys.schedules_due, path)
            return
        if schedule.paused:
            self.client.zrem(self.keys.schedules_due, path)
            return
        cron = parse_cron(schedule.cron, schedule.tz)
        catch_up, next_fire = plan_fires(cron, schedule.catch_up, fire_ms, now)
        previous = fire_job_id(self.keys.namespace, path, fire_ms)
        for fire in [*catch_up, next_fire]:
            previous = self._enqueue_fire(schedule, fire, previous)
        self._record_next(path, next_fire)

    # -- internals -------------------------------------------------------------------------

    def _queue_from(self, schedule: Schedule, now: int) -> None:
        cron = parse_cron(schedule.cron, schedule.tz)
        next_fire = cron.next_after(now)
        # A fire canceled by a pause keeps its id: resuming before it uses the one after.
        while self._fire_canceled(schedule.path, next_fire):
            next_fire = cron.next_after(next_fire)
        self._enqueue_fire(schedule, next_fire, None)
        self._record_next(schedule.path, next_fire)

    def _enqueue_fire(self, schedule: Schedule, fire_ms: int, previous: str | None) -> str:
        job_id = fire_job_id(self.keys.namespace, schedule.path, fire_ms)
        target = "flow_path" if schedule.is_flow else "path"
        spec = JobSpec.model_validate({target: schedule.script_path, "args": schedule.args,
                                       "id": job_id, "scheduled_for": fire_ms})
        try:
            # Checked again at every fire: a revoked permission stops the schedule's runs.
            job = self.admission.build(spec, principal=self._owner(schedule),
                                       trusted=schedule.created_by == ADMIN_USER)
            job = job.model_copy(update={
                "schedule_path": schedule.path,
                "skip_if_running": previous if schedule.no_overlap else None,
            })
            if job.kind in FLOW_KINDS and self.admission.flows is not None:
                self.admission.flows.open(job, spec)  # its first step waits for fire_ms
            else:
                self.store.enqueue(job, fresh_id=False)
        except DuplicateJob:
            return job_id  # another scheduler queued this fire
        except (SpecError, PermissionDenied, NotFound) as exc:
            # The script was deleted or the schedule is broken: the fire still leaves a record.
            job_id = self.admission.reject(
                json.dumps({"id": job_id, target: schedule.script_path, "args": schedule.args}),
                f"schedule {schedule.path}: {exc}",
            )
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.keys.schedule_runs(schedule.path), job_id)
        pipe.ltrim(self.keys.schedule_runs(schedule.path), 0, RUNS_KEPT - 1)
        pipe.execute()
        return job_id

    def _owner(self, schedule: Schedule) -> Principal:
        if schedule.created_by == ADMIN_USER or self.admission.authority is None:
            return OPERATOR
        return self.admission.authority.principal_for(schedule.created_by)

    def _fire_canceled(self, path: str, fire_ms: int) -> bool:
        try:
            job = self.store.get_job(fire_job_id(self.keys.namespace, path, fire_ms))
        except NotFound:
            return False
        return job.is_terminal

    def _record_next(self, path: str, next_fire: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        # GT: a slower scheduler never moves a schedule back to a fire already handled.
        pipe.zadd(self.keys.schedules_due, {path: next_fire}, gt=True)
        pipe.hset(self.keys.schedule(path), "next_fire", next_fire)
        pipe.execute()

    def _cancel_next(self, schedule: Schedule, reason: str) -> None:
        if schedule.next_fire is None:
            return
        job_id = fire_job_id(self.keys.namespace, schedule.path, schedule.next_fire)
        try:
            job = self.store.get_job(job_id)
            if not job.is_terminal:
                retention = decode_instance(self.client.hgetall(self.keys.settings)).retention_s
                self.store.cancel(job_id, by="schedule", reason=reason, retention_s=retention)
        except (NotFound, GristmillError):
            pass
