"""The scheduler process: admit inbox specs, promote due jobs, recover dead workers, trim.

Several schedulers may run at once: every step that moves a job is one atomic
script conditional on the job's state, so two of them never move a job twice.
Nothing here polls Redis on a fixed interval: each group's promoter sleeps on
a blocking pop of the group's wake list until its next job is due, the inbox
blocks on the inbox, and the once-a-second tick reads Redis only when a read
can tell something new (the lease renewal every third of the lease, the dead
when one can have expired, the schedules when one fires).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

from common import log, metrics
from common.clock import Clock, now_ms
from common.errors import RedisUnavailable
from common.fleet import Fleet
from common.instance import InstanceSettings
from common.loops import Outage, vital
from common.metrics import FleetSnapshot
from common.store import Store
from flows.jobs import FlowJobs
from jobs.admission import Admission
from scheduler.flows import FlowEngine
from scheduler.inbox import InboxAdmitter
from scheduler.promoter import Promoter
from schedules.store import ScheduleStore
from storage.logs import sweep
from storage.objects import ObjectStore, StorageError

TRIM_EVERY_S = 60.0
RENEWALS_PER_LEASE = 3  # the lease is renewed about three times per lease (at tick precision)
SWEEP_EVERY_S = 3600.0  # stored log parts are swept by the day


def renew_every_ms(lease_ms: int) -> int:
    """How often the scheduler renews its lease (and reads the settings, groups, schedules)."""
    return max(1, lease_ms // RENEWALS_PER_LEASE)


def next_dead_look(dead: list[str], oldest_alive_ms: int | None, lease_ms: int, now: int) -> int:
    """When to look for silent workers (or schedulers) again.

    No member can expire before the oldest last beat seen plus the lease (a newcomer
    beats later than that); with none seen, not before a whole lease from now. After
    finding dead ones, look again at the next tick (there may be more than a page).
    """
    if dead:
        return now
    if oldest_alive_ms is None:
        return now + lease_ms
    return oldest_alive_ms + lease_ms


class Scheduler:
    """Runs the scheduler's loops in threads until :meth:`stop`."""

    def __init__(
        self,
        *,
        store: Store,
        admission: Admission,
        fleet: Fleet,
        lease_s: float = 10.0,
        heartbeat_s: float = 1.0,
        renew_s: float | None = None,
        max_restarts: int = 3,
        scheduler_id: str | None = None,
        clock: Clock = now_ms,
        flow_jobs: FlowJobs | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.objects = objects
        self._sweeper: threading.Thread | None = None
        self._last_sweep = -SWEEP_EVERY_S
        self.store = store
        self.fleet = fleet
        self.lease_ms = int(lease_s * 1000)
        self.heartbeat_s = heartbeat_s
        # The lease renewal (and the reads that come with it): a third of the lease unless
        # told (a test that must meet a short fault renews more often).
        self.renew_ms = renew_every_ms(self.lease_ms) if renew_s is None else int(renew_s * 1000)
        self.max_restarts = max_restarts
        self.id = scheduler_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.clock = clock
        self.instance = InstanceSettings()
        self.stopping = threading.Event()
        self.promoters: dict[str, Promoter] = {}
        self.inbox = InboxAdmitter(store, admission, self.id, self.stopping)
        self.schedules = ScheduleStore(admission, clock=clock)
        self.log = log.get(scheduler_id=self.id)
        self._last_trim = 0.0
        self.groups: set[str] = set()
        self._next_beat_ms = 0
        self._look_at_workers_ms = 0
        self._look_at_schedulers_ms = 0
        self._next_fire: int | None = None
        self.failed: str | None = None  # the vital thread that died, if one did
        self.flows = None if flow_jobs is None else FlowEngine(
            store, admission, flow_jobs, scheduler_id=self.id, stopping=self.stopping, clock=clock,
            instance=lambda: self.instance)

    def run(self) -> None:
        """Run until stop(): the inbox in a thread, one promoter thread per group, ticks here."""
        inbox = vital("inbox", self.inbox.run, self._vital_died)
        self.log.info("scheduler started")
        outage = Outage("tick", "scheduler", self.log)
        while not self.stopping.is_set():
            wait_s = self.heartbeat_s
            try:
                next_fire = self.tick()
                if next_fire is not None:
                    wait_s = min(wait_s, max(0.0, (next_fire - self.clock()) / 1000))
                outage.ok()
            except RedisUnavailable as exc:
                wait_s = outage.failed(exc)
            self.stopping.wait(wait_s)
        for promoter in self.promoters.values():
            promoter.wake()
        self.inbox.wake()
        inbox.join()
        for promoter in self.promoters.values():
            promoter.join()
        if self.flows is not None:
            self.flows.join()
        try:
            self.fleet.forget_scheduler(self.id)
        except RedisUnavailable:
            self.log.warning("could not deregister; another scheduler forgets it after the lease")
        self.log.info("scheduler stopped")

    def stop(self) -> None:
        self.stopping.set()

    def _vital_died(self, name: str) -> None:
        """The inbox or a promoter died: stop, so the process exits non-zero and is restarted."""
        self.failed = name
        self.stop()

    def tick(self) -> int | None:
        """The heartbeat: lease, new groups, dead workers and schedulers, cron fires, retention.

        Each read is made only when it can tell something new (``docs/ARCHITECTURE.md``,
        "The scheduler at rest"): the lease and what comes with it every third of the
        lease, the dead when the oldest beat seen can have expired, the due schedules
        when the next fire has come. Returns when the next schedule fires (ms).
        """
        now = self.clock()
        if now >= self._next_beat_ms:
            beat = self.fleet.scheduler_heartbeat(self.id, now)
            self._next_beat_ms = now + self.renew_ms
            self.instance = beat.instance
            self.groups = beat.groups
            self._next_fire = beat.next_schedule_fire
            self.start_promoters(beat.groups)
        if self.store.groups_written - self.promoters.keys():
            # A group this scheduler's inbox just admitted into: no need to wait for the beat.
            self.start_promoters(self.store.groups_written - self.promoters.keys())
        if now >= self._look_at_workers_ms:
            silent = self.fleet.silent_workers(now - self.lease_ms)
            for worker_id in silent.dead:
                self.recover_worker(worker_id, seen_before_ms=now - self.lease_ms)
            self._look_at_workers_ms = next_dead_look(silent.dead, silent.oldest_alive_ms,
                                                 self.lease_ms, now)
        if now >= self._look_at_schedulers_ms:
            silent = self.fleet.silent_schedulers(now - self.lease_ms)
            for scheduler_id in silent.dead:
                if scheduler_id != self.id:
                    self.inbox.recover(scheduler_id)
                    if self.flows is not None:
                        self.flows.recover_scheduler(scheduler_id, self.groups)
                    self.fleet.forget_scheduler(scheduler_id)
            others = [s for s in silent.dead if s != self.id]
            self._look_at_schedulers_ms = next_dead_look(others, silent.oldest_alive_ms,
                                                    self.lease_ms, now)
        if self.flows is not None:
            for group in self.groups:  # their duties are planned in their own threads
                self.flows.start_group(group, self._vital_died)
        if self._next_fire is not None and now >= self._next_fire:
            for path, fire_ms in self.schedules.due(now):
                self.schedules.materialise(path, fire_ms, now)
            self._next_fire = self.fleet.next_schedule_fire()
        if time.monotonic() - self._last_trim >= TRIM_EVERY_S:
            self._last_trim = time.monotonic()
            cutoff = now - self.instance.retention_s * 1000
            for group in self.groups:
                self.store.trim_completed(group, cutoff)
                self.store.trim_count(group, self.instance.retention_max_jobs)
        if self.objects is not None and time.monotonic() - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = time.monotonic()
            self._sweep_stored_logs(self.objects)
        return self._next_fire

    def start_promoters(self, groups: set[str]) -> None:
        """A promoter for each group that has none yet (from the beat, or at once from the
        inbox, which admits into a new group before the next beat would see it)."""
        for group in groups - self.promoters.keys():
            self.promoters[group] = Promoter(self.store, group, self.stopping, self.clock)
            self.promoters[group].start(self._vital_died)
        self.groups |= groups

    def _sweep_stored_logs(self, objects: ObjectStore) -> None:
        """Delete the object store's log parts of past days, in a thread: the store may be slow
        or away, the tick must not wait for it. Every scheduler may do it; deleting twice is
        harmless."""
        if self._sweeper is not None and self._sweeper.is_alive():
            return

        def sweep_once() -> None:
            try:
                removed = sweep(objects, self.clock())
                if removed:
                    self.log.info("stored log parts of past days deleted", objects=removed)
            except StorageError as exc:
                self.log.warning("could not sweep stored logs; next hour again", error=str(exc))

        self._sweeper = threading.Thread(target=sweep_once, name="log-sweep", daemon=True)
        self._sweeper.start()

    def recover_worker(self, worker_id: str, *, seen_before_ms: int) -> None:
        """Re-queue (or fail) every job a dead worker held, then forget the worker."""
        group = self.fleet.worker_group(worker_id)
        if group is not None:
            # Fenced first: a claim it left blocked in Redis starts nothing from now on.
            self.store.fence_gone(group, worker_id)
            landed = self.store.unland(group, worker_id)  # taken off ready, never started
            if landed:
                self.log.warning("ids a dead worker's claim had taken put back", count=landed,
                                 worker_id=worker_id, group=group)
            for job_id in self.store.running_ids(group, worker_id):
                outcome = self.store.recover(
                    group, job_id, worker_id, max_restarts=self.max_restarts,
                    retention_s=self.instance.retention_s,
                )
                metrics.JOBS_RECOVERED.labels(group=group, outcome=outcome).inc()
                self.log.warning("job of dead worker recovered", job_id=job_id,
                                 worker_id=worker_id, group=group, outcome=outcome)
        if self.fleet.forget_worker(worker_id, seen_before_ms):
            self.log.warning("worker presumed dead", worker_id=worker_id, group=group)
        elif group is not None:  # it beat meanwhile: alive after all (its jobs are fenced off)
            self.store.unfence_gone(group, worker_id)

    def snapshot(self) -> FleetSnapshot:
        """Queue depths and live workers, for the metrics endpoint."""
        snap = FleetSnapshot()
        now = self.clock()
        workers = self.fleet.workers()
        for worker in workers:
            if worker.last_seen_ms >= now - self.lease_ms:
                snap.live_workers[worker.group] = snap.live_workers.get(worker.group, 0) + 1
        groups = sorted(g.decode() for g in self.store.client.smembers(self.store.keys.groups))
        pipe = self.store.client.pipeline(transaction=False)
        for group in groups:
            g = self.store.keys.group(group)
            pipe.zcard(g.scheduled)
            pipe.llen(g.ready)
            for worker in workers:
                if worker.group == group:
                    pipe.llen(g.running(worker.worker_id))
        answers = iter(pipe.execute())
        for group in groups:
            snap.depth[(group, "scheduled")] = next(answers)
            snap.depth[(group, "ready")] = next(answers)
            snap.depth[(group, "running")] = sum(
                next(answers) for worker in workers if worker.group == group
            )
        return snap
