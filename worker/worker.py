"""The worker process: claim job ids of one group, run each in a child process, complete it.

The loop reads as its steps: wait for free slots, take up to that many ready
ids into this worker's running list and mark them running in one call
(``claim_start.lua``; only when ready was found empty does it block in BLMOVE,
with the claim_start behind it in the same write), run each in a thread that
streams its logs, write the outcome (complete script, fenced by the attempt's
claim token). The claim loop runs on one pool thread at a time: the thread
that claimed runs the first job itself and hands the loop on (leader and
followers). A heartbeat thread keeps the lease and refreshes instance settings.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from common import log, metrics
from common.clock import Clock, now_ms
from common.errors import RedisUnavailable, WorkerFenced
from common.fleet import Fleet
from common.instance import InstanceSettings
from common.loops import Outage, vital
from common.models import Job, UnreadableJob
from common.settings import Settings
from common.store import NextClaim, Store
from jobs.scripts import ScriptStore
from storage.objects import from_settings
from vault.crypto import SecretBox
from worker.dedicated import DedicatedPool
from worker.dependencies import Dependencies
from worker.runner import JobRunner, JobTokens
from worker.sandbox.policy import Sandbox

# An idle worker's blocking claim and control waits last this long (shortened to what the
# socket timeout allows, Store.block_s); a stop ends them at once (CLIENT UNBLOCK, Blocker).
CLAIM_BLOCK_S = 60.0
# Beats that only refresh the lease (one ZADD) between two full ones (settings, running list,
# the worker's hash): an idle worker makes 1 + 2/FULL_BEAT_EVERY commands per heartbeat_s.
FULL_BEAT_EVERY = 4
SLOT_WAIT_S = 2.0  # a worker whose slots are all busy checks for a stop this often (no Redis)
CLAIM_BATCH = 16  # jobs started by one claim_start call at most (bounded by free slots)
VERSION = "0.1.0"


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Worker:
    """One worker process of one group, running up to ``concurrency`` jobs at once."""

    def __init__(
        self,
        *,
        store: Store,
        scripts: ScriptStore,
        fleet: Fleet,
        settings: Settings,
        group: str = "default",
        concurrency: int = 1,
        worker_id: str | None = None,
        claim_block_s: float = CLAIM_BLOCK_S,
        claim_batch: int = CLAIM_BATCH,
        clock: Clock = now_ms,
        sandbox: Sandbox,
        tokens: JobTokens | None = None,
        box: SecretBox | None = None,
        dedicated: DedicatedPool | None = None,
    ) -> None:
        self.store = store
        store.use_direct_calls()  # the per-job calls on connections of their own
        self.sandbox = sandbox
        self.claim_block_s = claim_block_s
        self.fleet = fleet
        self.settings = settings
        self.group = group
        self.concurrency = concurrency
        self.worker_id = worker_id or new_worker_id()
        self.clock = clock
        self.instance = InstanceSettings()
        self.jobs_done = 0
        self.started_at = clock()
        self._stopping = threading.Event()
        self._exited = threading.Event()
        self.failed: str | None = None  # the vital thread that died, if one did
        # Jobs started here and not finished: id -> the attempt's claim. By claim, since a job
        # recovered while this worker was presumed dead may be claimed here again while its
        # old run still ends: that run's end must not unhold the new one.
        self._held: dict[str, str | None] = {}
        self._held_lock = threading.Lock()
        self._suspects: set[str] = set()
        self._slots = threading.Semaphore(concurrency)
        self._lead_ended = threading.Event()  # the claim loop saw the stop (or crashed)
        self._lead_error: BaseException | None = None
        # Jobs started per claim call at most; True after a call found ready empty, so the
        # next one blocks (BLMOVE) rather than polling.
        self.claim_batch = max(1, min(concurrency, claim_batch))
        self._ready_empty = True
        # A thread per slot, and one for the claim loop (which hops from thread to thread).
        self._pool = ThreadPoolExecutor(concurrency + 1, thread_name_prefix="job")
        self._claim_blocker = store.blocker(group)
        self._control_blocker = store.blocker(group)
        self._registered = False  # the last full beat wrote our hash and group
        self._reported_done = -1  # jobs_done as our hash has it
        self._beats = 0
        objects = from_settings(settings.object_store_url)
        self._runner = JobRunner(store=store, scripts=scripts, settings=settings, clock=clock,
                                 sandbox=sandbox, tokens=tokens, box=box,
                                 deps=Dependencies(scripts=scripts, store=store, settings=settings,
                                                   objects=objects),
                                 objects=objects, dedicated=dedicated)
        self.dedicated = dedicated
        self.log = log.get(worker_id=self.worker_id, group=group)
        self._claim_outage = Outage("claim", "worker", self.log)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Work until :meth:`stop`; then let running jobs finish."""
        self._first_heartbeat()
        for loop in (self._heartbeat_loop, self._control_loop):
            vital(loop.__name__, loop, self._vital_died)
        self.log.info("worker started", concurrency=self.concurrency, **self.sandbox.describe(),
                      dedicated=sorted(self.dedicated.paths | self.dedicated.tags)
                      if self.dedicated else [])
        led = False
        try:
            self._pool.submit(self._lead)
            led = True
            self._lead_ended.wait()
        finally:
            self.stop()  # also when the wait was cut short (an exception in this thread)
            if led:
                self._lead_ended.wait()  # no new leader after this: the pool can shut down
            self._pool.shutdown(wait=True)
            if self.dedicated is not None:
                self.dedicated.close()
            self._exited.set()
            self._control_blocker.interrupt()
            self._claim_blocker.close()
            self._release_leftovers()
            try:
                self.fleet.worker_gone(self.worker_id)
            except RedisUnavailable:
                self.log.warning("could not deregister; the scheduler forgets it after the lease")
            self.store.close_direct_calls()
            self.log.info("worker stopped", jobs_done=self.jobs_done)
        if self._lead_error is not None:
            raise self._lead_error

    def stop(self) -> None:
        """Stop claiming; jobs already running finish."""
        self._stopping.set()
        self._claim_blocker.interrupt()

    def _vital_died(self, name: str) -> None:
        """Without its heartbeat or control loop the worker must not go on: stop, give jobs back."""
        self.failed = name
        self.stop()
        self.kill_running()

    def kill_running(self) -> None:
        """Grace period over: stop running jobs and give them back to the queue."""
        self.log.warning("grace period over; releasing running jobs")
        self._runner.release_all()

    # -- the loop --------------------------------------------------------------------------

    def _lead(self) -> None:
        """The claim loop, on one pool thread at a time: claim until jobs are started, hand
        the loop on to another pool thread, and run the first job here. A job claimed by an
        idle worker starts on the thread that claimed it, with no other thread to wake on its
        way (the next claimer wakes while it runs). A stop that comes as the claim returns
        (or a vital thread's death, whose jobs are being released) gives the jobs back."""
        try:
            jobs = self._claim_jobs()
            if jobs and self._stopping.is_set():
                self._give_back(jobs)
                for _ in jobs:
                    self._slots.release()
                jobs = []
            for job in jobs[1:]:
                self._pool.submit(self._run_and_release, job)
            if jobs:
                self._pool.submit(self._lead)
        except BaseException as exc:  # a bug of ours: the worker stops, run() raises it
            self._lead_error = exc  # (jobs started and not handed on are given back at exit)
            self.stop()
            self._lead_ended.set()
            return
        if not jobs:
            self._lead_ended.set()
            return
        self._run_and_release(jobs[0])

    def _unhold(self, job: Job) -> None:
        """``job``'s attempt is over here (not a later attempt of the same job)."""
        with self._held_lock:
            if self._held.get(job.id) == job.claim:
                del self._held[job.id]

    def _give_back(self, jobs: list[Job]) -> None:
        """Jobs started for a worker that stops before running them: back to the head of
        ready, nothing counted (an attempt entry says "released")."""
        for job in jobs:
            # On an outage it stays in our running list: given back at exit, or recovered.
            with contextlib.suppress(RedisUnavailable):
                self.store.release(job)
            self._unhold(job)

    def _claim_jobs(self) -> list[Job]:
        """Jobs started for free slots, each slot taken for its job: waits for a slot, claims
        until ready has jobs, waits out outages; [] once the worker stops."""
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=SLOT_WAIT_S):
                continue
            if self._stopping.is_set():  # stopped while waiting for a slot: claim nothing
                self._slots.release()
                break
            free = 1
            while free < self.claim_batch and self._slots.acquire(blocking=False):
                free += 1
            try:
                jobs = self._claim(free)
                self._claim_outage.ok()
            except RedisUnavailable as exc:
                for _ in range(free):
                    self._slots.release()
                # The next claim does not block: it starts what a failed call left landed.
                self._ready_empty = False
                if isinstance(exc, WorkerFenced):
                    self._registered = False  # the next heartbeat registers us again
                self._stopping.wait(self._claim_outage.failed(exc))
                continue
            for _ in range(free - len(jobs)):
                self._slots.release()
            if jobs:
                return jobs
        return []

    def _claim(self, free: int) -> list[Job]:
        """Up to ``free`` jobs started for this worker: one call while ready has ids; when it
        is empty, a blocking BLMOVE (into our landing list) with the claim_start behind it in
        the same write: the only call an idle worker makes; a stop interrupts it.

        A job a lost reply started is given back by reconciliation; an id a failed call
        left landed is started by our next claim."""
        if self._ready_empty:
            jobs = self.store.claim_start_blocking(self.group, self.worker_id, free,
                                                   secrets.token_hex(16), self.claim_block_s,
                                                   self._claim_blocker)
        else:
            jobs = self.store.claim_start(self.group, self.worker_id, free, secrets.token_hex(16))
        self._ready_empty = len(jobs) < free
        self._started(jobs)
        return jobs

    def _started(self, jobs: list[Job]) -> None:
        """Jobs this worker just started: held (for reconciliation), counted."""
        for job in jobs:
            with self._held_lock:
                self._held[job.id] = job.claim
            metrics.child(metrics.JOBS_STARTED, job.group, job.kind.value).inc()
            if job.started_at is not None and not isinstance(job, UnreadableJob):
                metrics.child(metrics.START_LATENESS, job.group).observe(
                    max(0, job.started_at - job.scheduled_for) / 1000
                )

    def _run_and_release(self, job: Job) -> None:
        """Run ``job``, then, while ready has ids, the slot's next jobs; then give the slot
        back to the claim loop.

        Under load a slot goes from one job to the next with no hand-over to the claim loop
        and back (a semaphore, a thread pool's queue, two thread wake-ups a job): its next
        job is claimed in the same write as the completion (:class:`NextClaim`), or, where
        no completion was written, by a call of its own (:meth:`_claim_next`). The slot goes
        back when the worker stops, when ready was found empty (the claim loop blocks in
        BLMOVE for it) or when Redis fails (the claim loop meets the outage and waits it
        out; an id a lost reply had moved into our running list is given back by
        reconciliation)."""
        metrics.WORKER_BUSY.inc()
        try:
            follow: Job | None = job
            while follow is not None:
                claimed = self._run_one(follow)
                follow = self._claim_next() if claimed is None else self._follow(claimed)
        finally:
            metrics.WORKER_BUSY.dec()
            self._slots.release()

    def _run_one(self, job: Job) -> list[Job] | None:
        """Run ``job``; the jobs the slot's next claim started with its completion (None: no
        claim made)."""
        try:
            claimed = self._runner.run(job, self.instance, self._next_claim)
            self.jobs_done += 1
            return claimed
        except Exception as exc:
            # A bug of ours must not leave the job running forever: record it as failed.
            self.log.exception("job runner crashed", job_id=job.id)
            self._runner.fail(job, exc, self.instance)
            return None
        finally:
            self._unhold(job)

    def _may_claim_next(self) -> bool:
        """A slot claims its next job itself unless the worker stops or ready was empty."""
        return not (self._stopping.is_set() or self._ready_empty)

    def _next_claim(self) -> NextClaim | None:
        """The claim a slot's completion carries."""
        if not self._may_claim_next():
            return None
        return NextClaim(self.group, self.worker_id, secrets.token_hex(16))

    def _claim_next(self) -> Job | None:
        """The slot's next job, by a call of its own (the completion carried no claim)."""
        if not self._may_claim_next():
            return None
        try:
            return self._follow(self.store.claim_start(self.group, self.worker_id, 1,
                                                       secrets.token_hex(16)))
        except RedisUnavailable:
            return None

    def _follow(self, jobs: list[Job]) -> Job | None:
        """The job a slot's claim started, if ready had one (given back if the worker
        stopped meanwhile)."""
        if not jobs:
            self._ready_empty = True
            return None
        self._started(jobs)
        if self._stopping.is_set():
            self._give_back(jobs)
            return None
        return jobs[0]

    def _release_leftovers(self) -> None:
        """Ids left in our landing and running lists at exit go back to ready (or are
        recovered)."""
        try:
            self.store.unland(self.group, self.worker_id)
            for job_id in self.store.running_ids(self.group, self.worker_id):
                self._recover_own(job_id)
        except RedisUnavailable:
            self.log.warning("could not release running list; the scheduler will recover it")

    def _recover_own(self, job_id: str) -> None:
        self.store.recover(
            self.group, job_id, self.worker_id,
            max_restarts=self.settings.max_restarts, retention_s=self.instance.retention_s,
        )

    def _control_loop(self) -> None:
        """Cancel requests for jobs this worker runs arrive on its control list."""
        outage = Outage("control", "worker", self.log)
        while not self._exited.is_set():
            try:
                job_id = self.store.next_control(self.group, self.worker_id, self.claim_block_s,
                                                 self._control_blocker)
                outage.ok()
            except RedisUnavailable as exc:
                self._exited.wait(outage.failed(exc))
                continue
            if job_id is not None:
                self.log.info("cancel requested", job_id=job_id)
                self._runner.cancel(job_id)
        self._control_blocker.close()

    # -- heartbeat -------------------------------------------------------------------------

    def _first_heartbeat(self) -> None:
        """Register before claiming, waiting out a Redis that refuses (a worker started during OOM)."""
        outage = Outage("heartbeat", "worker", self.log)
        while not self._stopping.is_set():
            try:
                self._heartbeat_once()
                outage.ok()
                return
            except RedisUnavailable as exc:
                self._stopping.wait(outage.failed(exc))

    def _heartbeat_once(self) -> None:
        """One beat. Most only refresh the lease (one ZADD); every FULL_BEAT_EVERY-th, and any
        after the registry lost us, also reads settings and the running list (reconciliation)
        and writes our hash: all of it when registering, else jobs_done if it changed."""
        self._beats += 1
        if self._registered and self._beats % FULL_BEAT_EVERY:
            self._registered = self.fleet.worker_lease(self.worker_id, self.clock())
            return
        done = self.jobs_done
        info: dict[str, str | int] = {} if done == self._reported_done else {"jobs_done": done}
        if not self._registered:
            info.update(jobs_done=done, group=self.group, host=socket.gethostname(), pid=os.getpid(),
                        started_at=self.started_at, version=VERSION, concurrency=self.concurrency)
        keys = self.store.keys.group(self.group)
        beat = self.fleet.worker_heartbeat(
            self.worker_id, info, self.clock(), running_key=keys.running(self.worker_id),
            gone_key=keys.gone(self.worker_id),
        )
        # Registered now, unless the registry had lost us before a mere update: then the
        # next beat writes everything.
        self._registered = "group" in info or beat.registered
        self._reported_done = done
        self.instance = beat.instance
        self._reconcile(beat.running)

    def _reconcile(self, listed: list[str]) -> None:
        """Give back ids in our running list that we are not working on.

        A claim whose reply was lost (connection cut, Redis restarted) leaves a job
        there, started, that this worker never saw. An id seen unheld on two full
        heartbeats in a row is ours by mistake: it goes back to ready, or is recovered.
        (An id a failed blocking claim left landed is in our landing list, not here: our
        next claim starts it.)
        """
        with self._held_lock:
            unheld = set(listed) - self._held.keys()
        for job_id in unheld & self._suspects:
            self.log.warning("orphaned claim given back", job_id=job_id)
            self._recover_own(job_id)
        self._suspects = unheld - self._suspects

    def _heartbeat_loop(self) -> None:
        # Beats go on while running jobs finish after stop(): only exit ends them.
        # A failed beat is retried at the beat period at most (the lease is at stake).
        outage = Outage("heartbeat", "worker", self.log, cap_s=self.settings.heartbeat_s)
        delay = self.settings.heartbeat_s
        while not self._exited.wait(delay):
            try:
                self._heartbeat_once()
                outage.ok()
                delay = self.settings.heartbeat_s
            except RedisUnavailable as exc:
                delay = outage.failed(exc)
