"""claim_start: up to K ready jobs taken and started in one call, canceled ones dropped."""

from __future__ import annotations

import pytest
import redis

from common.models import Status
from common.store import Store
from tests.integration.helpers import make_job

pytestmark = [pytest.mark.timeout(30), pytest.mark.cluster]


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def test_claim_start_takes_up_to_k_in_one_call(store: Store, redis_client: redis.Redis) -> None:
    """Five due jobs, the second canceled: K=3 starts three live ones in order, in one EVALSHA."""
    jobs = [make_job() for _ in range(5)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    store.cancel(jobs[1].id, by="u/admin", reason="", retention_s=60)
    evals = calls(redis_client, "evalsha")
    started = store.claim_start("default", "w1", 3, "abc")
    assert calls(redis_client, "evalsha") == evals + 1
    assert [job.id for job in started] == [jobs[0].id, jobs[2].id, jobs[3].id]
    assert [job.claim for job in started] == ["abc0001", "abc0002", "abc0003"]
    for job in started:
        assert (job.status, job.worker, job.attempt) == (Status.RUNNING, "w1", 1)
        assert job.started_at is not None
    assert store.running_ids("default", "w1") == [j.id for j in started]
    assert store.get_job(jobs[1].id).status == Status.CANCELED  # dropped, not run
    g = "gm:{wg:default}:ix:status:"
    assert redis_client.zcard(g + "running") == 3 and redis_client.zcard(g + "queued") == 1
    rest = store.claim_start("default", "w1", 3, "def")
    assert [job.id for job in rest] == [jobs[4].id]
    assert store.claim_start("default", "w1", 3, "ghi") == []


def test_claim_start_starts_a_blmoved_id_first(store: Store) -> None:
    """The id a worker's BLMOVE took is started first, then more from ready; the claims fence."""
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    held = store.claim("default", "w1", 1)
    assert held == jobs[0].id
    started = store.claim_start("default", "w1", 1, "p", held=held)
    assert [job.id for job in started] == [jobs[0].id, jobs[1].id]
    # A completion must carry the claim this call gave.
    stale = started[0].model_copy(update={"claim": "not-it"})
    assert store.complete(stale, Status.SUCCESS, {"result": 1}, retention_s=60) == 0
    assert store.complete(started[0], Status.SUCCESS, {"result": 1}, retention_s=60) != 0
