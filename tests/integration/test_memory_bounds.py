"""Memory per job is bounded: log bytes, results, errors, and completed jobs per group."""

from __future__ import annotations

import threading

import pytest
import redis

from common.fleet import Fleet
from common.models import Status
from common.settings import Settings
from common.store import Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker


def started(store: Store, job_id: str) -> object:
    assert store.claim("default", "w1", 1) == job_id
    job = store.start("default", job_id, "w1", "c1")
    assert job is not None
    return job


@pytest.mark.timeout(30)
def test_log_bytes_are_bounded_with_a_marker_and_a_summary(store: Store) -> None:
    """Lines beyond max_bytes are dropped and counted; a marker at the cut, a summary at the end."""
    job = make_job()
    store.enqueue(job, fresh_id=True)
    running = started(store, job.id)
    line = "x" * 400
    assert store.append_logs(running, [(1, "stdout", line)] * 2, max_bytes=1000) == 2  # type: ignore[arg-type]
    assert store.append_logs(running, [(2, "stdout", line), (2, "stdout", "small")],  # type: ignore[arg-type]
                             max_bytes=1000) == 2
    assert store.append_logs(running, [(3, "stdout", "tiny")], max_bytes=1000) == 1  # type: ignore[arg-type]
    record = store.get_job(job.id)
    assert (record.log_bytes, record.log_dropped_lines, record.log_dropped_bytes) == (800, 3, 409)
    assert store.complete(running, Status.SUCCESS, {"result": 1}, retention_s=60) == 1  # type: ignore[arg-type]
    lines = [entry.line for entry in store.logs(job.id)]
    assert lines[:2] == [line, line]
    assert lines[2].startswith("[gristmill: this job reached its log limit of 1000 bytes")
    assert lines[3] == "[gristmill: 3 log lines (409 bytes) beyond the log limit were dropped]"
    assert len(lines) == 4


@pytest.mark.timeout(30)
def test_count_retention_keeps_the_newest_jobs_per_group(store: Store,
                                                         redis_client: redis.Redis) -> None:
    """Beyond retention_max_jobs the oldest completed jobs go, with every key of theirs."""
    ids = []
    ticks = iter(range(1_700_000_000_000, 1_700_000_100_000, 10))
    store.clock = lambda: next(ticks)  # completions 10 ms apart: their order is never a tie
    for n in range(7):
        job = make_job(created_at=n)
        store.enqueue(job, fresh_id=True)
        running = started(store, job.id)
        store.append_logs(running, [(n, "stdout", "hello")])  # type: ignore[arg-type]
        store.complete(running, Status.SUCCESS, {"result": n}, retention_s=3600)  # type: ignore[arg-type]
        ids.append(job.id)
    other = make_job(group="other")
    store.enqueue(other, fresh_id=True)
    assert store.trim_count("default", 3) == 4
    assert store.trim_count("default", 3) == 0
    g = store.keys.group("default")
    assert [i.decode() for i in redis_client.zrange(g.completed, 0, -1)] == ids[4:]
    for old in ids[:4]:
        assert not redis_client.exists(g.job(old), g.logs(old), g.attempts(old), g.done(old),
                                       store.keys.jobloc(old))
    assert store.get_job(ids[4]).result == 4 and store.get_job(other.id).status == Status.QUEUED


BIG_RESULT = "def main():\n    return 'x' * 5000\n"
BIG_ERROR = "def main():\n    raise ValueError('e' * 200_000)\n"


@pytest.mark.timeout(60)
def test_results_and_errors_are_bounded(store: Store, scripts: ScriptStore, fleet: Fleet,
                                        settings: Settings, redis_client: redis.Redis,
                                        sandbox: Sandbox) -> None:
    """A result over max_result_bytes fails with ResultTooLarge; a huge error message is cut."""
    redis_client.hset(store.keys.settings, "max_result_bytes", 1024)
    big, loud = make_job(code=BIG_RESULT), make_job(code=BIG_ERROR)
    for job in (big, loud):
        store.enqueue(job, fresh_id=True)
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings, claim_block_s=0.5,
                    sandbox=sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        failed = store.wait(big.id, 30)
        assert failed.status == Status.FAILURE and (failed.error or {})["name"] == "ResultTooLarge"
        assert "1024 bytes" in (failed.error or {})["message"]
        cut = store.wait(loud.id, 30)
        message = (cut.error or {})["message"]
        assert (cut.error or {})["name"] == "ValueError" and len(message) < 70_000
        assert message.endswith("characters]")
    finally:
        worker.stop()
        thread.join(30)
