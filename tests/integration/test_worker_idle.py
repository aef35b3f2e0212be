"""An idle worker blocks long and beats cheaply, yet stops at once and stays registered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from common.connection import connect, is_cluster
from common.errors import RedisUnavailable
from common.fleet import Fleet
from common.keys import Keys
from common.settings import Settings
from common.store import Blocker, Store
from jobs.scripts import ScriptStore
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def blocked_clients(client: redis.Redis, key: str) -> int:
    """Clients blocked on the node that serves ``key``."""
    node = client.get_node_from_key(key).redis_connection if is_cluster(client) else client
    return int(node.info("clients")["blocked_clients"])


@pytest.fixture
def unbounded(settings: Settings, redis_client: redis.Redis) -> Iterator[Store]:
    """A store whose connections have no socket timeout: blocks last as long as asked (on
    the test's emptied database: ``redis_client`` empties it)."""
    client = connect(settings.redis_url, socket_timeout=None)
    yield Store(client, Keys("gm"))
    client.close()


def test_interrupt_ends_a_long_blocking_claim_at_once(unbounded: Store) -> None:
    """A BLMOVE that would block for a minute answers None as soon as it is interrupted."""
    store = unbounded
    blocker = store.blocker("default")
    answers: list[str | None] = []
    thread = threading.Thread(
        target=lambda: answers.append(store.claim("default", "w1", 60, blocker)), daemon=True)
    thread.start()
    ready = store.keys.group("default").ready
    wait_for(lambda: blocked_clients(store.client, ready) == 1)
    blocker.interrupt()
    thread.join(10)
    assert not thread.is_alive() and answers == [None]
    assert store.claim("default", "w1", 60, blocker) is None  # interrupted for good
    blocker.close()


def test_a_worker_blocked_for_a_minute_stops_at_once(
    unbounded: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, sandbox: Sandbox,
) -> None:
    """Claim and control wait 60 s each (no socket timeout here); stop() still ends the worker
    within seconds, and it deregisters."""
    store = unbounded
    assert store.block_s(60) == 60
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                    claim_block_s=60, sandbox=sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    ready = store.keys.group("default").ready
    wait_for(lambda: blocked_clients(store.client, ready) == 2)  # claim and control
    worker.stop()
    thread.join(10)
    assert not thread.is_alive() and worker.failed is None
    assert fleet.workers() == []


def test_a_forgotten_worker_registers_again_with_its_hash(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, sandbox: Sandbox,
) -> None:
    """Lease-only beats notice that the scheduler forgot the worker (presumed dead): the
    next beat writes its whole hash again, so it is listed with its group."""
    worker = Worker(store=store, scripts=scripts, fleet=fleet, claim_block_s=60, sandbox=sandbox,
                    settings=settings.model_copy(update={"heartbeat_s": 0.05}))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(fleet.workers()) == 1)
        fleet.worker_gone(worker.worker_id)
        wait_for(lambda: [(w.worker_id, w.group) for w in fleet.workers()]
                 == [(worker.worker_id, "default")])
        assert fleet.workers()[0].fields["concurrency"] == "1"
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_an_interrupt_before_redis_parks_the_call_still_ends_it(unbounded: Store) -> None:
    """interrupt() lands after the Blocker told its id but before Redis blocked the call (an
    UNBLOCK then finds nothing to unblock): it tries again, and the 30 s call ends at once."""
    blocker = Blocker(unbounded.client, "gm:test:nothing")
    told_id = threading.Event()
    conn = blocker._connection()
    real = conn.execute_command

    def late(*args: object, **options: object) -> object:
        if args[0] == "BLPOP":  # its id told (CLIENT ID went through), the call not yet sent
            told_id.set()
            time.sleep(0.2)  # the window between CLIENT ID and the parked BLPOP, made wide
        return real(*args, **options)

    conn.execute_command = late  # type: ignore[method-assign]
    answers: list[object] = []
    thread = threading.Thread(target=lambda: answers.append(
        blocker.call("BLPOP", "gm:test:nothing", 30)), daemon=True)
    started = time.monotonic()
    thread.start()
    assert told_id.wait(10)
    blocker.interrupt()
    thread.join(10)
    assert not thread.is_alive() and answers == [None]
    assert time.monotonic() - started < 5  # not the call's 30 s
    blocker.close()


def test_a_moved_answer_to_a_blocking_call_is_an_outage_waited_out(
    redis_client: redis.Redis,
) -> None:
    """On a cluster, a blocking call answered MOVED (its slot has a new node) raises
    RedisUnavailable, which the worker's loops wait out, not an error that stops them; the
    slot map is read again. A Blocker routed by one key and called on a key of another
    node's slot gets that answer."""
    if not is_cluster(redis_client):
        pytest.skip("about a cluster")
    route = "gm:{a}:x"
    other = next(key for key in (f"gm:{{{i}}}:x" for i in range(100))
                 if redis_client.get_node_from_key(key) != redis_client.get_node_from_key(route))
    blocker = Blocker(redis_client, route)
    try:
        with pytest.raises(RedisUnavailable, match="slot moved"):
            blocker.call("BLPOP", other, 0.01)
        with pytest.raises(RedisUnavailable, match="slot moved"):
            blocker.calls([("BLPOP", other, 0.01), ("PING",)])
        assert blocker.call("BLPOP", route, 0.01) is None  # the blocker still works
    finally:
        blocker.close()
