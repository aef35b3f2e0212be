"""A slot's thread takes its next ready job itself (no hand-over to the claim loop), and a
stopping worker's slots take none."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from common.fleet import Fleet
from common.models import Job, Status
from common.settings import Settings
from common.store import Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

pytestmark = pytest.mark.timeout(90)
WAIT_S = 60.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def worker(store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
           sharing_sandbox: Sandbox) -> Iterator[Worker]:
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                    concurrency=1, claim_block_s=0.5, sandbox=sharing_sandbox)
    yield worker
    worker.stop()
    worker.kill_running()


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def statuses(store: Store, jobs: list[Job]) -> list[Status]:
    return [store.get_job(job.id).status for job in jobs]


def test_a_slot_runs_the_ready_jobs_back_to_back(worker: Worker, store: Store) -> None:
    jobs = [make_job() for _ in range(4)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    claim_loop_jobs: list[str] = []
    claim = worker._claim

    def counted(free: int) -> list[Job]:
        claimed = claim(free)
        claim_loop_jobs.extend(job.id for job in claimed)
        return claimed

    claim_calls: list[str] = []

    def counted_call(name: str) -> Callable[..., list[Job]]:
        call = getattr(store, name)

        def counted_claim(*args: object, **kwargs: object) -> list[Job]:
            claim_calls.append(name)
            return call(*args, **kwargs)  # type: ignore[no-any-return]
        return counted_claim

    worker._claim = counted  # type: ignore[method-assign]
    for name in ("claim_start", "claim_start_blocking"):
        setattr(store, name, counted_call(name))
    thread = start(worker)
    wait_until(lambda: statuses(store, jobs) == [Status.SUCCESS] * 4, "the four jobs")
    # One slot: the claim loop started the first job (its blocking claim), the slot's thread
    # the three others, each claimed with the completion before it (no call of its own);
    # the last found ready empty, so the claim loop may be blocking again.
    assert claim_loop_jobs == [jobs[0].id]
    assert set(claim_calls) == {"claim_start_blocking"}
    worker.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def test_a_stopping_worker_takes_no_next_job(worker: Worker, store: Store) -> None:
    first = make_job(code="import time\n\ndef main():\n    time.sleep(1)\n    return 1\n")
    rest = [make_job() for _ in range(2)]
    for job in (first, *rest):
        store.enqueue(job, fresh_id=True)
    thread = start(worker)
    wait_until(lambda: store.get_job(first.id).status == Status.RUNNING, "the first job to run")
    worker.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert store.get_job(first.id).status == Status.SUCCESS  # a running job finishes
    assert statuses(store, rest) == [Status.QUEUED] * 2  # and no other is taken


def test_an_idle_workers_job_runs_on_the_thread_that_claimed_it(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
    sharing_sandbox: Sandbox,
) -> None:
    """Leader and followers: the claim loop's thread runs the job it claimed (no hand-over to
    another thread on the job's way) and passes the loop on, so both slots still fill: two
    jobs that wait for each other both run at once."""
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                    concurrency=2, claim_batch=1, claim_block_s=0.5, sandbox=sharing_sandbox)
    claimed_on: dict[str, int] = {}
    ran_on: dict[str, int] = {}
    claim, run = worker._claim, worker._runner.run

    def recorded_claim(free: int) -> list[Job]:
        jobs = claim(free)
        claimed_on.update((job.id, threading.get_ident()) for job in jobs)
        return jobs

    def recorded_run(job: Job, *args: object) -> list[Job] | None:
        ran_on[job.id] = threading.get_ident()
        return run(job, *args)  # type: ignore[arg-type]

    worker._claim = recorded_claim  # type: ignore[method-assign]
    worker._runner.run = recorded_run  # type: ignore[method-assign]
    # Each job waits (bounded) for the other's file in the shared directory: they finish
    # only if both run at the same time.
    share = sharing_sandbox.shared_dirs[0]
    meet = ("import pathlib, time\n\ndef main(me, other):\n"
            f"    pathlib.Path({str(share)!r}, me).touch()\n"
            "    deadline = time.monotonic() + 20\n"
            f"    while not pathlib.Path({str(share)!r}, other).exists():\n"
            "        assert time.monotonic() < deadline, 'the other job never ran'\n"
            "        time.sleep(0.01)\n    return me\n")
    jobs = [make_job(code=meet, args={"me": "a", "other": "b"}),
            make_job(code=meet, args={"me": "b", "other": "a"})]
    thread = start(worker)
    try:
        for job in jobs:
            wait_until(lambda: worker._ready_empty, "the worker to wait on an empty ready list")
            store.enqueue(job, fresh_id=True)
            wait_until(lambda job=job: job.id in ran_on, "the job to start")
        wait_until(lambda: statuses(store, jobs) == [Status.SUCCESS] * 2, "both jobs")
    finally:
        worker.stop()
        thread.join(WAIT_S)
    assert not thread.is_alive() and worker.failed is None
    for job in jobs:
        assert ran_on[job.id] == claimed_on[job.id]
    assert ran_on[jobs[0].id] != ran_on[jobs[1].id]


def test_a_crash_of_the_claim_loop_stops_the_worker_and_is_raised(worker: Worker) -> None:
    """A bug in the claim loop (on a pool thread) is not swallowed: the worker stops and
    run() raises it."""
    def broken(free: int) -> list[Job]:
        raise RuntimeError("a bug in the claim")

    worker._claim = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in the claim"):
        worker.run()


def test_jobs_a_claim_returns_to_a_stopping_worker_are_given_back(
    worker: Worker, store: Store,
) -> None:
    """The stop comes as the claim returns with jobs started (or a vital thread died): they
    go back to the head of ready, unrun, with no attempt counted as failed or restarted."""
    job = make_job()
    store.enqueue(job, fresh_id=True)
    claim = worker._claim

    def stopped_meanwhile(free: int) -> list[Job]:
        jobs = claim(free)
        worker.stop()
        return jobs

    worker._claim = stopped_meanwhile  # type: ignore[method-assign]
    thread = start(worker)
    thread.join(WAIT_S)
    assert not thread.is_alive() and worker.failed is None
    back = store.get_job(job.id)
    assert (back.status, back.retries, back.restarts) == (Status.QUEUED, 0, 0)
    assert store.client.lrange(store.keys.group("default").ready, 0, -1) == [job.id.encode()]
    assert store.running_ids("default", worker.worker_id) == []


def test_a_stopping_worker_puts_its_landed_ids_back(worker: Worker, store: Store) -> None:
    """An id the worker's blocking claim landed and no claim started (a call that failed)
    goes back to ready when the worker stops."""
    job = make_job()
    store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    assert store.client.lmove(g.ready, g.landing(worker.worker_id), "LEFT", "RIGHT")
    worker._release_leftovers()
    assert store.client.lrange(g.ready, 0, -1) == [job.id.encode()]
    assert store.client.llen(g.landing(worker.worker_id)) == 0
    assert store.get_job(job.id).status == Status.QUEUED


def test_a_live_worker_found_fenced_registers_again_and_runs_the_job(
    worker: Worker, store: Store,
) -> None:
    """A scheduler presumed this worker dead and fenced it (a long pause, a Redis stall),
    then died before lifting the fence. The worker's claim says so: it registers again at
    its next heartbeat (which lifts the fence) and runs the job, waiting meanwhile as for
    an outage, not spinning on claims."""
    g = store.keys.group("default")
    calls: list[int] = []
    claim_start = store.claim_start

    def counted(*args: object, **kwargs: object) -> list[Job]:
        calls.append(1)
        return claim_start(*args, **kwargs)  # type: ignore[arg-type]

    store.claim_start = counted  # type: ignore[method-assign]
    thread = start(worker)
    wait_until(lambda: worker._registered, "the worker to register")
    store.fence_gone("default", worker.worker_id)
    job = make_job()
    store.enqueue(job, fresh_id=True)
    wait_until(lambda: store.get_job(job.id).status == Status.SUCCESS, "the job to run")
    assert store.client.exists(g.gone(worker.worker_id)) == 0
    assert len(calls) < 20  # backed off while fenced (a spin makes thousands a second)
    worker.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive() and worker.failed is None


def test_the_end_of_an_old_attempt_does_not_unhold_a_new_one(
    worker: Worker, store: Store,
) -> None:
    """A job recovered while this worker was presumed dead is claimed here again while its
    old run still ends: that end leaves the new attempt held, so reconciliation does not
    take the live run away."""
    job = make_job()
    store.enqueue(job, fresh_id=True)
    [first] = store.claim_start("default", worker.worker_id, 1, "a")
    worker._started([first])
    store.recover("default", job.id, worker.worker_id, max_restarts=3, retention_s=60)
    [second] = store.claim_start("default", worker.worker_id, 1, "b")
    worker._started([second])
    worker._unhold(first)  # the old run ends (its completion is refused)
    for _ in range(2):  # an id unheld on two full beats in a row would be given back
        worker._reconcile(store.running_ids("default", worker.worker_id))
    now = store.get_job(job.id)
    assert (now.status, now.claim) == (Status.RUNNING, second.claim)
    worker._unhold(second)
    assert worker._held == {}
