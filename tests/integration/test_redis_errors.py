"""Every background loop outlives every Redis error class, and the fleet goes on afterwards.

Each error class is injected into a server of this test alone: ``maxmemory``
(OOM), the server made a replica of a dead primary (READONLY; MASTERDOWN with
``replica-serve-stale-data no``), ``DEBUG RELOAD`` slowed by ``key-load-delay``
(LOADING), and a Lua script that spins (BUSY).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import structlog

from common import metrics
from common.connection import redis_errors
from common.errors import RedisUnavailable
from common.fleet import Fleet
from common.keys import Keys
from common.models import Status
from common.settings import Settings
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from scheduler.scheduler import Scheduler
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

WAIT_FOR_RELEASE = """
import os, time
def main(flag: str, release: str):
    open(flag, "w").close()
    while not os.path.exists(release):
        time.sleep(0.01)
    return 42
"""
SLEEPER = "def main():\n    import time\n    time.sleep(60)\n"


class DebugRedis(EmbeddedRedis):
    """The fixture's server, with DEBUG allowed (for DEBUG RELOAD)."""

    def command(self) -> list[str]:
        return [*super().command(), "--enable-debug-command", "yes"]


@pytest.fixture
def own_server(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    """A server of this test alone (same binary as the session's): it is made to fail."""
    server = DebugRedis(tmp_path / "redis", port=free_port(), binary=redis_server.binary)
    server.start()
    yield server
    server.stop()


@dataclass
class Fault:
    """Puts a server in one failing state and takes it out again."""

    name: str
    inject: Callable[[redis.Redis], None]
    heal: Callable[[redis.Redis], None]


def _oom(client: redis.Redis) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)


def _replica(stale: str) -> Callable[[redis.Redis], None]:
    def inject(client: redis.Redis) -> None:
        client.config_set("replica-serve-stale-data", stale)
        client.replicaof("127.0.0.1", free_port())  # a primary that never answers

    return inject


def _primary(client: redis.Redis) -> None:
    client.replicaof("NO", "ONE")
    client.config_set("replica-serve-stale-data", "yes")


class Loading:
    """DEBUG RELOAD of ~3,000 keys at 0.5 ms each: LOADING for about 1.5 s."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def inject(self, client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"ballast:{i}", "x" * 1024)
        pipe.execute()
        client.config_set("loading-process-events-interval-bytes", 1024)
        client.config_set("key-load-delay", 500)
        kwargs = client.connection_pool.connection_kwargs
        reloader = redis.Redis(host=kwargs["host"], port=kwargs["port"], socket_timeout=60)
        self.thread = threading.Thread(target=reloader.execute_command, args=("DEBUG", "RELOAD"))
        self.thread.start()
        while True:  # wait until the server says LOADING
            try:
                client.ping()
            except redis.exceptions.BusyLoadingError:
                return

    def heal(self, client: redis.Redis) -> None:
        assert self.thread is not None
        self.thread.join(60)
        client.config_set("key-load-delay", 0)


class Busy:
    """A Lua script that spins until SCRIPT KILL: BUSY for everyone else."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def inject(self, client: redis.Redis) -> None:
        client.config_set("busy-reply-threshold", 20)
        kwargs = client.connection_pool.connection_kwargs
        spinner = redis.Redis(host=kwargs["host"], port=kwargs["port"])

        def spin() -> None:
            with contextlib.suppress(redis.exceptions.ResponseError):  # SCRIPT KILL ends it
                spinner.eval("while true do end", 0)

        self.thread = threading.Thread(target=spin)
        self.thread.start()
        while True:  # wait until the server says BUSY
            try:
                client.ping()
            except redis.exceptions.ResponseError as exc:
                if "BUSY" in str(exc):
                    return

    def heal(self, client: redis.Redis) -> None:
        while True:
            try:
                client.script_kill()
                break
            except redis.exceptions.ResponseError as exc:
                if "NOTBUSY" in str(exc):
                    break
        assert self.thread is not None
        self.thread.join(10)


def faults() -> list[Fault]:
    loading, busy = Loading(), Busy()
    return [
        Fault("OOM", _oom, lambda c: c.config_set("maxmemory", 0)),
        Fault("READONLY", _replica("yes"), _primary),
        Fault("MASTERDOWN", _replica("no"), _primary),
        Fault("LOADING", loading.inject, loading.heal),
        Fault("BUSY", busy.inject, busy.heal),
    ]


FAULTS = {fault.name: fault for fault in faults()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", FAULTS)
def test_each_error_class_is_a_passing_outage(name: str, own_server: EmbeddedRedis) -> None:
    """Under the fault a write is RedisUnavailable (retried by loops), not a crash."""
    client = redis.Redis.from_url(own_server.url, socket_timeout=10)
    fault = FAULTS[name]

    @redis_errors
    def write() -> None:
        client.rpush("probe", "x")
        client.get("probe:read")

    fault.inject(client)
    try:
        with pytest.raises(RedisUnavailable):
            write()
    finally:
        fault.heal(client)
    write()


def errors(process: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "gristmill_redis_errors_total", {"process": process}) or 0.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    """Wait on a condition that nothing can signal (counters, scores in Redis)."""
    deadline = time.monotonic() + timeout_s
    done = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        done.wait(0.02)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", FAULTS)
def test_the_fleet_outlives_the_error_class(name: str, own_server: EmbeddedRedis,
                                            job_share: Path, sharing_sandbox: Sandbox) -> None:
    """Heartbeat, control, inbox, tick, promoter and the runner's write all survive the fault.

    A job finishes during the fault (its outcome is written after it); afterwards
    an inbox spec is admitted and run, a future job is promoted, a running job is
    canceled, both heartbeats go on, and each loop logged one line per episode.
    """
    client = redis.Redis.from_url(own_server.url, socket_timeout=10)
    keys = Keys("gm")
    store, scripts, fleet = Store(client, keys), ScriptStore(client, keys), Fleet(client, keys)
    settings = Settings(redis_url=own_server.url, heartbeat_s=0.2)
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                    concurrency=2, claim_block_s=0.5, sandbox=sharing_sandbox)
    # Renewing its lease every tick, the scheduler meets even a short fault (at rest it
    # reads Redis only every third of the lease).
    scheduler = Scheduler(store=store, admission=Admission(store, scripts, settings), fleet=fleet,
                          heartbeat_s=0.2, renew_s=0.2)
    threads = [threading.Thread(target=p.run, daemon=True) for p in (worker, scheduler)]
    fault = FAULTS[name]
    flag, release = job_share / "flag", job_share / "release"
    job = make_job(code=WAIT_FOR_RELEASE, args={"flag": str(flag), "release": str(release)})
    store.enqueue(job, fresh_id=True)
    with structlog.testing.capture_logs() as events:
        for thread in threads:
            thread.start()
        try:
            wait_until(flag.exists, "the job to start")
            before = {p: errors(p) for p in ("worker", "scheduler")}
            fault.inject(client)
            try:
                release.touch()  # the job finishes while Redis refuses
                wait_until(lambda: all(errors(p) >= before[p] + 2 for p in before),
                           "both processes to meet the fault")
            finally:
                fault.heal(client)
            healed_ms = store.clock()
            assert store.wait(job.id, 30).result == 42

            spec_id = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
            client.lpush(keys.inbox, json.dumps({"id": spec_id, "code": "def main():\n  return 7\n",
                                                 "language": "python3"}))
            later = make_job(scheduled_for=store.clock() + 300)
            store.enqueue(later, fresh_id=True)
            assert store.wait(spec_id, 30).result == 7
            assert store.wait(later.id, 30).status == Status.SUCCESS
            sleeper = make_job(code=SLEEPER)
            store.enqueue(sleeper, fresh_id=True)
            wait_until(lambda: store.get_job(sleeper.id).status == Status.RUNNING, "the sleeper")
            store.cancel(sleeper.id, by="u/admin", reason="test", retention_s=3600)
            assert store.wait(sleeper.id, 30).status == Status.CANCELED
            wait_until(lambda: (client.zscore(keys.workers, worker.worker_id) or 0) > healed_ms
                       and (client.zscore(keys.schedulers, scheduler.id) or 0) > healed_ms,
                       "heartbeats after the fault")
            assert (worker.failed, scheduler.failed) == (None, None)
        finally:
            worker.stop()
            scheduler.stop()
            for thread in threads:
                thread.join(30)
            client.close()
    started = [e for e in events if e["event"] == "redis unavailable; retrying with backoff"]
    ended = [e for e in events if e["event"] == "redis available again"]
    assert started, "the fault was never logged"
    for loop in {e["loop"] for e in started}:
        episodes = [e for e in started if e["loop"] == loop]
        assert len(episodes) <= len([e for e in ended if e["loop"] == loop]) + 1, episodes


@pytest.mark.timeout(60)
def test_a_worker_whose_heartbeat_dies_stops_and_reports_it(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox,
) -> None:
    """A bug in a vital loop stops the worker (exit code 1 in `gristmill worker`), no zombie."""
    worker = Worker(store=store, scripts=scripts, fleet=fleet,
                    settings=settings.model_copy(update={"heartbeat_s": 0.05}), claim_block_s=0.2,
                    sandbox=sandbox)
    beats = iter(range(3))

    def beat(*args: object, **kwargs: object) -> object:
        if next(beats, None) is None:
            raise RuntimeError("a bug in the heartbeat")
        return Fleet.worker_heartbeat(fleet, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fleet, "worker_heartbeat", beat)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and worker.failed == "_heartbeat_loop"


@pytest.mark.timeout(60)
def test_a_scheduler_whose_promoter_dies_stops_and_reports_it(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox,
) -> None:
    """A bug in a promoter (or the inbox) stops the scheduler instead of leaving it half alive."""
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug in promote")

    monkeypatch.setattr(store, "promote", broken)
    store.enqueue(make_job(), fresh_id=True)  # a group, so a promoter starts
    scheduler = Scheduler(store=store, admission=Admission(store, scripts, settings), fleet=fleet,
                          heartbeat_s=0.05)
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and scheduler.failed == "promote-default"
