"""The scheduler process: admit inbox specs, promote due jobs, recover dead workers, trim.

Several schedulers may run at once: every step that moves a job is one atomic
script conditional on the job's state, so two of them never move a job twice.
Nothing here polls Redis on a fixed interval: each group's promoter sleeps on
a blocking pop of the group's wake list until its next job is due, and the
rest happens in the once-a-second heartbeat.
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
from jobs.admission import Admission
from scheduler.inbox import InboxAdmitter
from scheduler.promoter import Promoter
from schedules.store import ScheduleStore
from storage.logs import sweep
from storage.objects import ObjectStore, StorageError

TRIM_EVERY_S = 60.0
SWEEP_EVERY_S = 3600.0  # stored log parts are swept by the day


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
        max_restarts: int = 3,
        scheduler_id: str | None = None,
        clock: Clock = now_ms,
        objects: ObjectStore | None = None,
    ) -> None:
        self.objects = objects
        self._sweeper: threading.Thread | None = None
        self._last_sweep = -SWEEP_EVERY_S
        self.store = store
        self.fleet = fleet
        self.lease_ms = int(lease_s * 1000)
        self.heartbeat_s = heartbeat_s
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
        self.failed: str | None = None  # the vital thread that died, if one did

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
        inbox.join()
        for promoter in self.promoters.values():
            promoter.join()
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

        Returns when the next schedule fires (ms), so the loop can wake for it.
        """
        now = self.clock()
        beat = self.fleet.scheduler_heartbeat(self.id, now, self.lease_ms)
        self.instance = beat.instance
        for group in beat.groups - self.promoters.keys():
            self.promoters[group] = Promoter(self.store, group, self.stopping, self.clock)
            self.promoters[group].start(self._vital_died)
        for worker_id in beat.dead_workers:
            self.recover_worker(worker_id, seen_before_ms=now - self.lease_ms)
        for scheduler_id in beat.dead_schedulers:
            if scheduler_id != self.id:
                self.inbox.recover(scheduler_id)
                self.fleet.forget_scheduler(scheduler_id)
        for path, fire_ms in beat.due_schedules:
            self.schedules.materialise(path, fire_ms, now)
        if time.monotonic() - self._last_trim >= TRIM_EVERY_S:
            self._last_trim = time.monotonic()
            cutoff = now - self.instance.retention_s * 1000
            for group in beat.groups:
                self.store.trim_completed(group, cutoff)
                self.store.trim_count(group, self.instance.retention_max_jobs)
        if self.objects is not None and time.monotonic() - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = time.monotonic()
            self._sweep_stored_logs(self.objects)
        return None if beat.due_schedules else beat.next_schedule_fire

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
