"""Flow jobs: a flow spec's record and its flow, created together (admission's flow half).

A flow job is never run by a worker: its record is written already ``running``
(worker ``flows``, the flow engine) in one script with the flow's definition,
initial state and start event (``flow_open.lua``), and it is completed by the
flow's last transition (:class:`flows.launcher.StepJobs`). Admission
(``jobs/admission.py``) calls :meth:`FlowJobs.describe` and
:meth:`FlowJobs.open` through its ``FlowJobsLike`` protocol, since flows/ builds
on jobs/ and not the reverse.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

import redis

from common import indexes, metrics
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import DuplicateJob, JobTimeout, NotFound, SpecError
from common.keys import EVENTS_MAXLEN, Keys
from common.luascripts import LuaScript
from common.models import Job, Kind, Status
from common.store import Store
from flows.inputs import bind_inputs
from flows.model import OpenFlow, dump_flow, parse_flow
from flows.state import Start
from flows.steps import StepRow, step_rows
from flows.store import FlowStore
from flows.transition import initial_state
from flows.versions import FlowVersions
from jobs.spec import JobSpec

FLOW_OPEN = LuaScript("flow_open", resources.files("flows").joinpath("lua", "flow_open.lua").read_text())
# The record's worker and claim: the flow engine, which completes it with complete.lua's fencing.
FLOW_WORKER = "flows"
FLOW_CLAIM = "flow"
NO_FLOW_RETRY = ("retry: a flow is not retried as a whole (its finished steps would run again); "
                 "give the steps that may fail a `retry` in the flow, as Windmill does")


def answered_early(job: Job) -> bool:
    """Whether a flow job's record carries the result of its ``early_return`` step."""
    return (job.model_extra or {}).get("early_result") is not None


class FlowJobs:
    """Describes and opens flow jobs on one Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, versions: FlowVersions | None = None, *,
                 clock: Clock = now_ms) -> None:
        self.client = client
        self.keys = keys
        self.versions = versions or FlowVersions(client, keys, clock=clock)
        self.clock = clock

    def describe(self, spec: JobSpec) -> dict[str, Any]:
        """The record fields that say what a flow spec runs: kind, and path and hash by path."""
        if spec.retry is not None:
            raise SpecError(NO_FLOW_RETRY)
        if spec.flow is not None:
            parse_flow(spec.flow)  # FlowDefinitionError (a SpecError) lists what is refused
            return {"kind": Kind.FLOWPREVIEW, "language": ""}
        try:
            version = self.versions.get(spec.flow_path or "")
        except NotFound as exc:
            raise SpecError(str(exc)) from None
        return {"kind": Kind.FLOW, "script_path": version.path, "script_hash": version.hash,
                "language": ""}

    def steps(self, flow_id: str) -> list[StepRow]:
        """The steps of a flow job as rows of a tree (empty for a flow whose state expired)."""
        group = self.client.get(self.keys.jobloc(flow_id))
        if group is None:
            raise NotFound(f"no job {flow_id} (never enqueued, or older than the retention period)")
        reader = FlowStore(self.client, self.keys)
        state = reader.state(group.decode(), flow_id)
        if state is None:
            return []
        return step_rows(state, reader.archived_frames(group.decode(), flow_id))

    def wait_early(self, store: Store, flow_id: str, timeout_s: float) -> tuple[Job, bool, Any]:
        """Wait until the flow answers early (``early_return``) or ends: (its record, whether it
        answered early, the early result); JobTimeout after ``timeout_s``."""
        key = self.keys.group(store.locate(flow_id)).flow_early(flow_id)
        deadline = time.monotonic() + timeout_s
        while True:
            job = store.get_job(flow_id)
            if answered_early(job):
                return job, True, json.loads((job.model_extra or {})["early_result"])
            if job.is_terminal:
                return job, False, None
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(f"flow {flow_id} is still {job.status} after {timeout_s:g} s")
            # Rotating the list onto itself leaves its element for the other waiters.
            self.client.blmove(key, key, store.block_s(min(left, 1.0)), "RIGHT", "LEFT")

    def definition(self, job: Job, spec: JobSpec | None = None) -> OpenFlow:
        """The flow a flow job runs: its pinned version, or the preview's own document."""
        if job.kind == Kind.FLOWPREVIEW:
            if spec is None or spec.flow is None:
                raise SpecError("a flow preview needs its definition (flow)")
            return parse_flow(spec.flow)
        return self.versions.by_hash(job.script_hash or "").flow

    def open(self, job: Job, spec: JobSpec | None = None, *, flow: OpenFlow | None = None) -> None:
        """Create the flow job (running) with its flow; DuplicateJob when the id is taken.

        The args are bound to the flow's schema first (FlowInputError says what does
        not fit), so nothing is written for a flow that cannot start.
        """
        definition = flow or self.definition(job, spec)
        args = bind_inputs(definition.schema_, job.args)
        now = self.clock()
        # A flow for later (a schedule's next fire) is opened now; its first step waits.
        starts = max(now, job.scheduled_for)
        job = job.model_copy(update={
            "status": Status.RUNNING, "started_at": starts, "worker": FLOW_WORKER, "claim": FLOW_CLAIM,
            "attempt": 1, "args": args})
        state = initial_state(job.id, args)
        state.root.not_before = starts
        state.timeout_s = job.timeout_s
        times_out = starts + job.timeout_s * 1000 if job.timeout_s else 0
        self._write(job, dump_flow(definition), state.model_dump_json(), now, times_out)

    @redis_errors
    def _write(self, job: Job, definition: str, state: str, now: int, times_out: int) -> None:
        g = self.keys.group(job.group)
        loc = self.keys.jobloc(job.id)
        record = [item for pair in {**job.to_redis(), "ix": indexes.record_field(job)}.items()
                  for item in pair]
        previous = self.client.set(loc, job.group, nx=True, get=True)
        if previous is not None and previous.decode() != job.group:
            raise DuplicateJob(job.id)
        self.client.sadd(self.keys.groups, job.group)
        created = FLOW_OPEN(
            self.client,
            [g.job(job.id), g.events, g.flow(job.id), g.flow_events(job.id), g.flow_queue,
             g.flows_running, g.flow_timers,
             *(g.index(e) for e in indexes.entries_for(job, Status.RUNNING))],
            [job.id, now, EVENTS_MAXLEN, indexes.member(job.created_at, job.id), definition, state,
             Start().model_dump_json(), times_out, *record])
        if not created:
            raise DuplicateJob(job.id)
        metrics.JOBS_ENQUEUED.labels(group=job.group, kind=job.kind.value).inc()
