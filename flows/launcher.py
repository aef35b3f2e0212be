"""The flow engine's hands: step jobs enqueued, canceled, the flow job completed.

:class:`StepJobs` carries out the actions of a flow's outbox (``FlowStore.dispatch``).
Every call may be repeated after a crash, so each is idempotent: a step job's
id is given by the transition (a second enqueue is refused by the id), a
cancel of a finished job does nothing, a completed flow job is not completed
twice (``complete.lua`` answers 2).

Steps run as the flow's ``permissioned_as``. A ``script`` or ``flow`` step
needs run permission for its path, checked here when it starts; a refusal is
recorded as the step's failed job (nothing is lost) and fails the step.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from common.connection import redis_errors
from common.errors import DuplicateJob, GristmillError, NotFound, PermissionDenied, SpecError
from common.models import Job, Kind, Status
from common.store import Store
from flows.handoff import StepOutcome, forward, send
from flows.jobs import FlowJobs
from flows.state import EarlyReturn, FlowCompleted, JobCompleted, StartJob
from jobs.admission import Admission

_CACHE = 1024
EARLY_TTL_S = 24 * 3600  # the wake-up list of run_wait_result callers of one flow


class StepJobs:
    """A ``StepLauncher`` (flows/store.py) over the job store and admission."""

    def __init__(self, store: Store, admission: Admission, flow_jobs: FlowJobs, *,
                 retention_s: Callable[[], int]) -> None:
        self.store = store
        self.admission = admission
        self.flow_jobs = flow_jobs
        self.retention_s = retention_s
        self._flows: OrderedDict[str, Job] = OrderedDict()

    def _flow(self, flow_id: str) -> Job:
        """The flow job's record (what a step inherits never changes, so it is cached)."""
        job = self._flows.get(flow_id)
        if job is None:
            job = self._flows[flow_id] = self.store.get_job(flow_id)
            if len(self._flows) > _CACHE:
                self._flows.popitem(last=False)
        return job

    # -- start_job -----------------------------------------------------------------------------

    @redis_errors
    def start_job(self, flow_id: str, action: StartJob) -> None:
        flow = self._flow(flow_id)
        # A rawscript step needs no look-up and cannot be refused: the enqueue itself refuses
        # an id enqueued before a crash (DuplicateJob), and completes one cut short after
        # claiming its location; two round trips saved a step. A script or flow step is
        # looked up first, so a refusal recorded before a crash is not recorded again.
        if action.kind != "rawscript" and self._recorded(action.job):
            return  # enqueued before a crash (or refused and recorded)
        try:
            job = self._step_job(flow, action)
            if job.kind == Kind.FLOW:
                self.flow_jobs.open(job)
            else:
                self.store.enqueue(job, fresh_id=False)
        except DuplicateJob:
            return
        except (SpecError, PermissionDenied, NotFound) as exc:
            self._refuse(flow, action, exc)

    def _recorded(self, job_id: str) -> bool:
        """Whether the step's record exists. Its location alone is not enough: an enqueue
        cut short after claiming the location wrote no record, and is to be done again."""
        group = self.store.client.get(self.store.keys.jobloc(job_id))
        return group is not None and bool(
            self.store.client.exists(self.store.keys.group(group.decode()).job(job_id)))

    def _step_job(self, flow: Job, action: StartJob) -> Job:
        fields: dict[str, Any]
        if action.kind == "rawscript":
            fields = {"kind": Kind.PREVIEW, "code": action.content, "language": action.language or ""}
            tag = action.tag or action.language or ""
            timeout_s = action.timeout_s
        elif action.kind == "script":
            version = self.admission.scripts.get(action.script_hash or action.script_path or "")
            self.admission.require_run(flow.permissioned_as, version.path)
            fields = {"kind": Kind.SCRIPT, "script_path": version.path, "script_hash": version.hash,
                      "language": version.language}
            tag = action.tag or version.tag or version.language
            timeout_s = action.timeout_s or version.timeout_s
        else:
            flow_version = self.flow_jobs.versions.get(action.flow_path or "")
            self.admission.require_run(flow.permissioned_as, flow_version.path)
            fields = {"kind": Kind.FLOW, "script_path": flow_version.path,
                      "script_hash": flow_version.hash, "language": ""}
            tag = action.tag or flow.tag
            timeout_s = action.timeout_s
        now = self.store.clock()
        return Job(
            id=action.job, status=Status.QUEUED, tag=tag, group=self.admission.route(tag),
            scheduled_for=max(action.scheduled_for, now), created_at=now, created_by=flow.created_by,
            permissioned_as=flow.permissioned_as, args=action.args, priority=action.priority or 0,
            timeout_s=timeout_s, parent_job=flow.id, root_job=flow.root_job or flow.id,
            flow_step_id=action.module_id, flow_group=flow.group, **fields)

    def _refuse(self, flow: Job, action: StartJob, exc: Exception) -> None:
        """Record the refused step as a failed job of its flow, and tell the flow."""
        error = {"name": type(exc).__name__, "traceback": "",
                 "message": f"step {action.module_id!r} could not start: {exc}"}
        kind = {"rawscript": Kind.PREVIEW, "script": Kind.SCRIPT, "flow": Kind.FLOW}[action.kind]
        now = self.store.clock()
        job = Job(
            id=action.job, kind=kind, status=Status.FAILURE, tag=flow.tag, group=flow.group,
            language=action.language or "", script_path=action.script_path or action.flow_path,
            scheduled_for=now, created_at=now, completed_at=now, created_by=flow.created_by,
            permissioned_as=flow.permissioned_as, args=action.args, parent_job=flow.id,
            root_job=flow.root_job or flow.id, flow_step_id=action.module_id, flow_group=flow.group,
            error=error, duration_ms=0)
        self.store.reject(job, retention_s=self.retention_s(), fresh_id=False)
        send(self.store.client, self.store.keys, flow.group, flow.id,
             JobCompleted(job=action.job, success=False, error=error))

    # -- the other actions ---------------------------------------------------------------------

    def cancel_jobs(self, flow_id: str, jobs: list[str]) -> None:
        for job_id in jobs:
            try:
                self.store.cancel(job_id, by=f"flow {flow_id}", retention_s=self.retention_s(),
                                  reason="its flow was canceled or no longer needs it")
            except GristmillError:
                continue  # gone or already completed: nothing to cancel

    @redis_errors
    def early_return(self, flow_id: str, action: EarlyReturn) -> None:
        """Keep the early result on the flow job's record (``early_result``, JSON), then wake
        the callers waiting for it (``FlowJobs.wait_early``)."""
        flow = self._flow(flow_id)
        self.store.set_fields(flow, {"early_result": json.dumps(action.result)})
        self._wake(flow)

    def _wake(self, flow: Job) -> None:
        early = self.store.keys.group(flow.group).flow_early(flow.id)
        pipe = self.store.client.pipeline(transaction=False)
        pipe.lpush(early, "1")
        pipe.expire(early, EARLY_TTL_S)
        pipe.execute()

    @redis_errors
    def complete_flow(self, flow_id: str, action: FlowCompleted) -> None:
        flow = self._flow(flow_id)
        status = Status(action.status)
        fields: dict[str, Any] = {"duration_ms": max(0, self.store.clock() - (flow.started_at or 0))}
        if status == Status.SUCCESS:
            fields["result"] = action.result
        elif action.error is not None:
            fields["error"] = {"traceback": "", **action.error}
        step = StepOutcome.of(flow, status, action.result, fields.get("error"))
        self.store.complete(flow, status, fields, retention_s=self.retention_s(),
                            notify=None if step is None else step.to_json())
        self._flows.pop(flow_id, None)
        self._wake(flow)
        if step is not None:
            forward(self.store.client, self.store.keys, flow.group)
