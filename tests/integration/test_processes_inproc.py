"""The worker and scheduler loops, run in threads against a real Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from common.errors import WorkerFenced
from common.fleet import Fleet
from common.models import Status
from common.settings import Settings
from common.store import Store
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from scheduler.promoter import Promoter
from scheduler.scheduler import Scheduler
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

NOW_FAR = 4_000_000_000_000

WAIT_FOR_FILE = """
import os, time

def main(me: str, other: str | None = None, deadline_s: float = 20):
    if not os.path.exists(me):  # a re-run is another uid: it may not rewrite the first's file
        open(me, "w").close()
    print("started", flush=True)
    end = time.monotonic() + deadline_s
    while other and not os.path.exists(other):
        if time.monotonic() > end:
            raise TimeoutError("the other file never appeared")
        time.sleep(0.01)
    print("released", flush=True)
    return "ok"
"""


@pytest.fixture
def worker_factory(store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
                   sharing_sandbox: Sandbox) -> Iterator[object]:
    running: list[tuple[Worker, threading.Thread]] = []

    def start(concurrency: int = 1) -> Worker:
        worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                        concurrency=concurrency, claim_block_s=0.5, sandbox=sharing_sandbox)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker

    yield start
    for worker, thread in running:
        worker.stop()
        worker.kill_running()
        thread.join(15)


def test_worker_runs_up_to_concurrency_jobs_at_once(
    store: Store, worker_factory: object, job_share: Path
) -> None:
    """Two jobs that each wait for the other both finish only if they run at the same time."""
    a, b = str(job_share / "a"), str(job_share / "b")
    jobs = [make_job(code=WAIT_FOR_FILE, args={"me": a, "other": b}),
            make_job(code=WAIT_FOR_FILE, args={"me": b, "other": a})]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    worker_factory(concurrency=2)  # type: ignore[operator]
    for job in jobs:
        done = store.wait(job.id, 30)
        assert (done.status, done.result) == (Status.SUCCESS, "ok"), done.error


def test_a_fenced_worker_can_neither_log_nor_complete(
    store: Store, worker_factory: object, job_share: Path
) -> None:
    """Once its attempt is recovered (worker presumed dead), the old worker's writes are refused."""
    me, release = job_share / "started", job_share / "release"
    job = make_job(code=WAIT_FOR_FILE, args={"me": str(me), "other": str(release)})
    store.enqueue(job, fresh_id=True)
    worker: Worker = worker_factory()  # type: ignore[operator]
    first = store.logs(job.id, block_ms=20_000)
    assert [(e.attempt, e.line) for e in first] == [(1, "started")]
    assert store.recover("default", job.id, worker.worker_id, max_restarts=3,
                         retention_s=60) == "requeued"
    release.touch()
    # The requeued job is taken again by the same live worker as a new attempt; the old
    # attempt's "released" line and its completion must not land in the new attempt.
    final = store.wait(job.id, 30)
    assert final.attempt == 2
    lines = [(e.attempt, e.line) for e in store.logs(job.id)]
    assert (1, "released") not in lines
    assert [n for n, line in lines if line == "started"] == [1, 2]


def lease_scheduler(store: Store, scripts: ScriptStore, fleet: Fleet,
                    clock: Callable[[], int]) -> Scheduler:
    """A scheduler that presumes a worker dead after 10 s of silence, by ``clock``."""
    return Scheduler(
        store=store, admission=Admission(store, scripts, Settings(redis_url="redis://unused")),
        fleet=fleet, lease_s=10, clock=clock,
    )


def test_scheduler_tick_recovers_the_jobs_of_a_dead_worker(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """A worker silent for longer than the lease has its running job re-queued and is forgotten."""
    now = [1_000_000]
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    fleet.worker_heartbeat("dead-1", {"group": "default"}, now[0],
                           running_key=store.keys.group("default").running("dead-1"))
    assert store.claim("default", "dead-1", 1) == job.id
    assert store.start("default", job.id, "dead-1", "c") is not None
    scheduler = lease_scheduler(store, scripts, fleet, lambda: now[0])
    now[0] += 9_000
    scheduler.tick()
    assert store.get_job(job.id).status == Status.RUNNING  # lease not expired yet
    now[0] += 2_000
    scheduler.tick()
    scheduler.stop()
    assert store.get_job(job.id).status == Status.QUEUED
    assert redis_client.lrange(store.keys.group("default").ready, 0, -1) == [job.id.encode()]
    assert redis_client.zscore(store.keys.workers, "dead-1") is None


def test_a_dead_workers_landed_id_goes_back_to_ready(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """An id a dead worker's blocking claim had taken off ready (its landing list) and never
    started goes back to the head of ready, with no attempt used, ahead of its running job."""
    now = [1_000_000]
    running, landed = make_job(scheduled_for=0), make_job(scheduled_for=0)
    for job in (running, landed):
        store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    fleet.worker_heartbeat("dead-2", {"group": "default"}, now[0],
                           running_key=g.running("dead-2"))
    assert [job.id for job in store.claim_start("default", "dead-2", 1, "c")] == [running.id]
    assert redis_client.lmove(g.ready, g.landing("dead-2"), "LEFT", "RIGHT") == landed.id.encode()
    scheduler = lease_scheduler(store, scripts, fleet, lambda: now[0])
    now[0] += 11_000
    scheduler.tick()
    scheduler.stop()
    assert redis_client.llen(g.landing("dead-2")) == 0
    assert {i.decode() for i in redis_client.lrange(g.ready, 0, -1)} == {running.id, landed.id}
    assert (store.get_job(landed.id).status, store.get_job(landed.id).attempt) == \
        (Status.QUEUED, 0)


def test_a_claim_a_dead_worker_left_blocked_in_redis_starts_nothing(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """A worker whose host vanished leaves its blocking claim parked in Redis. Once the
    scheduler has recovered it, that claim may still take a job off ready, and nothing would
    look at the dead worker's lists again: the scheduler fences the worker first, so its
    claim starts nothing and the id goes back to ready, for a live worker to run."""
    now = [1_000_000]
    g = store.keys.group("default")
    fleet.worker_heartbeat("dead-3", {"group": "default"}, now[0], running_key=g.running("dead-3"))
    blocker = store.blocker("default")
    got: list[object] = []

    def park() -> None:
        try:
            got.append(store.claim_start_blocking("default", "dead-3", 1, "z", 20, blocker))
        except WorkerFenced as exc:
            got.append(exc)

    parked = threading.Thread(target=park, daemon=True)
    parked.start()
    scheduler = lease_scheduler(store, scripts, fleet, lambda: now[0])
    now[0] += 11_000
    scheduler.tick()
    scheduler.stop()
    assert redis_client.zscore(store.keys.workers, "dead-3") is None
    job = make_job()
    store.enqueue(job, fresh_id=True)
    parked.join(20)
    assert not parked.is_alive() and len(got) == 1 and isinstance(got[0], WorkerFenced)
    blocker.close()
    assert store.get_job(job.id).status == Status.QUEUED
    assert redis_client.lrange(g.ready, 0, -1) == [job.id.encode()]
    assert redis_client.llen(g.landing("dead-3")) == redis_client.llen(g.running("dead-3")) == 0


def test_a_worker_presumed_dead_claims_again_once_it_registers(
    store: Store, scripts: ScriptStore, fleet: Fleet,
) -> None:
    """The fence lifts when the worker comes back: when its beat finds it forgotten it
    registers again, and when it beat before the scheduler forgot it, the scheduler lifts
    the fence itself."""
    g = store.keys.group("default")
    jobs = [make_job() for _ in range(2)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    scheduler = lease_scheduler(store, scripts, fleet, lambda: 1_000_000)
    for worker in ("back-1", "back-2"):
        fleet.worker_heartbeat(worker, {"group": "default"}, 1_000, running_key=g.running(worker))
    scheduler.recover_worker("back-1", seen_before_ms=2_000)  # forgotten
    scheduler.recover_worker("back-2", seen_before_ms=500)  # it beat since: kept
    scheduler.stop()
    with pytest.raises(WorkerFenced, match="presumed dead"):
        store.claim_start("default", "back-1", 1, "a")
    fleet.worker_heartbeat("back-1", {"group": "default"}, 3_000, running_key=g.running("back-1"),
                           gone_key=g.gone("back-1"))
    assert [job.id for job in store.claim_start("default", "back-1", 1, "b")] == [jobs[0].id]
    assert [job.id for job in store.claim_start("default", "back-2", 1, "c")] == [jobs[1].id]


def test_promoter_wakes_for_an_earlier_job(store: Store) -> None:
    """A promoter sleeping until a far job is nudged by an earlier one and promotes it on time."""
    stopping = threading.Event()
    promoter = Promoter(store, "default", stopping, store.clock)
    store.enqueue(make_job(scheduled_for=store.clock() + 60_000), fresh_id=True)
    promoter.start(lambda thread: None)
    try:
        due = store.clock() + 300
        early = make_job(scheduled_for=due)
        store.enqueue(early, fresh_id=True)
        g = store.keys.group("default")
        moved = store.client.blmove(g.ready, g.running("probe"), 5, "LEFT", "RIGHT")
        at = store.clock()
        assert moved == early.id.encode()
        assert due <= at < due + 100, f"promoted {at - due} ms after due"
    finally:
        stopping.set()
        promoter.wake()
        promoter.join(10)


def test_cancel_kills_a_running_job(store: Store, worker_factory: object, job_share: Path) -> None:
    """A cancel request reaches the worker through its control list and the job ends canceled."""
    job = make_job(code=WAIT_FOR_FILE, args={"me": str(job_share / "m"), "other": str(job_share / "x")})
    store.enqueue(job, fresh_id=True)
    worker_factory()  # type: ignore[operator]
    assert store.logs(job.id, block_ms=20_000)[0].line == "started"
    assert store.cancel(job.id, by="u/admin", reason="enough", retention_s=60) == "requested"
    final = store.wait(job.id, 10)
    assert (final.status, final.canceled_by, final.canceled_reason) == (
        Status.CANCELED, "u/admin", "enough")
    assert final.duration_ms is not None and final.duration_ms < 10_000


def test_timeout_fails_the_job(store: Store, worker_factory: object, job_share: Path) -> None:
    """A job that outlives its timeout_s is killed and fails with Timeout."""
    job = make_job(code=WAIT_FOR_FILE, timeout_s=1,
                   args={"me": str(job_share / "m"), "other": str(job_share / "never")})
    store.enqueue(job, fresh_id=True)
    worker_factory()  # type: ignore[operator]
    final = store.wait(job.id, 20)
    assert final.status == Status.FAILURE
    assert final.error is not None and final.error["name"] == "Timeout"


def test_retry_policy_runs_the_job_again(store: Store, worker_factory: object) -> None:
    """A failing job with a constant retry policy runs 1 + attempts times, each in the history."""
    job = make_job(code="def main():\n    raise RuntimeError('nope')\n",
                   retry={"constant": {"attempts": 2, "seconds": 0}})
    store.enqueue(job, fresh_id=True)
    worker_factory()  # type: ignore[operator]
    final = store.wait(job.id, 30)
    while final.status == Status.QUEUED:  # between attempts the record is queued again
        final = store.wait(job.id, 30)
    assert (final.status, final.attempt, final.retries) == (Status.FAILURE, 3, 2)
    assert [a["status"] for a in store.attempts(final)] == ["failure"] * 3


def test_grace_over_releases_running_jobs_uncounted(
    store: Store, worker_factory: object, job_share: Path
) -> None:
    """A worker stopped past its grace gives its running job back without using an attempt."""
    job = make_job(code=WAIT_FOR_FILE, args={"me": str(job_share / "m"), "other": str(job_share / "x")})
    store.enqueue(job, fresh_id=True)
    worker: Worker = worker_factory()  # type: ignore[operator]
    assert store.logs(job.id, block_ms=20_000)[0].line == "started"
    events = store.keys.group("default").events
    last_id = store.client.xrevrange(events, count=1)[0][0]
    worker.stop()
    worker.kill_running()
    answer = store.client.xread({events: last_id}, block=10_000)
    assert answer and answer[0][1][0][1][b"event"] == b"released"
    record = store.get_job(job.id)
    assert (record.status, record.retries, record.restarts) == (Status.QUEUED, 0, 0)
    assert [a["status"] for a in store.attempts(record)] == ["released"]


def test_an_orphaned_claim_is_given_back(store: Store, worker_factory: object) -> None:
    """An id in the worker's running list that it never received (lost BLMOVE reply) goes back."""
    worker: Worker = worker_factory()  # type: ignore[operator]
    job = make_job(scheduled_for=NOW_FAR)
    store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    # What a lost reply leaves behind: the id moved into this worker's list, status queued.
    store.client.zrem(g.scheduled, job.id)
    store.client.rpush(g.running(worker.worker_id), job.id)
    store.client.hset(g.job(job.id), "scheduled_for", 0)
    final = store.wait(job.id, 30)  # two heartbeats later it is back in ready, then run
    assert final.status == Status.SUCCESS and final.attempt == 1
