"""An idle fleet raises no Redis errors: blocking waits stay shorter than the socket timeout."""

from __future__ import annotations

import threading

import pytest

from common import metrics
from common.connection import connect
from common.fleet import Fleet
from common.keys import Keys
from common.settings import Settings
from common.store import Store
from gristmill.embedded import EmbeddedRedis
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from scheduler.scheduler import Scheduler
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

SOCKET_TIMEOUT_S = 0.5
IDLE_S = 3.0  # six socket timeouts; the promoter's idle block (30 s) and the claim block exceed it


def errors() -> float:
    return sum(metrics.REGISTRY.get_sample_value("gristmill_redis_errors_total", {"process": p})
               or 0.0 for p in ("worker", "scheduler"))


@pytest.mark.timeout(60)
def test_an_idle_fleet_raises_no_redis_errors(redis_server: EmbeddedRedis, sandbox: Sandbox) -> None:
    """Scheduler, promoter, inbox, claim and control loops idle for a while: no error counted."""
    client = connect(redis_server.url, socket_timeout=SOCKET_TIMEOUT_S)
    client.flushdb()
    keys = Keys("gm")
    store, scripts, fleet = Store(client, keys), ScriptStore(client, keys), Fleet(client, keys)
    settings = Settings(redis_url=redis_server.url, redis_socket_timeout_s=SOCKET_TIMEOUT_S)
    job = make_job()
    store.enqueue(job, fresh_id=True)  # a group, so a promoter starts
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings, claim_block_s=2.0,
                    sandbox=sandbox)
    scheduler = Scheduler(store=store, admission=Admission(store, scripts, settings), fleet=fleet)
    threads = [threading.Thread(target=p.run, daemon=True) for p in (worker, scheduler)]
    for thread in threads:
        thread.start()
    try:
        store.wait(job.id, 30)
        before = errors()
        threading.Event().wait(IDLE_S)  # the idle period is what is tested
        assert errors() == before
        assert (worker.failed, scheduler.failed) == (None, None)
    finally:
        worker.stop()
        scheduler.stop()
        for thread in threads:
            thread.join(30)
        client.close()
