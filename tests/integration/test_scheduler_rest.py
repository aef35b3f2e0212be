"""The scheduler at rest reads Redis only when a read can tell something new (issue 9)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from common.fleet import Fleet
from common.settings import Settings
from common.store import Store
from flows.jobs import FLOW_WORKER, FlowJobs
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from scheduler.flows import BLOCK_S, STALE_AFTER_MS, WAKE, Look, next_look
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


def test_a_group_admitted_by_the_inbox_gets_a_promoter_at_the_next_tick(
    store: Store, scripts: ScriptStore, fleet: Fleet
) -> None:
    """Jobs this process queued into a new group: its promoter starts before the next beat."""
    now = [1_000_000]
    scheduler = Scheduler(store=store, admission=Admission(store, scripts,
                                                           Settings(redis_url="redis://unused")),
                          fleet=fleet, lease_s=LEASE_S, clock=lambda: now[0])
    try:
        scheduler.tick()
        assert "gpu" not in scheduler.promoters
        store.enqueue_many([(make_job("gpu", scheduled_for=now[0] + 60_000), True)])
        now[0] += 1_000  # a tick, not a beat
        scheduler.tick()
        assert "gpu" in scheduler.promoters
    finally:
        scheduler.stop()
        for promoter in scheduler.promoters.values():
            promoter.wake()
            promoter.join(10)


def test_a_stopping_scheduler_ends_its_inbox_wait_at_once(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """The inbox blocks 30 s at rest; stop() wakes it: run() returns long before, no record."""
    scheduler = Scheduler(store=store, admission=Admission(store, scripts,
                                                           Settings(redis_url="redis://unused")),
                          fleet=fleet)
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    pause = threading.Event()
    # Nothing signals it: wait until Redis lists the inbox thread as blocked in BLMOVE.
    while not any(c.get("cmd") == "blmove" for c in redis_client.client_list()):
        pause.wait(0.02)
    scheduler.stop()
    thread.join(10)
    assert not thread.is_alive() and scheduler.failed is None
    assert redis_client.llen(store.keys.inbox) == 0
    assert redis_client.llen(store.keys.inbox_processing(scheduler.id)) == 0
    assert not redis_client.keys("gm:{wg:*}:job:*")  # the wake left no record


def test_the_flow_duties_at_rest_block_and_end_at_stop(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """A scheduler with flow duties, one group, no flow: the group's advancer (BLMOVE on its
    flow queue) and canceler (BLPOP on the flow jobs' control list) stay blocked for seconds
    without a command; stop() wakes them, and run() returns long before their 30 s."""
    store.enqueue(make_job(), fresh_id=True)  # the group "default"
    scheduler = Scheduler(store=store, admission=Admission(store, scripts,
                                                           Settings(redis_url="redis://unused")),
                          fleet=fleet, flow_jobs=FlowJobs(store.client, store.keys))
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    pause = threading.Event()

    def idle_waits(cmd: str) -> int:
        """Clients blocked in ``cmd`` that sent nothing for 2 s at least (Redis counts whole
        seconds: 3); a wait repeated every second never gets there."""
        return sum(1 for c in redis_client.client_list()
                   if c.get("cmd") == cmd and int(c.get("idle", 0)) >= 3)

    try:
        # The inbox and the advancer in BLMOVE, the promoter and the canceler in BLPOP.
        deadline = time.monotonic() + 20
        while (idle_waits("blmove") < 2 or idle_waits("blpop") < 2) and time.monotonic() < deadline:
            pause.wait(0.1)
        assert idle_waits("blmove") >= 2 and idle_waits("blpop") >= 2, redis_client.client_list()
        assert scheduler.flows is not None and set(scheduler.flows.threads) == {"default"}
    finally:
        scheduler.stop()
        thread.join(10)
    assert not thread.is_alive() and scheduler.failed is None
    g = store.keys.group("default")
    assert redis_client.llen(g.flow_processing(scheduler.id)) == 0  # the wake taken, released
    for key in (g.flow_queue, g.control(FLOW_WORKER)):  # at most one wake left behind
        assert redis_client.lrange(key, 0, -1) in ([], [WAKE.encode()])
    # Woken again and again (a stop that waits on a busy advancer): still one element a list.
    for _ in range(5):
        scheduler.flows.flows.wake([g.flow_queue, g.control(FLOW_WORKER)], WAKE)
    assert redis_client.lrange(g.flow_queue, 0, -1) == [WAKE.encode()]
    assert redis_client.lrange(g.control(FLOW_WORKER), 0, -1) == [WAKE.encode()]


def test_a_look_at_the_flow_duties_reads_three_commands_and_plans_the_next(
    store: Store, scripts: ScriptStore, fleet: Fleet, redis_client: redis.Redis
) -> None:
    """A look with nothing due: forward's LRANGE and the two heads (earliest timer, oldest
    running flow), nothing fired or swept; the next look is the earlier of the timer's due time
    and the moment the flow can go stale. Once due, the timer fires (its flow is gone here: it is
    dropped) and the flow is swept (no state: it leaves the index), and nothing is left to plan."""
    now = [1_000_000]
    scheduler = Scheduler(store=store, admission=Admission(store, scripts,
                                                           Settings(redis_url="redis://unused")),
                          fleet=fleet, flow_jobs=FlowJobs(store.client, store.keys),
                          clock=lambda: now[0])
    assert scheduler.flows is not None
    g = store.keys.group("default")
    redis_client.zadd(g.flow_timers, {"f1 suspend:a": now[0] + 2_000})
    redis_client.zadd(g.flows_running, {"f2": now[0] - 1_000})
    before = commands(redis_client)
    look = scheduler.flows.look("default")
    assert commands(redis_client) - before == 3
    assert look == Look(now[0], now[0] + 2_000, now[0] - 1_000)
    assert next_look(look) == now[0] + 2_000
    now[0] += 2_000  # the timer is due; the flow not stale yet
    look = scheduler.flows.look("default")
    assert redis_client.zcard(g.flow_timers) == 0 and redis_client.zcard(g.flows_running) == 1
    assert next_look(look) == now[0] - 3_000 + STALE_AFTER_MS
    now[0] += 2_000  # stale
    look = scheduler.flows.look("default")
    assert redis_client.zcard(g.flows_running) == 0
    assert look == Look(now[0], None, None) and next_look(look) == now[0] + int(BLOCK_S * 1000)
