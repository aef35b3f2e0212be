"""claim_start: up to K ready jobs taken and started in one call, canceled ones dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from common import codec
from common.fleet import Fleet
from common.models import Status
from common.settings import Settings
from common.store import Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

pytestmark = [pytest.mark.timeout(30), pytest.mark.cluster]


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


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


def test_an_unreadable_record_is_started_and_failed_saying_why(
    store: Store, redis_client: redis.Redis, scripts: ScriptStore, fleet: Fleet,
    settings: Settings, sandbox: Sandbox,
) -> None:
    """A record this version cannot read (a kind from a newer version) is claimed like the
    others, recorded failed with BadRecord naming the field; the next job runs all the same."""
    strange, plain = make_job(), make_job()
    for job in (strange, plain):
        store.enqueue(job, fresh_id=True)
    redis_client.hset(store.keys.group("default").job(strange.id), "kind", "teleport")
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                    claim_block_s=1, sandbox=sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        record = store.keys.group("default").job(strange.id)
        wait_for(lambda: redis_client.hget(record, "status") == b"failure"
                 and store.get_job(plain.id).is_terminal)
    finally:
        worker.stop()
        thread.join(20)
    assert not thread.is_alive() and worker.failed is None
    error = codec.unpack(redis_client.hget(record, "error"))
    assert error["name"] == "BadRecord" and "field kind" in error["message"]
    assert strange.id in error["message"]
    assert store.get_job(plain.id).status == Status.SUCCESS
    assert store.running_ids("default", worker.worker_id) == []
