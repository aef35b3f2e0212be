"""Retry, cancel, release and schedules against a real Redis, with an injected clock."""

from __future__ import annotations

import pytest
import redis

from common.errors import GristmillError, NotFound
from common.models import Job, Status
from common.settings import Settings
from common.store import Store
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from schedules.store import Schedule, ScheduleStore, fire_job_id
from tests.integration.helpers import make_job

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

NOW = 1_700_000_000_000


def running(store: Store, job: Job, worker: str = "w1", claim: str = "c1") -> Job:
    store.enqueue(job, fresh_id=True)
    assert store.claim(job.group, worker, 1) == job.id
    started = store.start(job.group, job.id, worker, claim)
    assert started is not None
    return started


def test_retry_requeues_for_later_and_keeps_history(store: Store, redis_client: redis.Redis) -> None:
    """A retried attempt goes to scheduled at the given time with its error and history kept."""
    s = Store(redis_client, store.keys, clock=lambda: NOW)
    job = running(s, make_job(scheduled_for=NOW))
    error = {"name": "ValueError", "message": "boom", "traceback": ""}
    assert s.retry(job, {"error": error, "duration_ms": 5}, at_ms=NOW + 2000)
    g = store.keys.group("default")
    record = store.get_job(job.id)
    assert (record.status, record.retries, record.error, record.scheduled_for) == (
        Status.QUEUED, 1, error, NOW + 2000)
    assert redis_client.zscore(g.scheduled, job.id) == NOW + 2000
    assert store.running_ids("default", "w1") == []
    assert [(a["attempt"], a["status"]) for a in store.attempts(record)] == [(1, "failure")]
    assert not s.retry(job, {"error": error}, at_ms=NOW)  # the same claim cannot retry twice


def test_cancel_a_queued_job(store: Store, redis_client: redis.Redis) -> None:
    """A queued job is completed as canceled at once; it leaves scheduled, and ready when taken."""
    future, ready = make_job(scheduled_for=NOW * 2), make_job(scheduled_for=0)
    store.enqueue(future, fresh_id=True)
    store.enqueue(ready, fresh_id=True)
    for job in (future, ready):
        assert store.cancel(job.id, by="u/admin", reason="not needed", retention_s=60) == "canceled"
        record = store.get_job(job.id)
        assert (record.status, record.canceled_by, record.canceled_reason) == (
            Status.CANCELED, "u/admin", "not needed")
    g = store.keys.group("default")
    # O(1) cancel: the id stays in ready until a worker takes it and drops it.
    assert redis_client.zcard(g.scheduled) == 0 and redis_client.llen(g.ready) == 1
    assert store.claim("default", "w1", 1) == ready.id
    assert store.start("default", ready.id, "w1", "c") is None
    assert redis_client.llen(g.ready) == 0 and store.running_ids("default", "w1") == []
    assert store.wait(ready.id, 1).status == Status.CANCELED


def test_cancel_a_running_job_asks_its_worker(store: Store, redis_client: redis.Redis) -> None:
    """A running job gets a cancel request on its worker's control list; completed jobs refuse."""
    job = running(store, make_job(scheduled_for=0))
    assert store.cancel(job.id, by="u/bob", reason="stop", retention_s=60) == "requested"
    assert store.next_control("default", "w1", 1) == job.id
    assert store.get_job(job.id).cancel_requested == "1"
    assert store.complete(job, Status.CANCELED, {}, retention_s=60) == 1
    with pytest.raises(GristmillError, match="already completed \\(canceled\\)"):
        store.cancel(job.id, by="u/bob", reason="again", retention_s=60)
    with pytest.raises(NotFound):
        store.cancel("no-such-job", by="u/bob", reason="", retention_s=60)


def test_cancel_requested_on_a_dead_workers_job_is_honoured(store: Store) -> None:
    """When the worker of a job with a pending cancel dies, the job ends canceled, not re-run."""
    job = running(store, make_job(scheduled_for=0))
    store.cancel(job.id, by="u/admin", reason="stop", retention_s=60)
    assert store.recover("default", job.id, "w1", max_restarts=3, retention_s=60) == "canceled"
    assert store.get_job(job.id).status == Status.CANCELED


def test_release_gives_the_job_back_without_counting(store: Store, redis_client: redis.Redis) -> None:
    """A stopping worker's job returns to the head of ready with no retry or restart counted."""
    job = running(store, make_job(scheduled_for=0))
    assert store.release(job)
    record = store.get_job(job.id)
    assert (record.status, record.retries, record.restarts, record.worker) == (
        Status.QUEUED, 0, 0, None)
    assert redis_client.lrange(store.keys.group("default").ready, 0, -1) == [job.id.encode()]
    assert not store.release(job)


@pytest.fixture
def schedules(store: Store, scripts: ScriptStore) -> ScheduleStore:
    scripts.deploy("u/alice/tick", "python3", "def main(n: int = 0):\n    return n\n")
    admission = Admission(store, scripts, Settings(redis_url="redis://unused"))
    return ScheduleStore(admission, clock=lambda: NOW)


def test_schedule_queues_exactly_one_next_fire(schedules: ScheduleStore, store: Store) -> None:
    """Creating a schedule queues its first fire with a deterministic id; nothing else."""
    created = schedules.create(Schedule(path="u/alice/s", script_path="u/alice/tick",
                                        cron="*/10 * * * * *", args={"n": 3}))
    assert created.next_fire == NOW + 10_000
    job = store.get_job(fire_job_id("gm", "u/alice/s", NOW + 10_000))
    assert (job.scheduled_for, job.schedule_path, job.args) == (NOW + 10_000, "u/alice/s", {"n": 3})
    assert schedules.runs("u/alice/s") == [job.id]
    assert schedules.due(NOW) == []


def test_materialising_twice_fires_once(schedules: ScheduleStore, store: Store) -> None:
    """Two schedulers materialising the same due fire enqueue the next fire once."""
    schedules.create(Schedule(path="u/alice/s", script_path="u/alice/tick", cron="*/10 * * * * *"))
    due = NOW + 10_000
    assert schedules.due(due) == [("u/alice/s", due)]
    schedules.materialise("u/alice/s", due, due + 5)
    schedules.materialise("u/alice/s", due, due + 5)
    assert schedules.due(due + 5) == []
    assert schedules.get("u/alice/s").next_fire == NOW + 20_000
    assert schedules.runs("u/alice/s") == [fire_job_id("gm", "u/alice/s", NOW + 20_000),
                                           fire_job_id("gm", "u/alice/s", due)]


@pytest.mark.parametrize(("policy", "extra"), [("skip", 0), ("one", 1), ("all", 5)])
def test_catch_up_after_downtime(schedules: ScheduleStore, store: Store, policy: str,
                                 extra: int) -> None:
    """After 55 s of downtime on a 10 s schedule, each policy queues none, one or all missed fires."""
    schedules.create(Schedule(path="u/alice/s", script_path="u/alice/tick",
                              cron="*/10 * * * * *", catch_up=policy))
    schedules.materialise("u/alice/s", NOW + 10_000, NOW + 65_000)
    assert len(schedules.runs("u/alice/s")) == 1 + extra + 1
    assert schedules.get("u/alice/s").next_fire == NOW + 70_000


def test_no_overlap_links_each_fire_to_the_previous(schedules: ScheduleStore, store: Store) -> None:
    """A no-overlap schedule's next job names the previous fire's job to skip while it runs."""
    schedules.create(Schedule(path="u/alice/s", script_path="u/alice/tick",
                              cron="*/10 * * * * *", no_overlap=True))
    schedules.materialise("u/alice/s", NOW + 10_000, NOW + 10_001)
    following = store.get_job(fire_job_id("gm", "u/alice/s", NOW + 20_000))
    assert following.skip_if_running == fire_job_id("gm", "u/alice/s", NOW + 10_000)


def test_pause_resume_delete(schedules: ScheduleStore, store: Store) -> None:
    """Pausing cancels the queued fire; resuming queues the next one; deleting removes all."""
    schedules.create(Schedule(path="u/alice/s", script_path="u/alice/tick", cron="*/10 * * * * *"))
    first = fire_job_id("gm", "u/alice/s", NOW + 10_000)
    schedules.pause("u/alice/s")
    assert store.get_job(first).status == Status.CANCELED
    assert schedules.due(NOW * 2) == []
    schedules.resume("u/alice/s")
    assert store.get_job(first).status == Status.CANCELED  # canceled fires stay canceled
    # Resumed before the canceled fire: the next fire after it is queued, and will run.
    assert schedules.due(NOW + 20_000) == [("u/alice/s", NOW + 20_000)]
    assert store.get_job(fire_job_id("gm", "u/alice/s", NOW + 20_000)).status == Status.QUEUED
    schedules.delete("u/alice/s")
    with pytest.raises(NotFound):
        schedules.get("u/alice/s")
    assert schedules.all() == []


def test_schedule_refuses_bad_definitions(schedules: ScheduleStore) -> None:
    """Unknown scripts, bad cron, bad zones and duplicate paths are refused by name."""
    with pytest.raises(NotFound, match="no script at path"):
        schedules.create(Schedule(path="u/a/s", script_path="u/a/none", cron="* * * * *"))
    with pytest.raises(GristmillError, match="not a valid cron"):
        schedules.create(Schedule(path="u/a/s", script_path="u/alice/tick", cron="99 * * * *"))
    schedules.create(Schedule(path="u/a/s", script_path="u/alice/tick", cron="* * * * *"))
    with pytest.raises(GristmillError, match="exists"):
        schedules.create(Schedule(path="u/a/s", script_path="u/alice/tick", cron="* * * * *"))
