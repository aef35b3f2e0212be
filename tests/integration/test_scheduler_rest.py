"""The scheduler at rest reads Redis only when a read can tell something new (issue 9)."""

from __future__ import annotations

import pytest
import redis

from common.fleet import Fleet
from common.settings import Settings
from common.store import Store
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from scheduler.scheduler import Scheduler
from tests.integration.helpers import make_job

pytestmark = pytest.mark.timeout(60)

LEASE_S = 9


def commands(client: redis.Redis) -> int:
    """Commands the server executed so far (INFO commandstats; scripts' inner ones too)."""
    stats = client.info("commandstats")
    return sum(int(row["calls"]) for name, row in stats.items() if name != "cmdstat_info")


def test_ticks_between_renewals_issue_no_command(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """A tick renews the lease every third of it and looks for the dead when one can expire;
    the ticks in between send Redis nothing."""
    now = [1_000_000]
    store.enqueue(make_job(), fresh_id=True)  # a group
    fleet.worker_heartbeat("w1", {"group": "default"}, now[0],
                           running_key=store.keys.group("default").running("w1"))
    scheduler = Scheduler(store=store, admission=Admission(store, scripts,
                                                           Settings(redis_url="redis://unused")),
                          fleet=fleet, lease_s=LEASE_S, clock=lambda: now[0])
    scheduler.tick()  # the first: lease, settings, groups, schedules, and a look at the dead
    try:
        assert redis_client.zscore(store.keys.schedulers, scheduler.id) == now[0]
        for _ in range(2):  # up to the next renewal (a third of the lease): nothing
            now[0] += 1_000
            before = commands(redis_client)
            scheduler.tick()
            assert commands(redis_client) == before
        now[0] += 1_000  # a third of the lease: the renewal's one round trip of four commands
        before = commands(redis_client)
        scheduler.tick()
        assert commands(redis_client) - before == 4
        assert redis_client.zscore(store.keys.schedulers, scheduler.id) == now[0]
        # A lease after the first look, the worker's and the scheduler's leases can have
        # expired: a renewal, and one look at each (the worker beat meanwhile: not dead).
        now[0] = 1_000_000 + LEASE_S * 1000
        fleet.worker_heartbeat("w1", {"group": "default"}, now[0] - 1,
                               running_key=store.keys.group("default").running("w1"))
        before = commands(redis_client)
        scheduler.tick()
        assert commands(redis_client) - before == 4 + 1 + 1
        assert redis_client.zscore(store.keys.workers, "w1") == now[0] - 1
    finally:
        scheduler.stop()
