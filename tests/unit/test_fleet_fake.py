"""The fleet registry over fakeredis (plain commands, no Lua, no blocking: no real server needed)."""

from __future__ import annotations

import fakeredis
import pytest

from common.fleet import Fleet, Silent
from common.keys import Keys


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(fakeredis.FakeRedis(), Keys("gm"))


def test_heartbeat_registers_and_reads_back(fleet: Fleet) -> None:
    """A heartbeat registers the worker with its group and returns settings and its running ids."""
    running = fleet.keys.group("gpu").running("w1")
    fleet.client.rpush(running, "job-1")
    fleet.client.hset(fleet.keys.settings, "retention_s", "120")
    beat = fleet.worker_heartbeat("w1", {"group": "gpu", "pid": 7}, 1000, running_key=running)
    assert (beat.instance.retention_s, beat.running, beat.registered) == (120, ["job-1"], False)
    (info,) = fleet.workers()
    assert (info.worker_id, info.group, info.last_seen_ms, info.fields["pid"]) == ("w1", "gpu", 1000, "7")
    assert fleet.client.sismember(fleet.keys.groups, "gpu")


def test_lease_beats_refresh_the_score_and_say_when_the_worker_was_forgotten(fleet: Fleet) -> None:
    """A lease-only beat is one ZADD; after the scheduler forgot the worker it answers False,
    and the next full beat (with the worker's info) registers it again."""
    info: dict[str, str | int] = {"group": "gpu", "pid": 7}
    assert not fleet.worker_heartbeat("w1", info, 1000, running_key="x").registered
    assert fleet.worker_lease("w1", 2000)
    assert fleet.workers()[0].last_seen_ms == 2000
    assert fleet.worker_heartbeat("w1", {"jobs_done": 3}, 2500, running_key="x").registered
    assert fleet.workers()[0].fields == {"group": "gpu", "pid": "7", "jobs_done": "3"}
    assert fleet.forget_worker("w1", seen_before_ms=3000)
    assert not fleet.worker_lease("w1", 4000)
    fleet.worker_heartbeat("w1", info, 5000, running_key="x")
    (again,) = fleet.workers()
    assert (again.group, again.last_seen_ms) == ("gpu", 5000)


def test_dead_workers_and_schedulers_by_lease(fleet: Fleet) -> None:
    """Workers and schedulers silent for longer than the lease, and the oldest live beat."""
    fleet.worker_heartbeat("old", {"group": "default"}, 1000, running_key="x")
    fleet.worker_heartbeat("fresh", {"group": "default"}, 9000, running_key="x")
    fleet.scheduler_heartbeat("s-old", 1000)
    beat = fleet.scheduler_heartbeat("s-new", 9000)
    assert beat.groups == {"default"}
    assert fleet.silent_workers(9000 - 5000) == Silent(["old"], 9000)
    assert fleet.silent_schedulers(9000 - 5000) == Silent(["s-old"], 9000)
    assert fleet.silent_workers(0) == Silent([], 1000)


def test_forget_worker_spares_one_that_came_back(fleet: Fleet) -> None:
    """A worker presumed dead that heartbeats again before being forgotten is kept."""
    fleet.worker_heartbeat("w", {"group": "default"}, 5000, running_key="x")
    assert not fleet.forget_worker("w", seen_before_ms=4000)
    assert fleet.forget_worker("w", seen_before_ms=6000)
    assert fleet.workers() == []
