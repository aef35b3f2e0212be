"""Enqueue benchmark jobs, wait for them on Redis conditions, and read their timestamps.

Waiting never sleeps for a fixed time: it checks the jobs' ``done`` lists in
pipelined batches and blocks (``BLMOVE done done``, which leaves the element
for other waiters) on the first job that is not finished yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from bench.fleet import Deadline
from common.keys import GroupKeys

CHECK_BATCH = 500
BLOCK_S = 1.0
TIME_FIELDS = ("status", "created_at", "scheduled_for", "started_at", "completed_at",
               "duration_ms")


def job_code(sleep_ms: int) -> str:
    """The python3 code of one benchmark job: a no-op, or a sleep of ``sleep_ms``."""
    if sleep_ms <= 0:
        return "def main():\n    return 1\n"
    return f"import time\n\n\ndef main():\n    time.sleep({sleep_ms / 1000!r})\n    return 1\n"


@dataclass(frozen=True)
class JobTimes:
    """The timestamps (epoch ms) of one job record; None for fields not written."""

    id: str
    status: str
    created_at: int
    scheduled_for: int
    started_at: int | None
    completed_at: int | None
    duration_ms: int | None

    @property
    def start_latency_ms(self) -> int | None:
        """enqueue -> start: started_at - created_at."""
        return None if self.started_at is None else self.started_at - self.created_at

    @property
    def complete_latency_ms(self) -> int | None:
        """enqueue -> completed: completed_at - created_at."""
        return None if self.completed_at is None else self.completed_at - self.created_at

    @property
    def start_lateness_ms(self) -> int | None:
        """scheduled -> start: started_at - scheduled_for."""
        return None if self.started_at is None else self.started_at - self.scheduled_for


@dataclass(frozen=True)
class EnqueueResult:
    ids: list[str]
    seconds: float

    @property
    def rate(self) -> float:
        """Jobs enqueued per second by the single producer."""
        return len(self.ids) / self.seconds if self.seconds > 0 else float("inf")


def enqueue_many(
    submit: Callable[[int], str], count: int, deadline: Deadline, what: str
) -> EnqueueResult:
    """Call ``submit(i)`` for i in 0..count-1 from this one thread; time the whole loop."""
    ids: list[str] = []
    started = time.perf_counter()
    for i in range(count):
        if i % 100 == 0:
            deadline.check(f"enqueueing {what} ({i}/{count})")
        ids.append(submit(i))
    return EnqueueResult(ids, time.perf_counter() - started)


def wait_done(client: redis.Redis, group: GroupKeys, ids: Sequence[str], deadline: Deadline,
              what: str) -> None:
    """Return once every job in ``ids`` has completed (its done list exists)."""
    pending = list(ids)
    while pending:
        head = pending[:CHECK_BATCH]
        pipe = client.pipeline(transaction=False)
        for job_id in head:
            pipe.exists(group.done(job_id))
        flags = pipe.execute()
        still = [job_id for job_id, flag in zip(head, flags, strict=True) if not flag]
        pending = still + pending[CHECK_BATCH:]
        if not still:
            continue
        left = deadline.remaining()
        if left <= 0:
            deadline.check(f"waiting for {what}: {len(pending)} of {len(ids)} not completed")
        done = group.done(still[0])
        client.blmove(done, done, max(0.01, min(BLOCK_S, left)), "RIGHT", "LEFT")


def read_times(client: redis.Redis, group: GroupKeys, ids: Sequence[str]) -> list[JobTimes]:
    """The timestamps of every job in ``ids`` (pipelined HMGETs)."""
    out: list[JobTimes] = []
    for first in range(0, len(ids), CHECK_BATCH):
        chunk = ids[first:first + CHECK_BATCH]
        pipe = client.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hmget(group.job(job_id), TIME_FIELDS)
        for job_id, row in zip(chunk, pipe.execute(), strict=True):
            status, created, scheduled, started, completed, duration = row
            out.append(JobTimes(
                id=job_id, status=(status or b"missing").decode(),
                created_at=int(created or 0), scheduled_for=int(scheduled or 0),
                started_at=_int(started), completed_at=_int(completed), duration_ms=_int(duration),
            ))
    return out


def _int(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)
