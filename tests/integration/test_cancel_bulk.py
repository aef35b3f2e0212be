"""Cancel is O(1) in the queue's length; bulk cancel is batched; completions are all counted."""

from __future__ import annotations

import pytest
import redis

from common import metrics
from common.models import Status
from common.store import Store
from tests.integration.helpers import make_job

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def completed(group: str, kind: str, status: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "gristmill_jobs_completed_total", {"group": group, "kind": kind, "status": status}) or 0.0


@pytest.mark.timeout(30)
def test_cancel_does_not_scan_the_ready_list(store: Store, redis_client: redis.Redis) -> None:
    """Canceling a queued job runs no LREM; the canceled id is dropped when a worker takes it."""
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    lrem_before = calls(redis_client, "lrem")
    assert store.cancel(jobs[0].id, by="u/admin", reason="", retention_s=60) == "canceled"
    assert calls(redis_client, "lrem") == lrem_before
    assert store.get_job(jobs[0].id).status == Status.CANCELED
    assert store.claim("default", "w1", 1) == jobs[0].id
    assert store.start("default", jobs[0].id, "w1", "c") is None  # dropped, not run
    assert store.running_ids("default", "w1") == []
    assert store.claim("default", "w1", 1) == jobs[1].id


@pytest.mark.timeout(60)
def test_bulk_cancel_is_a_few_batched_scripts(store: Store, redis_client: redis.Redis) -> None:
    """1,200 queued jobs (due and future) canceled in a handful of scripts; a running job stays."""
    now = store.clock()
    running = make_job(scheduled_for=now)
    store.enqueue(running, fresh_id=True)
    assert store.claim("default", "w1", 1) == running.id
    assert store.start("default", running.id, "w1", "c") is not None
    queued = [make_job(scheduled_for=now if n % 2 else now + 3_600_000) for n in range(1200)]
    for job in queued:
        store.enqueue(job, fresh_id=True)
    before = completed("default", "preview", "canceled")
    evals = calls(redis_client, "evalsha")
    assert store.cancel_queued("default", by="u/admin", reason="bulk", retention_s=60) == 1200
    assert calls(redis_client, "evalsha") - evals <= 1200 // 250 + 3
    assert completed("default", "preview", "canceled") - before == 1200
    g = store.keys.group("default")
    assert redis_client.zcard(g.scheduled) == 0
    pipe = redis_client.pipeline(transaction=False)
    for job in queued:
        pipe.hmget(g.job(job.id), "status", "canceled_reason")
    assert set(map(tuple, pipe.execute())) == {(b"canceled", b"bulk")}
    assert store.get_job(running.id).status == Status.RUNNING
    assert store.cancel_queued("default", by="u/admin", reason="again", retention_s=60) == 0


@pytest.mark.timeout(30)
def test_queued_cancel_and_worker_lost_are_counted_as_completed(store: Store) -> None:
    """gristmill_jobs_completed_total counts a canceled queued job and a WorkerLost failure."""
    canceled, lost = make_job(), make_job()
    store.enqueue(canceled, fresh_id=True)
    before = completed("default", "preview", "canceled")
    store.cancel(canceled.id, by="u/admin", reason="", retention_s=60)
    assert completed("default", "preview", "canceled") - before == 1

    store.enqueue(lost, fresh_id=True)
    assert store.claim("default", "dead", 1) == canceled.id  # the canceled id, lazily left
    assert store.start("default", canceled.id, "dead", "c0") is None
    assert store.claim("default", "dead", 1) == lost.id
    assert store.start("default", lost.id, "dead", "c1") is not None
    before = completed("default", "preview", "failure")
    assert store.recover("default", lost.id, "dead", max_restarts=0, retention_s=60) == "failed"
    assert completed("default", "preview", "failure") - before == 1
