"""The scheduler's flow duties: per group an advancer thread and a canceler thread.

The advancer takes a flow with pending events off the group's ``flowq`` (a
blocking move into its own processing list), applies every event with its
actions (``FlowStore.process``) and releases it. Between takes it does the
duties that come due at known times: it fires due suspend timers, sweeps flows
silent for too long (``FlowStore.sweep``) and forwards step outcomes an outage
left in ``flownotify``. The canceler blocks on the flow jobs' control list and
turns each cancel request into a ``Cancel`` event.

At rest neither polls (``docs/ARCHITECTURE.md``, "The scheduler at rest"): the
advancer blocks until the earliest of the next timer, the next flow that can go
stale and ``BLOCK_S``; an event ends its wait at once. Every timer and running
flow is written together with an event on ``flowq`` (``flow_open.lua``, an
advancer's own dispatch), so an advancer that took one looks again within
``LOOK_AGAIN_MS``; the ``BLOCK_S`` look is the safety net for those another
scheduler wrote and then died. A stopping scheduler pushes :data:`WAKE`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

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

# The longest blocking wait of the advancer and the canceler: their idle cost (one command
# each per BLOCK_S and group), and the safety net's period. A stopping scheduler does not
# wait for it: it pushes WAKE, an element that only ends a wait.
BLOCK_S = 30.0
WAKE = "@wake"
# A running flow that committed nothing for this long has its live steps looked up.
STALE_AFTER_MS = 5_000
# After this advancer took a flow (it may have added a timer or a running flow), the timers
# and the sweep are looked at again within this (the former tick's precision).
LOOK_AGAIN_MS = 1_000
PAGE = 100  # timers fired / flows swept per look; what is left is due at the next
STOP_WAIT_S = 0.2  # a stopping scheduler wakes its waiters again this often until they end


@dataclass(frozen=True)
class Look:
    """What one look at a group's duties found (the reads of :meth:`FlowStore.next_duties`)."""

    now: int
    next_timer_ms: int | None  # the earliest timer's due time
    oldest_commit_ms: int | None  # the oldest running flow's last commit (or sweep)


def next_look(look: Look, *, stale_after_ms: int = STALE_AFTER_MS) -> int:
    """When the group's timers and sweep next need a look (epoch ms): the next timer, the next
    flow that can go stale, else BLOCK_S from now. What is still due (more than a page of
    timers or stale flows) is looked at again at once."""
    due = [look.now + int(BLOCK_S * 1000)]
    if look.next_timer_ms is not None:
        due.append(look.next_timer_ms)
    if look.oldest_commit_ms is not None:
        due.append(look.oldest_commit_ms + stale_after_ms)
    return max(look.now, min(due))


def after_take(next_look_ms: int, last_look_ms: int) -> int:
    """The next look once the advancer took a flow: no later than LOOK_AGAIN_MS after the last."""
    return min(next_look_ms, last_look_ms + LOOK_AGAIN_MS)


def block_for(next_look_ms: int, now: int) -> float:
    """Seconds the advancer blocks on its queue before the next look (never 0: that is forever)."""
    return min(BLOCK_S, max(0.01, (next_look_ms - now) / 1000))


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
        self.threads: dict[str, threading.Thread] = {}  # the advancers
        self.cancelers: dict[str, threading.Thread] = {}
        self.log = log.get(scheduler_id=scheduler_id)

    def start_group(self, group: str, on_death: Callable[[str], None]) -> None:
        if group not in self.threads:
            self.threads[group] = vital(f"flows-{group}", lambda: self._advance_loop(group), on_death)
            self.cancelers[group] = vital(f"flow-cancels-{group}", lambda: self._cancel_loop(group),
                                          on_death)

    def join(self) -> None:
        """Wait for the group threads to end (after ``stopping``): wake their blocking waits,
        again while they run (another scheduler's waiter may take a wake element first)."""
        while True:
            alive = [(group, key, thread) for group in self.threads
                     for key, thread in zip(self._wait_lists(group),
                                            (self.threads[group], self.cancelers[group]), strict=True)
                     if thread.is_alive()]
            if not alive:
                return
            for group in {group for group, _, _ in alive}:
                with contextlib.suppress(RedisUnavailable):  # they end at their timeout then
                    self.flows.wake([key for g, key, _ in alive if g == group], WAKE)
            alive[0][2].join(STOP_WAIT_S)

    def _wait_lists(self, group: str) -> tuple[str, str]:
        """The lists the group's advancer and canceler block on."""
        g = self.store.keys.group(group)
        return g.flow_queue, g.control(FLOW_WORKER)

    def _advance_loop(self, group: str) -> None:
        outage = Outage(f"flows {group}", "scheduler", self.log)
        held: str | None = None
        next_look_ms = last_look_ms = 0
        while not self.stopping.is_set():
            try:
                if outage.ongoing:
                    # A flow taken before the outage may still sit in our processing list.
                    self.flows.recover_advancer(group, self.id)
                    held = None
                    next_look_ms = 0  # what the outage left: forwarded, fired, swept now
                if self.flows.clock() >= next_look_ms:
                    last_look_ms = self.flows.clock()
                    next_look_ms = next_look(self.look(group))
                block_s = self.store.block_s(block_for(next_look_ms, self.flows.clock()))
                held = self.advance(group, block_s, release=held)
                if held is not None and held != WAKE:
                    next_look_ms = after_take(next_look_ms, last_look_ms)
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
        call (one round trip for both), or with ``FlowStore.release``. A :data:`WAKE`
        element is taken (and released) like a flow, and only ends the wait.
        """
        flow_id = self.flows.take(group, self.id, block_s, release=release)
        if flow_id is None or flow_id == WAKE:
            return flow_id
        self.flows.retention_s = self.instance().retention_s
        try:
            self.flows.process(group, flow_id, self.launcher)
        except RedisUnavailable:
            raise  # it stays in the processing list; taken again after the outage
        except Exception:
            self.log.exception("flow advance failed", flow_id=flow_id, group=group)
        return flow_id

    def look(self, group: str) -> Look:
        """The group's duties due now: forward left outcomes, then fire the due timers and sweep
        the stale flows if the earliest of each says some are; and when the next come due."""
        now = self.flows.clock()
        self.flows.forward(group)
        next_timer_ms, oldest_commit_ms = self.flows.next_duties(group)
        timers_due = next_timer_ms is not None and next_timer_ms <= now
        stale = oldest_commit_ms is not None and oldest_commit_ms + STALE_AFTER_MS <= now
        if timers_due:
            self.flows.fire_due_timers(group, now, limit=PAGE)
        if stale:
            self.flows.sweep(group, stale_after_ms=STALE_AFTER_MS, outcome_of=self._outcome_of,
                             limit=PAGE)
        if timers_due or stale:  # fired timers are gone, swept flows marked: read again
            next_timer_ms, oldest_commit_ms = self.flows.next_duties(group)
        return Look(now, next_timer_ms, oldest_commit_ms)

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

    def _cancel_loop(self, group: str) -> None:
        """A cancel of a running flow job (``cancel.lua`` asks its worker, ``flows``, on its
        control list): a Cancel event, as soon as it is asked."""
        outage = Outage(f"flow cancels {group}", "scheduler", self.log)
        control = self._wait_lists(group)[1]
        while not self.stopping.is_set():
            try:
                flow_id = self.flows.next_cancel(control, self.store.block_s(BLOCK_S))
                if flow_id is not None and flow_id != WAKE:
                    self._cancel(group, flow_id)
            except RedisUnavailable as exc:
                self.stopping.wait(outage.failed(exc))
                continue
            outage.ok()

    def _cancel(self, group: str, flow_id: str) -> None:
        try:
            job = self.store.get_job(flow_id)
        except NotFound:
            return
        cancel = Cancel(by=job.canceled_by or "", reason=job.canceled_reason or "")
        self.flows.send(group, flow_id, cancel)
