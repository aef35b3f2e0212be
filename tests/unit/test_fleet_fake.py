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
    settings, ids = fleet.worker_heartbeat("w1", {"group": "gpu", "pid": 7}, 1000,
                                           running_key=running)
    assert (settings.retention_s, ids) == (120, ["job-1"])
    (info,) = fleet.workers()
    assert (info.worker_id, info.group, info.last_seen_ms, info.fields["pid"]) == ("w1", "gpu", 1000, "7")
    assert fleet.client.sismember(fleet.keys.groups, "gpu")


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
