"""The fleet registry: worker and scheduler heartbeats, leases, groups in use."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from common.connection import redis_errors
from common.instance import InstanceSettings
from common.instance import decode as decode_instance
from common.keys import Keys

SILENT_PAGE = 100  # members read per look for silent ones (more are taken at the next tick)


@dataclass(frozen=True)
class SchedulerBeat:
    """What one scheduler heartbeat (its lease renewal) learns."""

    instance: InstanceSettings
    groups: set[str]
    next_schedule_fire: int | None


@dataclass(frozen=True)
class Silent:
    """Members of a heartbeat set silent for longer than the lease (at most a page), and the
    last beat of the oldest of the others (None when none was read)."""

    dead: list[str]
    oldest_alive_ms: int | None


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
        self, worker_id: str, info: dict[str, str | int], now: int, *, running_key: str,
        gone_key: str | None = None,
    ) -> WorkerBeat:
        """One round trip: refresh the lease and write ``info`` into the worker's hash (with
        ``group``: register the group too, and lift the fence of a worker presumed dead,
        ``gone_key``; empty: write nothing); read instance settings and the ids in the
        worker's running list."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {worker_id: now})
        if info:
            pipe.hset(self.keys.worker(worker_id), mapping=info)
        if "group" in info:
            pipe.sadd(self.keys.groups, str(info["group"]))
            if gone_key is not None:
                pipe.delete(gone_key)
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
    def scheduler_heartbeat(self, scheduler_id: str, now: int) -> SchedulerBeat:
        """One round trip of four commands: the scheduler's lease, the instance settings,
        the groups in use, and when the next schedule fires."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.schedulers, {scheduler_id: now})
        pipe.hgetall(self.keys.settings)
        pipe.smembers(self.keys.groups)
        pipe.zrange(self.keys.schedules_due, 0, 0, withscores=True)
        _, settings, groups, head = pipe.execute()
        return SchedulerBeat(
            instance=decode_instance(settings),
            groups={g.decode() for g in groups},
            next_schedule_fire=int(head[0][1]) if head else None,
        )

    @redis_errors
    def next_schedule_fire(self) -> int | None:
        head = self.client.zrange(self.keys.schedules_due, 0, 0, withscores=True)
        return int(head[0][1]) if head else None

    @redis_errors
    def silent_workers(self, before_ms: int) -> Silent:
        """Workers last seen at or before ``before_ms`` (one ZRANGE)."""
        return self._silent(self.keys.workers, before_ms)

    @redis_errors
    def silent_schedulers(self, before_ms: int) -> Silent:
        """Schedulers last seen at or before ``before_ms`` (one ZRANGE)."""
        return self._silent(self.keys.schedulers, before_ms)

    def _silent(self, key: str, before_ms: int) -> Silent:
        rows = self.client.zrange(key, "-inf", "+inf", byscore=True, offset=0, num=SILENT_PAGE,
                                  withscores=True)
        dead = [member.decode() for member, score in rows if score <= before_ms]
        alive = [int(score) for _, score in rows if score > before_ms]
        return Silent(dead, alive[0] if alive else None)

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
