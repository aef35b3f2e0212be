"""claim_start: up to K ready jobs taken and started in one call, canceled ones dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from common import codec, luascripts
from common.errors import WorkerFenced
from common.fleet import Fleet
from common.models import Job, Status
from common.settings import Settings
from common.store import NextClaim, Store
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


def test_claim_start_starts_a_landed_id_first(store: Store, redis_client: redis.Redis) -> None:
    """The id a worker's BLMOVE landed is started first, then more from ready; the claims
    fence."""
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    held = redis_client.lmove(g.ready, g.landing("w1"), "LEFT", "RIGHT").decode()
    assert held == jobs[0].id
    started = store.claim_start("default", "w1", 2, "p")
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


def blocking_claim(store: Store, count: int, timeout_s: float, prefix: str = "b",
                   worker: str = "w1") -> list[Job]:
    blocker = store.blocker("default")
    try:
        return store.claim_start_blocking("default", worker, count, prefix, timeout_s, blocker)
    finally:
        blocker.close()


def in_thread(call: Callable[[], list[Job]]) -> tuple[threading.Thread, list[list[Job]]]:
    got: list[list[Job]] = []
    thread = threading.Thread(target=lambda: got.append(call()), daemon=True)
    thread.start()
    return thread, got


def test_a_blocking_claim_starts_the_job_it_waited_for(store: Store,
                                                       redis_client: redis.Redis) -> None:
    """An idle worker's one call: blocked until a job is due, it gets the job started (and
    the next due ones, up to count in all), stamped with the server's time, in one round
    trip."""
    first = make_job()
    waiter, got = in_thread(lambda: blocking_claim(store, 1, 10))
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
    # Ready has several: the BLMOVE's and more, count in all, oldest first.
    more = [make_job() for _ in range(3)]
    for job in more:
        store.enqueue(job, fresh_id=True)
    assert [job.id for job in blocking_claim(store, 2, 1, "c")] == [more[0].id, more[1].id]
    assert redis_client.llen(store.keys.group("default").landing("w1")) == 0


def test_a_blocking_claim_starts_its_job_whatever_runs_between(
    store: Store, redis_client: redis.Redis,
) -> None:
    """Redis runs the claim_start behind the BLMOVE after the other clients' commands of the
    same moment: here the enqueue of two jobs and a slot's claim of this same worker, in
    one pipeline. The job the BLMOVE took waits in the worker's landing list (not at some
    place in its running list), so one of the two calls starts it (the oldest first); no
    job is started twice, none is stranded, the other stays due."""
    running = make_job()
    store.enqueue(running, fresh_id=True)
    store.claim_start("default", "w1", 1, "s")
    x, y = make_job(), make_job()
    g = store.keys.group("default")
    for job in (x, y):
        store.enqueue(job, fresh_id=True)
    redis_client.delete(g.ready)  # queued records, pushed onto ready below, at once
    waiter, got = in_thread(lambda: blocking_claim(store, 1, 10, "L"))
    wait_for(lambda: _blocked(redis_client) == 1)
    keys, args = store._claim_start_call(NextClaim("default", "w1", "S"), 1)
    pipe = redis_client.pipeline(transaction=False)
    pipe.rpush(g.ready, x.id, y.id)
    pipe.execute_command("EVALSHA", luascripts.CLAIM_START.sha, len(keys), *keys, *args)
    slot = pipe.execute()[1]
    waiter.join(10)
    assert not waiter.is_alive()
    started = [job.id for job in got[0]] + \
        [job.id for job in store._claimed("default", "w1", slot)]
    # (Redis 7 serves the BLMOVE right after the RPUSH, so the slot's call finds X landed
    # and starts it, and the one behind the BLMOVE finds nothing: Y stays due.)
    assert x.id in started and len(set(started)) == len(started)
    assert sorted(store.running_ids("default", "w1")) == sorted([running.id, *started])
    assert redis_client.llen(g.landing("w1")) == 0
    for job in (x, y):
        status = store.get_job(job.id).status
        assert status == (Status.RUNNING if job.id in started else Status.QUEUED)
    assert [i.decode() for i in redis_client.lrange(g.ready, 0, -1)] == \
        [job.id for job in (x, y) if job.id not in started]


def test_an_id_a_failed_call_left_landed_is_started_by_the_next_claim(
    store: Store, redis_client: redis.Redis,
) -> None:
    """An id the BLMOVE landed whose claim_start did not run (refused, connection lost) is
    not stranded: the worker's next claim of any kind starts it first, within its count."""
    stranded, due = make_job(), make_job()
    for job in (stranded, due):
        store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    assert redis_client.lmove(g.ready, g.landing("w1"), "LEFT", "RIGHT") == stranded.id.encode()
    assert [job.id for job in store.claim_start("default", "w1", 1, "n")] == [stranded.id]
    assert [job.id for job in store.claim_start("default", "w1", 1, "m")] == [due.id]


def test_unland_puts_landed_ids_back_at_the_head_of_ready_in_order(
    store: Store, redis_client: redis.Redis,
) -> None:
    """A stopping or dead worker's landed ids (never started) go back to ready's head, in
    their order, ahead of the jobs that were behind them."""
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    for _ in range(2):
        redis_client.lmove(g.ready, g.landing("w1"), "LEFT", "RIGHT")
    assert store.unland("default", "w1") == 2
    assert [i.decode() for i in redis_client.lrange(g.ready, 0, -1)] == [j.id for j in jobs]
    assert store.unland("default", "w1") == 0
    assert {store.get_job(job.id).status for job in jobs} == {Status.QUEUED}


def test_a_blocking_claim_that_times_out_starts_nothing(store: Store) -> None:
    """Ready stayed empty: nothing is started, and the job the worker already runs is left
    as it is."""
    running = make_job()
    store.enqueue(running, fresh_id=True)
    [job] = store.claim_start("default", "w1", 1, "a")
    assert blocking_claim(store, 3, 0.05) == []
    assert store.running_ids("default", "w1") == [running.id]
    assert store.get_job(running.id).claim == job.claim == "a0001"


def test_an_interrupted_blocking_claim_takes_nothing(store: Store,
                                                    redis_client: redis.Redis) -> None:
    """A stopping worker interrupts its claim while Redis holds it blocked: it returns at
    once (not after its 30 s), with nothing started, and the claim_start queued behind the
    BLMOVE (which then runs) takes nothing off ready either."""
    due = make_job()
    store.enqueue(due, fresh_id=True)
    g = store.keys.group("default")
    redis_client.delete(g.ready)  # queued, but not due until the interrupt is done
    blocker = store.blocker("default")
    waiter, got = in_thread(lambda: store.claim_start_blocking(
        "default", "w1", 1, "b", 30, blocker))
    wait_for(lambda: _blocked(redis_client) == 1)
    started = time.monotonic()
    blocker.interrupt()
    waiter.join(5)
    assert not waiter.is_alive() and got == [[]]
    assert time.monotonic() - started < 5
    redis_client.rpush(g.ready, due.id)
    assert store.get_job(due.id).status == Status.QUEUED
    assert store.running_ids("default", "w1") == [] and redis_client.llen(g.landing("w1")) == 0
    blocker.close()


def test_a_blocking_claim_after_a_script_flush_still_starts_its_job(
    store: Store, redis_client: redis.Redis,
) -> None:
    """The server lost its scripts (restarted, flushed): the claim_start behind the BLMOVE
    did not run, so what landed is started by a call of its own, once."""
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


def test_a_fenced_workers_claim_starts_nothing_and_gives_its_ids_back(
    store: Store, redis_client: redis.Redis,
) -> None:
    """A worker presumed dead: its claim answers WorkerFenced, and the ids it had landed
    unstarted go back to the head of ready, in their order."""
    held, landed, due = make_job(), make_job(), make_job()
    for job in (held, landed, due):
        store.enqueue(job, fresh_id=True)
    g = store.keys.group("default")
    for _ in range(2):
        redis_client.lmove(g.ready, g.landing("w1"), "LEFT", "RIGHT")
    store.fence_gone("default", "w1")
    with pytest.raises(WorkerFenced):
        store.claim_start("default", "w1", 3, "f")
    assert [i.decode() for i in redis_client.lrange(g.ready, 0, -1)] == \
        [held.id, landed.id, due.id]
    assert store.running_ids("default", "w1") == [] and redis_client.llen(g.landing("w1")) == 0
    assert {store.get_job(job.id).status for job in (held, landed, due)} == {Status.QUEUED}
    store.unfence_gone("default", "w1")
    assert [job.id for job in store.claim_start("default", "w1", 1, "g")] == [held.id]
