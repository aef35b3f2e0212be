"""enqueue_batch.lua through Store.enqueue_many: many jobs per call, each as enqueue.lua queues it."""

from __future__ import annotations

import pytest
import redis

from common import indexes
from common.keys import Keys
from common.models import Status
from common.store import RUN, Store
from tests.integration.helpers import make_job

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]

NOW = 10_000_000


@pytest.fixture
def store(redis_client: redis.Redis, keys: Keys) -> Store:
    """A store whose clock stands still at NOW."""
    return Store(redis_client, keys, clock=lambda: NOW)


def ready(client: redis.Redis) -> list[str]:
    return [raw.decode() for raw in client.lrange("gm:{wg:default}:ready", 0, -1)]


def test_a_batch_is_queued_as_one_by_one_would(store: Store, redis_client: redis.Redis) -> None:
    """Due jobs in order (a priority job at the head at its turn), future ones scheduled,
    records and indexes written, one event each, and one nudge for the earliest future job."""
    redis_client.zadd("gm:{wg:default}:scheduled", {"far": NOW + 60_000})
    due = [make_job(created_at=NOW) for _ in range(3)]
    urgent = make_job(created_at=NOW, priority=5)
    later = [make_job(created_at=NOW, scheduled_for=NOW + 5_000),
             make_job(created_at=NOW, scheduled_for=NOW + 2_000)]
    jobs = [due[0], due[1], urgent, *later, due[2]]
    assert store.enqueue_many([(job, True) for job in jobs]) == [True] * 6
    assert ready(redis_client) == [urgent.id, due[0].id, due[1].id, due[2].id]
    assert redis_client.zrange("gm:{wg:default}:scheduled", 0, -1) == \
        [later[1].id.encode(), later[0].id.encode(), b"far"]
    assert redis_client.lrange("gm:{wg:default}:wake", 0, -1) == [str(NOW + 2_000).encode()]
    for job in jobs:
        stored = store.get_job(job.id)
        assert stored.model_dump(exclude={"ix"}) == job.model_dump(exclude={"ix"})
        assert stored.ix == indexes.record_field(job)
    entries = indexes.entries_for(due[0], Status.QUEUED)
    for entry in entries:
        assert redis_client.zcard(f"gm:{{wg:default}}:ix:{entry}") == 6
    assert redis_client.xlen("gm:{wg:default}:events") == 6


def test_an_existing_id_is_not_queued_twice(store: Store, redis_client: redis.Redis) -> None:
    """A job whose record exists, and an id repeated in the batch: False, nothing rewritten."""
    first = make_job(created_at=NOW, args={"n": 1})
    store.enqueue(first, fresh_id=True)
    again = first.model_copy(update={"args": {"n": 2}})
    other = make_job(created_at=NOW)
    answers = store.enqueue_many([(again, False), (other, True), (other, False)])
    assert answers == [False, True, False]
    assert store.get_job(first.id).args == {"n": 1}
    assert ready(redis_client) == [first.id, other.id]
    assert redis_client.xlen("gm:{wg:default}:events") == 2


def test_a_future_job_after_the_head_does_not_nudge(store: Store, redis_client: redis.Redis) -> None:
    """Only a job due before the current head wakes the promoter."""
    redis_client.zadd("gm:{wg:default}:scheduled", {"near": NOW + 1_000})
    store.enqueue_many([(make_job(created_at=NOW, scheduled_for=NOW + 9_000), True)])
    assert redis_client.llen("gm:{wg:default}:wake") == 0


def test_mixed_jobs_keep_their_order_across_calls(store: Store, redis_client: redis.Redis) -> None:
    """Jobs of other indexes (another creator) and more than a call holds: order kept."""
    jobs = [make_job(created_at=NOW, created_by="u/alice" if i % 7 == 3 else "u/bob")
            for i in range(RUN * 2 + 5)]
    assert all(store.enqueue_many([(job, True) for job in jobs]))
    assert ready(redis_client) == [job.id for job in jobs]
    assert redis_client.zcard("gm:{wg:default}:ix:by:u/alice:live") == \
        sum(job.created_by == "u/alice" for job in jobs)
