"""The one task every job queue runs in ``bench/peers.py``, defined for the peer in BENCH_PEER.

``work(due_ms, sleep_ms)``: when the job was scheduled, push how late it
started to ``bench:late``; sleep ``sleep_ms``; count itself done in
``bench:done``. The counting costs each peer one INCR per job (Gristmill's
jobs cannot reach Redis, so its figures are read from its own records).
Imported by the peers' worker processes and by the bench's producer, with
BENCH_REDIS_URL and BENCH_PEER set.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0")
PEER = os.environ.get("BENCH_PEER", "")
DONE = "bench:done"
LATE = "bench:late"
QUEUE = "bench"
_client = redis.Redis.from_url(URL)


def lateness_ms(started_ms: int, due_ms: int) -> float:
    """How late a job started: its start minus its due time, both epoch ms (early is negative).

    The one measure for every system: the peers' tasks push it when they start,
    and Gristmill's figure is the same difference of its record's started_at and
    scheduled_for.
    """
    return float(started_ms - due_ms)


def _started(due_ms: int) -> None:
    if due_ms:
        _client.rpush(LATE, lateness_ms(time.time_ns() // 1_000_000, due_ms))


def work(due_ms: int = 0, sleep_ms: int = 0) -> None:
    _started(due_ms)
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    _client.incr(DONE)


task: Any = None
huey: Any = None
settings: Any = None

if PEER == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url=URL))
    task = dramatiq.actor(work, queue_name=QUEUE, max_retries=0)
elif PEER == "huey":
    from huey import RedisHuey

    huey = RedisHuey(QUEUE, url=URL)
    task = huey.task()(work)
elif PEER == "saq":
    from saq import Queue

    async def saq_work(ctx: Any, *, due_ms: int = 0, sleep_ms: int = 0) -> None:
        _started(due_ms)
        if sleep_ms:
            await asyncio.sleep(sleep_ms / 1000)
        _client.incr(DONE)

    saq_queue = Queue.from_url(URL, name=QUEUE)
    settings = {"queue": saq_queue, "functions": [saq_work], "concurrency": 4}
