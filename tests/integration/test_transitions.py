"""Every Lua transition against a real Redis: effects, fencing, idempotency, TTLs."""

from __future__ import annotations

import threading

import pytest
import redis

from common import codec
from common.errors import DuplicateJob, JobTimeout, NotFound
from common.keys import Keys
from common.models import Job, Status
from common.store import FENCED, NEW_SECRETS, Store
from tests.integration.helpers import make_job

pytestmark = pytest.mark.cluster

NOW = 1_700_000_000_000


def clocked(store: Store, now: int) -> Store:
    return Store(store.client, store.keys, clock=lambda: now)


def started(store: Store, job_id: str, worker: str = "w1", claim: str = "c1",
            group: str = "default") -> Job:
    assert store.claim(group, worker, 1) == job_id
    job = store.start(group, job_id, worker, claim)
    assert job is not None
    return job


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_due_job_goes_straight_to_ready(store: Store, redis_client: redis.Redis) -> None:
    """A due job is written and pushed to ready in one step, with its location recorded."""
    s = clocked(store, NOW)
    job = make_job(scheduled_for=NOW)
    s.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    assert redis_client.lrange(g.ready, 0, -1) == [job.id.encode()]
    assert redis_client.zcard(g.scheduled) == 0
    assert redis_client.get(store.keys.jobloc(job.id)) == b"default"
    assert store.get_job(job.id).status == Status.QUEUED
    assert redis_client.sismember(store.keys.groups, "default")


def test_enqueue_future_job_nudges_only_when_earlier_than_head(
    store: Store, redis_client: redis.Redis
) -> None:
    """A future job waits in scheduled; wake is pushed only for a new earliest job."""
    s = clocked(store, NOW)
    g = store.keys.group("default")
    s.enqueue(make_job(scheduled_for=NOW + 5000), fresh_id=True)
    assert redis_client.llen(g.wake) == 1
    redis_client.delete(g.wake)
    s.enqueue(make_job(scheduled_for=NOW + 9000), fresh_id=True)
    assert redis_client.llen(g.wake) == 0
    s.enqueue(make_job(scheduled_for=NOW + 1000), fresh_id=True)
    s.enqueue(make_job(scheduled_for=NOW + 500), fresh_id=True)
    assert redis_client.llen(g.wake) == 1  # capped at one pending nudge
    assert redis_client.zcard(g.scheduled) == 4 and redis_client.llen(g.ready) == 0


def test_priority_job_jumps_the_ready_queue(store: Store, redis_client: redis.Redis) -> None:
    """A due job with priority > 0 is pushed to the head of ready."""
    s = clocked(store, NOW)
    first, urgent = make_job(scheduled_for=NOW), make_job(scheduled_for=NOW, priority=5)
    s.enqueue(first, fresh_id=True)
    s.enqueue(urgent, fresh_id=True)
    ready = redis_client.lrange(store.keys.group("default").ready, 0, -1)
    assert ready == [urgent.id.encode(), first.id.encode()]


def test_repeated_id_is_never_enqueued_twice(store: Store, redis_client: redis.Redis) -> None:
    """A producer id that exists is refused, in the same group or another one."""
    s = clocked(store, NOW)
    job = make_job(scheduled_for=NOW, args={"v": 1})
    s.enqueue(job, fresh_id=False)
    with pytest.raises(DuplicateJob):
        s.enqueue(job.model_copy(update={"args": {"v": 2}}), fresh_id=False)
    with pytest.raises(DuplicateJob):
        s.enqueue(job.model_copy(update={"group": "gpu"}), fresh_id=False)
    assert store.get_job(job.id).args == {"v": 1}
    assert redis_client.llen(store.keys.group("default").ready) == 1
    assert not redis_client.exists(store.keys.group("gpu").job(job.id))


# -- promote ---------------------------------------------------------------------------------


def test_promote_moves_due_jobs_in_score_order(store: Store, redis_client: redis.Redis) -> None:
    """Due ids move to ready oldest first; a job due 1 ms later stays; next due is reported."""
    s = clocked(store, NOW)
    jobs = [make_job(scheduled_for=NOW + offset) for offset in (300, 100, 200, 301)]
    for job in jobs:
        s.enqueue(job, fresh_id=True)
    result = store.promote("default", now=NOW + 300)
    assert (result.moved, result.next_due_ms, result.max_lag_ms) == (3, NOW + 301, 200)
    ready = [i.decode() for i in redis_client.lrange(store.keys.group("default").ready, 0, -1)]
    assert ready == [jobs[1].id, jobs[2].id, jobs[0].id]
    assert store.promote("default", now=NOW + 300).moved == 0
    assert store.promote("default", now=NOW + 301).next_due_ms is None


def test_promote_works_in_batches(store: Store, redis_client: redis.Redis) -> None:
    """At most one batch moves per call, the rest on the next call."""
    s = clocked(store, NOW)
    for i in range(25):
        s.enqueue(make_job(scheduled_for=NOW + 1 + i), fresh_id=True)
    assert store.promote("default", now=NOW + 100, batch=10).moved == 10
    assert store.promote("default", now=NOW + 100, batch=10).moved == 10
    assert store.promote("default", now=NOW + 100, batch=10).moved == 5
    assert redis_client.llen(store.keys.group("default").ready) == 25


# -- claim and start -------------------------------------------------------------------------


def test_claim_blocks_until_a_job_is_ready(store: Store) -> None:
    """BLMOVE wakes as soon as a job is pushed, and moves it into the worker's running list."""
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(store.claim("default", "w1", 5)))
    waiter.start()
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    waiter.join(5)
    assert got == [job.id]
    assert store.running_ids("default", "w1") == [job.id]


def test_claim_times_out_empty(store: Store) -> None:
    """With nothing ready the claim returns None after its timeout."""
    assert store.claim("default", "w1", 0.05) is None


def test_start_marks_running_and_is_idempotent(store: Store) -> None:
    """Start sets status, worker, claim and attempt; the same claim again changes nothing."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    first = started(store, job.id)
    again = store.start("default", job.id, "w1", "c1")
    assert first == again
    assert again is not None and (again.status, again.worker, again.claim, again.attempt) == (
        Status.RUNNING, "w1", "c1", 1)


def test_start_drops_a_job_that_is_no_longer_queued(store: Store, redis_client: redis.Redis) -> None:
    """A claimed id whose record is not queued any more (canceled, gone) is dropped."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    redis_client.hset(store.keys.group("default").job(job.id), "status", "canceled")
    assert store.claim("default", "w1", 1) == job.id
    assert store.start("default", job.id, "w1", "c1") is None
    assert store.running_ids("default", "w1") == []


# -- logs and complete -----------------------------------------------------------------------


def test_logs_are_fenced_by_claim(store: Store) -> None:
    """Only the current attempt's claim may append log lines."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    running = store.start("default", job.id, "w1", "c1") if store.claim("default", "w1", 1) else None
    assert running is not None
    assert store.append_logs(running, [(1, "stdout", "one"), (2, "stderr", "two")]) == 2
    stale = running.model_copy(update={"claim": "old"})
    assert store.append_logs(stale, [(3, "stdout", "late")]) == FENCED
    lines = [(e.attempt, e.stream, e.line) for e in store.logs(job.id)]
    assert lines == [(1, "stdout", "one"), (1, "stderr", "two")]


def test_logs_wait_for_the_writer_to_know_every_secret(store: Store, redis_client: redis.Redis) -> None:
    """A batch is refused, unwritten, while the job has read secrets the writer does not redact yet."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    running = store.start("default", job.id, "w1", "c1") if store.claim("default", "w1", 1) else None
    assert running is not None
    redis_client.sadd(store.keys.group("default").redact(job.id), "sealed-1")
    assert store.append_logs(running, [(1, "stdout", "secret!")]) == NEW_SECRETS
    assert store.logs(job.id) == []
    assert store.redactions(running) == ["sealed-1"]
    assert store.append_logs(running, [(1, "stdout", "[redacted]")], known_redactions=1) == 1


def test_complete_writes_outcome_ttl_and_wakes_waiters(
    store: Store, redis_client: redis.Redis
) -> None:
    """Completion sets the result, leaves running, indexes, expires record and logs, pushes done."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    running = started(store, job.id)
    assert store.append_logs(running, [(1, "stdout", "hi")]) == 1
    answer = store.complete(running, Status.SUCCESS, {"result": {"x": [1]}, "duration_ms": 7},
                            retention_s=3600)
    assert answer == 1
    g = store.keys.group("default")
    done = store.get_job(job.id)
    assert (done.status, done.result, done.duration_ms) == (Status.SUCCESS, {"x": [1]}, 7)
    assert redis_client.hget(g.job(job.id), "result") == codec.pack({"x": [1]})
    assert store.running_ids("default", "w1") == []
    assert redis_client.zscore(g.completed, job.id) == done.completed_at
    assert 3590 < redis_client.ttl(g.job(job.id)) <= 3600
    assert 3590 < redis_client.ttl(g.logs(job.id)) <= 3600
    assert redis_client.lrange(g.done(job.id), 0, -1) == [b"success"]
    assert redis_client.ttl(g.done(job.id)) > 0
    # A retried call after a lost reply is recognised, not applied twice.
    assert store.complete(running, Status.SUCCESS, {}, retention_s=3600) == 2


def test_complete_is_refused_for_a_stale_claim(store: Store) -> None:
    """A worker whose attempt was superseded cannot complete the job."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    running = started(store, job.id)
    stale_worker = running.model_copy(update={"worker": "w2"})
    stale_claim = running.model_copy(update={"claim": "other"})
    assert store.complete(stale_worker, Status.SUCCESS, {}, retention_s=60) == 0
    assert store.complete(stale_claim, Status.FAILURE, {}, retention_s=60) == 0
    assert store.get_job(job.id).status == Status.RUNNING


def test_wait_returns_when_the_job_completes(store: Store) -> None:
    """wait() blocks on the done list and returns the completed record."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    running = started(store, job.id)
    finisher = threading.Timer(
        0.2, lambda: store.complete(running, Status.SUCCESS, {"result": 3}, retention_s=60))
    finisher.start()
    assert store.wait(job.id, 10).result == 3
    finisher.join()
    assert store.wait(job.id, 1).result == 3  # already complete: answers at once
    with pytest.raises(JobTimeout, match="still queued"):
        other = make_job(scheduled_for=0)
        store.enqueue(other, fresh_id=True)
        store.wait(other.id, 0.1)


# -- recover ---------------------------------------------------------------------------------


def test_recover_requeues_then_fails_with_worker_lost(store: Store, redis_client: redis.Redis) -> None:
    """A dead worker's job goes back to the head of ready until max restarts, then fails."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    for attempt in (1, 2):
        started(store, job.id, worker=f"w{attempt}", claim=f"c{attempt}")
        outcome = store.recover("default", job.id, f"w{attempt}", max_restarts=1, retention_s=60)
        if attempt == 1:
            assert outcome == "requeued"
            assert redis_client.lrange(g.ready, 0, -1) == [job.id.encode()]
            record = store.get_job(job.id)
            assert (record.status, record.worker, record.claim, record.attempt) == (
                Status.QUEUED, None, None, 1)
    assert outcome == "failed"
    final = store.get_job(job.id)
    assert final.status == Status.FAILURE and final.attempt == 2
    assert final.error is not None and final.error["name"] == "WorkerLost"
    assert "w2" in final.error["message"]
    assert redis_client.ttl(g.job(job.id)) > 0


def test_recover_is_safe_to_run_twice(store: Store, redis_client: redis.Redis) -> None:
    """Two schedulers recovering the same dead worker re-queue its job once."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    started(store, job.id)
    outcomes = [store.recover("default", job.id, "w1", max_restarts=3, retention_s=60)
                for _ in range(2)]
    assert outcomes == ["requeued", "dropped"]
    assert redis_client.llen(store.keys.group("default").ready) == 1


def test_recover_returns_an_unstarted_claim_without_counting(store: Store) -> None:
    """An id moved by BLMOVE but never started goes back to ready with no attempt used."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    assert store.claim("default", "w1", 1) == job.id
    assert store.recover("default", job.id, "w1", max_restarts=0, retention_s=60) == "requeued"
    assert store.get_job(job.id).attempt == 0
    assert store.claim("default", "w2", 1) == job.id


def test_recover_leaves_a_job_another_worker_runs(store: Store) -> None:
    """A stale id in a dead worker's list does not disturb the job's current attempt."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    started(store, job.id, worker="w2", claim="c2")
    store.client.rpush(store.keys.group("default").running("w1"), job.id)
    assert store.recover("default", job.id, "w1", max_restarts=3, retention_s=60) == "dropped"
    assert store.get_job(job.id).worker == "w2"


# -- reject, trim, scripts, NOSCRIPT ---------------------------------------------------------


def test_reject_never_clobbers_an_existing_job(store: Store) -> None:
    """A rejection whose id exists is recorded under a new id."""
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=False)
    bad = job.model_copy(update={"status": Status.FAILURE, "raw_spec": "{}",
                                 "error": {"name": "InvalidSpec", "message": "m"}})
    new_id = store.reject(bad, retention_s=60, fresh_id=False)
    assert new_id != job.id
    assert store.get_job(job.id).status == Status.QUEUED
    assert store.get_job(new_id).raw_spec == "{}"


def test_trim_drops_old_completed_ids_and_locations(store: Store, redis_client: redis.Redis) -> None:
    """Retention trimming removes index entries and job locations older than the cutoff."""
    g = store.keys.group("default")
    redis_client.zadd(g.completed, {"old": 100, "new": 300})
    redis_client.set(store.keys.jobloc("old"), "default")
    redis_client.set(store.keys.jobloc("new"), "default")
    assert store.trim_completed("default", 200) == 1
    assert redis_client.zrange(g.completed, 0, -1) == [b"new"]
    assert not redis_client.exists(store.keys.jobloc("old"))
    with pytest.raises(NotFound, match="older than the retention period"):
        store.get_job("old")


def test_scripts_are_loaded_again_after_a_flush(store: Store, redis_client: redis.Redis) -> None:
    """EVALSHA falls back to loading the script when the server lost it (NOSCRIPT)."""
    redis_client.script_flush()
    store.enqueue(make_job(scheduled_for=0), fresh_id=True)  # pipeline path
    redis_client.script_flush()
    assert store.promote("default", now=NOW).moved == 0  # direct path


def test_namespaces_do_not_mix(store: Store, redis_client: redis.Redis) -> None:
    """Two namespaces on one server see only their own jobs."""
    other = Store(redis_client, Keys("other"))
    job = make_job(scheduled_for=0)
    store.enqueue(job, fresh_id=True)
    with pytest.raises(NotFound):
        other.get_job(job.id)
