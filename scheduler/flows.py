"""The scheduler's flow duties: an advancer thread per group, and the flows' part of the tick.

The advancer takes a flow with pending events off the group's ``flowq`` (a
blocking move into its own processing list), applies every event with its
actions (``FlowStore.process``) and releases it. The tick forwards step
outcomes an outage left in ``flownotify``, fires due suspend timers, sweeps
flows silent for too long (``FlowStore.sweep``), turns cancel requests of flow
jobs into ``Cancel`` events, and gives a dead scheduler's flows back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from common import log
from common.clock import Clock
from common.errors import NotFound, RedisUnavailable
from common.instance import InstanceSettings
from common.loops import Outage, vital
from common.store import Store
from flows.expr import JsEngine
from flows.handoff import StepOutcome
from flows.jobs import FLOW_WORKER, FlowJobs
from flows.launcher import StepJobs
from flows.state import Cancel
from flows.store import FlowStore
from jobs.admission import Admission

TAKE_BLOCK_S = 1.0  # also how long a stopping scheduler waits for its advancers
# A running flow that committed nothing for this long has its live steps looked up.
STALE_AFTER_MS = 5_000


class FlowEngine:
    """The flow store, its launcher and the scheduler's flow loops, for one scheduler."""

    def __init__(self, store: Store, admission: Admission, flow_jobs: FlowJobs, *,
                 scheduler_id: str, stopping: threading.Event, clock: Clock,
                 instance: Callable[[], InstanceSettings]) -> None:
        self.store = store
        self.id = scheduler_id
        self.stopping = stopping
        self.instance = instance
        self.flows = FlowStore(store.client, store.keys, JsEngine(), clock=clock,
                               retention_s=instance().retention_s)
        self.launcher = StepJobs(store, admission, flow_jobs,
                                 retention_s=lambda: self.instance().retention_s)
        self.threads: dict[str, threading.Thread] = {}
        self.log = log.get(scheduler_id=scheduler_id)

    def start_group(self, group: str, on_death: Callable[[str], None]) -> None:
        if group not in self.threads:
            self.threads[group] = vital(f"flows-{group}", lambda: self._advance_loop(group), on_death)

    def join(self) -> None:
        for thread in self.threads.values():
            thread.join()

    def _advance_loop(self, group: str) -> None:
        outage = Outage(f"flows {group}", "scheduler", self.log)
        held: str | None = None
        while not self.stopping.is_set():
            try:
                if outage.ongoing:
                    # A flow taken before the outage may still sit in our processing list.
                    self.flows.recover_advancer(group, self.id)
                    held = None
                held = self.advance(group, self.store.block_s(TAKE_BLOCK_S), release=held)
            except RedisUnavailable as exc:
                self.stopping.wait(outage.failed(exc))
                continue
            outage.ok()
        if held is not None:
            with contextlib.suppress(RedisUnavailable):
                self.flows.release(group, self.id, held)

    def advance(self, group: str, block_s: float, *, release: str | None = None) -> str | None:
        """Take one flow with events (waiting up to ``block_s``), apply them; its id, or None.

        The flow stays in this advancer's processing list: ``release`` it with the next
        call (one round trip for both), or with ``FlowStore.release``.
        """
        flow_id = self.flows.take(group, self.id, block_s, release=release)
        if flow_id is None:
            return None
        self.flows.retention_s = self.instance().retention_s
        try:
            self.flows.process(group, flow_id, self.launcher)
        except RedisUnavailable:
            raise  # it stays in the processing list; taken again after the outage
        except Exception:
            self.log.exception("flow advance failed", flow_id=flow_id, group=group)
        return flow_id

    def tick(self, groups: set[str], now: int) -> None:
        """The flows' part of the scheduler's heartbeat, for every group."""
        for group in groups:
            self.flows.forward(group)
            self.flows.fire_due_timers(group, now)
            self.flows.sweep(group, stale_after_ms=STALE_AFTER_MS, outcome_of=self._outcome_of)
            self._cancel_requests(group)

    def recover_scheduler(self, scheduler_id: str, groups: set[str]) -> None:
        """Give the flows a dead scheduler's advancers held back to their groups' queues."""
        for group in groups:
            self.flows.recover_advancer(group, scheduler_id)

    def _outcome_of(self, job_id: str) -> StepOutcome | None:
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            return None
        if not job.is_terminal:
            return None
        return StepOutcome.of(job, job.status, job.result, job.error)

    def _cancel_requests(self, group: str) -> None:
        """A cancel of a running flow job (``cancel.lua`` asks its worker, ``flows``): a Cancel event."""
        control = self.store.keys.group(group).control(FLOW_WORKER)
        while (raw := self.store.client.lpop(control)) is not None:
            flow_id = raw.decode()
            try:
                job = self.store.get_job(flow_id)
            except NotFound:
                continue
            cancel = Cancel(by=job.canceled_by or "", reason=job.canceled_reason or "")
            self.flows.send(group, flow_id, cancel)
