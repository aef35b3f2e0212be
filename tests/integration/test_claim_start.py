"""claim_start: up to K ready jobs taken and started in one call, canceled ones dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from common import codec
from common.fleet import Fleet
from common.models import Job, Status
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


def blocking_claim(store: Store, count: int, timeout_s: float, prefix: str = "b") -> list[Job]:
    return store.claim_start_blocking("default", "w1", count, prefix, timeout_s,
                                      store.blocker("default"))


def test_a_blocking_claim_starts_the_job_it_waited_for(store: Store,
                                                       redis_client: redis.Redis) -> None:
    """An idle worker's one call: blocked until a job is due, it gets the job started (and
    the next due ones, up to count more), stamped with the server's time, in one round trip."""
    first = make_job()
    got: list[list[Job]] = []
    waiter = threading.Thread(target=lambda: got.append(blocking_claim(store, 1, 10)))
    waiter.start()
    wait_for(lambda: _blocked(redis_client) == 1)
    before = int(redis_client.time()[0]) * 1000
    store.enqueue(first, fresh_id=True)
    waiter.join(10)
    assert not waiter.is_alive()
    [started] = got[0]
    assert (started.id, started.status, started.worker, started.claim) == \
        (first.id, Status.RUNNING, "w1", "b0001")
    assert started.started_at is not None and before <= started.started_at
    assert store.running_ids("default", "w1") == [first.id]
    # Ready has several: the BLMOVE's and `count` more, oldest first.
    more = [make_job() for _ in range(3)]
    for job in more:
        store.enqueue(job, fresh_id=True)
    assert [job.id for job in blocking_claim(store, 1, 1, "c")] == [more[0].id, more[1].id]


def test_a_blocking_claim_that_times_out_starts_nothing(store: Store) -> None:
    """Ready stayed empty: nothing is started, and the job the worker already runs (the last
    of its running list) is left as it is."""
    running = make_job()
    store.enqueue(running, fresh_id=True)
    [job] = store.claim_start("default", "w1", 1, "a")
    assert blocking_claim(store, 3, 0.05) == []
    assert store.running_ids("default", "w1") == [running.id]
    assert store.get_job(running.id).claim == job.claim == "a0001"


def test_an_interrupted_blocking_claim_takes_nothing(store: Store,
                                                    redis_client: redis.Redis) -> None:
    """A stopping worker interrupts its blocked claim: it returns at once, nothing taken,
    and a job enqueued afterwards stays queued for another worker."""
    blocker = store.blocker("default")
    got: list[list[Job]] = []
    waiter = threading.Thread(target=lambda: got.append(store.claim_start_blocking(
        "default", "w1", 1, "b", 30, blocker)))
    waiter.start()
    wait_for(lambda: _blocked(redis_client) == 1)
    blocker.interrupt()
    waiter.join(5)
    assert not waiter.is_alive() and got == [[]]
    job = make_job()
    store.enqueue(job, fresh_id=True)
    assert store.claim_start_blocking("default", "w1", 1, "b", 30, blocker) == []
    assert store.get_job(job.id).status == Status.QUEUED
    assert store.running_ids("default", "w1") == []


def test_a_blocking_claim_after_a_script_flush_still_starts_its_job(
    store: Store, redis_client: redis.Redis,
) -> None:
    """The server lost its scripts (restarted, flushed): the claim_start behind the BLMOVE
    did not run, so the moved id is started by a call of its own, once."""
    job = make_job()
    store.enqueue(job, fresh_id=True)
    for node in _primaries(redis_client):
        node.script_flush()
    [started] = blocking_claim(store, 1, 1)
    assert (started.id, started.status, started.attempt) == (job.id, Status.RUNNING, 1)
    assert store.running_ids("default", "w1") == [job.id]


def _blocked(client: redis.Redis) -> int:
    """Clients blocked on the servers (every primary of a cluster)."""
    return sum(int(node.info("clients")["blocked_clients"]) for node in _primaries(client))


def _primaries(client: redis.Redis) -> list[redis.Redis]:
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]
