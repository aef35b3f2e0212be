"""The fleet registry: worker and scheduler heartbeats, leases, groups in use."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from common.connection import redis_errors
from common.instance import InstanceSettings
from common.instance import decode as decode_instance
from common.keys import Keys


@dataclass(frozen=True)
class SchedulerBeat:
    """What one scheduler heartbeat learns."""

    instance: InstanceSettings
    groups: set[str]
    dead_workers: list[str]
    dead_schedulers: list[str]
    due_schedules: list[tuple[str, int]]  # (schedule path, queued fire ms)
    next_schedule_fire: int | None


@dataclass(frozen=True)
class WorkerBeat:
    """What one full worker heartbeat learns."""

    instance: InstanceSettings
    running: list[str]  # the ids in the worker's running list
    registered: bool  # False: the worker was not in the registry before this beat


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    group: str
    last_seen_ms: int
    fields: dict[str, str]


class Fleet:
    """Heartbeats and leases of the processes of one namespace."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    @redis_errors
    def worker_lease(self, worker_id: str, now: int) -> bool:
        """Refresh the worker's lease alone (one ZADD). False when it was not registered
        (forgotten as dead, or the registry was emptied): it must register again with a
        full :meth:`worker_heartbeat`, which it does at its next beat."""
        return int(self.client.zadd(self.keys.workers, {worker_id: now})) == 0

    @redis_errors
    def worker_heartbeat(
        self, worker_id: str, info: dict[str, str | int], now: int, *, running_key: str
    ) -> WorkerBeat:
        """One round trip: refresh the lease and write ``info`` into the worker's hash (with
        ``group``: register the group too; empty: write nothing); read instance settings and
        the ids in the worker's running list."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {worker_id: now})
        if info:
            pipe.hset(self.keys.worker(worker_id), mapping=info)
        if "group" in info:
            pipe.sadd(self.keys.groups, str(info["group"]))
        pipe.hgetall(self.keys.settings)
        pipe.lrange(running_key, 0, -1)
        added, *_, settings, running = pipe.execute()
        return WorkerBeat(decode_instance(settings), [job_id.decode() for job_id in running],
                          registered=int(added) == 0)

    @redis_errors
    def worker_gone(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly (its running list is empty)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.workers, worker_id)
        pipe.delete(self.keys.worker(worker_id))
        pipe.execute()

    @redis_errors
    def scheduler_heartbeat(self, scheduler_id: str, now: int, lease_ms: int) -> SchedulerBeat:
        """One round trip: the scheduler's lease, and everything its tick needs to know."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.schedulers, {scheduler_id: now})
        pipe.hgetall(self.keys.settings)
        pipe.smembers(self.keys.groups)
        pipe.zrange(self.keys.workers, "-inf", now - lease_ms, byscore=True)
        pipe.zrange(self.keys.schedulers, "-inf", now - lease_ms, byscore=True)
        pipe.zrange(self.keys.schedules_due, "-inf", now, byscore=True, withscores=True)
        pipe.zrange(self.keys.schedules_due, 0, 0, withscores=True)
        _, settings, groups, dead_workers, dead_schedulers, due, head = pipe.execute()
        return SchedulerBeat(
            instance=decode_instance(settings),
            groups={g.decode() for g in groups},
            dead_workers=[w.decode() for w in dead_workers],
            dead_schedulers=[s.decode() for s in dead_schedulers],
            due_schedules=[(path.decode(), int(score)) for path, score in due],
            next_schedule_fire=int(head[0][1]) if head else None,
        )

    @redis_errors
    def worker_group(self, worker_id: str) -> str | None:
        group = self.client.hget(self.keys.worker(worker_id), "group")
        return None if group is None else str(group.decode())

    @redis_errors
    def forget_worker(self, worker_id: str, seen_before_ms: int) -> bool:
        """Drop a dead worker from the registry unless it came back meanwhile."""
        score = self.client.zscore(self.keys.workers, worker_id)
        if score is not None and score >= seen_before_ms:
            return False
        self.worker_gone(worker_id)
        return True

    @redis_errors
    def forget_scheduler(self, scheduler_id: str) -> None:
        self.client.zrem(self.keys.schedulers, scheduler_id)

    @redis_errors
    def workers(self) -> list[WorkerInfo]:
        """Every registered worker with its hash."""
        entries = self.client.zrange(self.keys.workers, 0, -1, withscores=True)
        pipe = self.client.pipeline(transaction=False)
        for worker_id, _ in entries:
            pipe.hgetall(self.keys.worker(worker_id.decode()))
        infos = []
        for (worker_id, score), raw in zip(entries, pipe.execute(), strict=True):
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            infos.append(WorkerInfo(worker_id.decode(), fields.get("group", ""), int(score), fields))
        return infos
